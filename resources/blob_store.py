"""Blob store for binary data (videos, frames, crops, HDF5, plots): a local directory by default, S3 when configured.

Keys are relative POSIX paths built from ids and slugs (``frames/yt-abc/s1a2b3c4d5e6f/0000030.jpg``), never
from untrusted text; every key is checked so that nothing can be written outside the store's root or prefix.
Listings stream (``list_entries``) with each blob's last-modified time and size, for garbage collection.

A key that is not there raises ``BlobNotFound`` (the item whose file it is has lost it); any other failure of the
store (an S3 503, a refused connection, a full or read-only disk) raises ``StoreUnavailable``, which fails the step
rather than any item (``resources.faults``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from resources.faults import StoreUnavailable
from resources.secrets import without_credentials

_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_key(key: str) -> str:
    """Return the key if it is a safe relative path, else raise ValueError.

    Safe: non-empty parts of letters, digits, ``.``, ``_`` and ``-`` that start with a letter or digit, so no
    part can be ``..``, hidden, absolute, or carry quotes, spaces or markup.
    """
    parts = key.split("/") if isinstance(key, str) else []
    if not parts or not all(_KEY_PART.match(part) for part in parts):
        raise ValueError(f"unsafe blob key: {key!r}")
    return key


def _folder(prefix: str) -> str:
    """A folder-like prefix as a checked key, with or without its trailing slash (``frames/`` -> ``frames``)."""
    return check_key(prefix.rstrip("/") if isinstance(prefix, str) else prefix)


class BlobNotFound(FileNotFoundError):
    """No blob under the key: the item it belongs to has lost its file (not a fault of the store)."""


_MISSING_CODES = ("404", "NoSuchKey", "NotFound")


@contextlib.contextmanager
def local_faults(what: str, key: str) -> Iterator[None]:
    """Local-disk errors as the store's: a missing file is ``BlobNotFound``, any other OS error ``StoreUnavailable``."""
    try:
        yield
    except BlobNotFound:
        raise
    except FileNotFoundError:
        raise BlobNotFound(f"no blob at {key!r}") from None
    except OSError as error:
        reason = errno.errorcode.get(error.errno or 0, type(error).__name__)
        raise StoreUnavailable(f"blob store: {what} {key!r} failed: {reason} {error.strerror or error}") from None


@contextlib.contextmanager
def s3_faults(what: str, location: str) -> Iterator[None]:
    """S3 errors as the store's: a missing key is ``BlobNotFound``, anything else (a 503, a timeout, a refused
    connection, a cut-off transfer, a full temporary disk) ``StoreUnavailable``; never a credential in the text."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as error:
        details = error.response.get("Error", {})
        code = str(details.get("Code", ""))
        if code in _MISSING_CODES:
            raise BlobNotFound(f"no blob at {location}") from None
        message = without_credentials(str(details.get("Message") or error))
        raise StoreUnavailable(f"blob store: {what} {location} failed: {code} {message}".rstrip()) from None
    except (BotoCoreError, Boto3Error, OSError) as error:
        message = without_credentials(str(error))
        raise StoreUnavailable(f"blob store: {what} {location} failed: {type(error).__name__}: {message}") from None


class BlobEntry(NamedTuple):
    """One stored blob as a listing sees it."""

    key: str
    modified: datetime  # last write, in UTC (a local file's mtime, an S3 object's LastModified)
    size: int  # bytes


class BlobDeleteError(RuntimeError):
    """Some keys of a delete were not removed; the others were.

    Attributes:
        deleted: How many objects the call did remove.
        failures: ``(key, code, message)`` for each key that is still there (S3's ``Errors``, an OS error's name).
    """

    def __init__(self, deleted: int, failures: list[tuple[str, str, str]], asked: int):
        self.deleted = deleted
        self.failures = failures
        first = "; ".join(f"{key}: {code} {message}".rstrip() for key, code, message in failures[:3])
        super().__init__(f"{len(failures)} of {asked} blob(s) could not be deleted ({deleted} deleted); first: {first}")


class BlobStore(dg.ConfigurableResource):
    """Where binary outputs live. Subclasses: LocalBlobStore, S3BlobStore."""

    def uri(self, key: str) -> str:
        raise NotImplementedError

    def put_bytes(self, key: str, data: bytes) -> str:
        """Store data under key (replacing what was there) and return its URI."""
        raise NotImplementedError

    def put_file(self, key: str, path: str | os.PathLike) -> str:
        """Store a local file under key (replacing what was there) and return its URI."""
        raise NotImplementedError

    def get_bytes(self, key: str) -> bytes:
        """The blob's bytes.

        Raises:
            BlobNotFound: nothing is stored under the key.
            StoreUnavailable: the store failed (every method raises it for the store's own failures).
        """
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def list_entries(self, prefix: str) -> Iterator[BlobEntry]:
        """Every blob under a folder-like prefix (``frames`` or ``frames/``), streamed in no guaranteed order: the
        whole listing is never held at once. Keys are returned as stored, even ones ``check_key`` would refuse."""
        raise NotImplementedError

    def list_keys(self, prefix: str) -> list[str]:
        """All keys under a folder-like prefix (``frames/yt-abc``), sorted."""
        return sorted(entry.key for entry in self.list_entries(prefix))

    def delete(self, keys: Iterable[str]) -> int:
        """Delete the given keys and return how many objects were removed.

        Every key is checked before anything is deleted. A local file that is already missing is not counted; S3
        answers a missing key as deleted, so there a key that vanished since the caller listed it counts too.

        Raises:
            BlobDeleteError: after deleting every key it could, naming those still there (never counted).
        """
        raise NotImplementedError

    def local_path(self, key: str) -> contextlib.AbstractContextManager[Path]:
        """A local file holding the blob for the duration of the block (a temporary download for remote stores)."""
        raise NotImplementedError


class LocalBlobStore(BlobStore):
    """Blobs as files under a root directory (the embedded default)."""

    root: str = "data/blobs"

    def path_for(self, key: str) -> Path:
        """The file that holds (or will hold) a key; raises ValueError for a key that is unsafe or escapes the root."""
        root = Path(self.root).resolve()
        path = (root / check_key(key)).resolve()
        if root not in path.parents:
            raise ValueError(f"blob key escapes the store root: {key!r}")
        return path

    def uri(self, key: str) -> str:
        return self.path_for(key).as_uri()

    def _write(self, key: str, writer) -> str:
        path = self.path_for(key)
        with local_faults("write", key):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as out:
                    writer(out)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        return path.as_uri()

    def put_bytes(self, key: str, data: bytes) -> str:
        return self._write(key, lambda out: out.write(data))

    def put_file(self, key: str, path: str | os.PathLike) -> str:
        def copy(out):
            with open(path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)

        return self._write(key, copy)

    def get_bytes(self, key: str) -> bytes:
        path = self.path_for(key)
        with local_faults("read", key):
            return path.read_bytes()

    def exists(self, key: str) -> bool:
        path = self.path_for(key)
        with local_faults("look up", key):
            return path.is_file()

    def list_entries(self, prefix: str) -> Iterator[BlobEntry]:
        root = Path(self.root).resolve()
        folders = [self.path_for(_folder(prefix))]
        while folders:  # one directory's entries in memory at a time; links are never followed
            try:
                with os.scandir(folders.pop()) as found:
                    entries = list(found)
            except (FileNotFoundError, NotADirectoryError):
                continue  # not there, or removed while listing
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False) and not entry.name.startswith(".tmp-"):  # writes under way
                    try:
                        stat = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    key = Path(entry.path).relative_to(root).as_posix()
                    yield BlobEntry(key, datetime.fromtimestamp(stat.st_mtime, UTC), stat.st_size)

    def delete(self, keys: Iterable[str]) -> int:
        paths = {key: self.path_for(key) for key in keys}
        deleted, failures = 0, []
        for key, path in paths.items():
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as error:
                failures.append(
                    (key, errno.errorcode.get(error.errno or 0, type(error).__name__), error.strerror or "")
                )
                continue
            deleted += 1
        if failures:
            raise BlobDeleteError(deleted, failures, len(paths))
        return deleted

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        if not self.exists(key):
            raise BlobNotFound(f"no blob at {key!r}")
        yield self.path_for(key)


class S3BlobStore(BlobStore):
    """Blobs as objects under ``s3://bucket/prefix/`` through dagster-aws's S3Resource."""

    bucket: str
    prefix: str = "mining"
    s3: S3Resource

    _client = PrivateAttr(default=None)

    def _key(self, key: str) -> str:
        check_key(key)
        prefix = self.prefix.strip("/")
        return f"{prefix}/{key}" if prefix else key

    def _get_client(self):
        if self._client is None:
            self._client = self.s3.get_client()
        return self._client

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def put_bytes(self, key: str, data: bytes) -> str:
        with s3_faults("write", self.uri(key)):
            self._get_client().put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        return self.uri(key)

    def put_file(self, key: str, path: str | os.PathLike) -> str:
        with s3_faults("upload", self.uri(key)):
            self._get_client().upload_file(str(path), self.bucket, self._key(key))
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        with s3_faults("read", self.uri(key)):  # a body cut off while read is the store's failure too
            return self._get_client().get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            with s3_faults("look up", self.uri(key)):
                self._get_client().head_object(Bucket=self.bucket, Key=self._key(key))
        except BlobNotFound:
            return False
        return True

    def _strip(self) -> int:
        """How many characters of a full object key are the store's prefix."""
        return len(self._key("x")) - 1

    def list_entries(self, prefix: str) -> Iterator[BlobEntry]:
        full = self._key(_folder(prefix)) + "/"
        strip = self._strip()
        paginator = self._get_client().get_paginator("list_objects_v2")
        pages = iter(paginator.paginate(Bucket=self.bucket, Prefix=full))  # one page (1,000 keys) at a time
        while True:
            with s3_faults("list", f"s3://{self.bucket}/{full}"):
                page = next(pages, None)
            if page is None:
                return
            for obj in page.get("Contents", []):
                yield BlobEntry(obj["Key"][strip:], obj["LastModified"].astimezone(UTC), int(obj["Size"]))

    def delete(self, keys: Iterable[str]) -> int:
        from botocore.exceptions import ClientError

        full = list(dict.fromkeys(self._key(key) for key in keys))
        strip = self._strip()
        deleted, failures = 0, []
        for start in range(0, len(full), 1000):  # DeleteObjects takes at most 1,000 keys
            batch = full[start : start + 1000]
            # a store that can't be reached fails the call (StoreUnavailable); one that answers is read key by key
            with s3_faults("delete from", f"s3://{self.bucket}"):
                try:
                    reply = self._get_client().delete_objects(
                        Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
                    )
                except ClientError as error:  # the whole request refused: none of this batch is gone; try the next
                    code = error.response.get("Error", {}).get("Code", "ClientError")
                    message = without_credentials(error.response.get("Error", {}).get("Message", str(error)))
                    failures += [(key[strip:], code, message) for key in batch]
                    continue
            # Quiet: S3 lists only the keys it could not delete, each with its own code
            errors = reply.get("Errors", [])
            failed = {error["Key"] for error in errors}
            deleted += sum(1 for key in batch if key not in failed)
            failures += [(e["Key"][strip:], e.get("Code", "?"), e.get("Message", "")) for e in errors]
        if failures:
            raise BlobDeleteError(deleted, failures, len(full))
        return deleted

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        suffix = Path(key).suffix
        with tempfile.TemporaryDirectory(prefix="blob-") as tmp:
            target = Path(tmp) / f"blob{suffix}"
            with s3_faults("download", self.uri(key)):
                self._get_client().download_file(self.bucket, self._key(key), str(target))
            yield target
