"""Blob store for binary data (videos, frames, crops, HDF5, plots): a local directory by default, S3 when configured.

Keys are relative POSIX paths built from ids and slugs (``frames/glass-door/youtube-abc/0000030.jpg``), never
from untrusted text; every key is checked so that nothing can be written outside the store's root or prefix.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

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
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def list_keys(self, prefix: str) -> list[str]:
        """All keys under a folder-like prefix (``frames/glass-door``), sorted."""
        raise NotImplementedError

    def delete(self, keys: Iterable[str]) -> int:
        """Delete the given keys; missing ones are ignored. Returns how many were asked for."""
        raise NotImplementedError

    def local_path(self, key: str) -> contextlib.AbstractContextManager[Path]:
        """A local file holding the blob for the duration of the block (a temporary download for remote stores)."""
        raise NotImplementedError


class LocalBlobStore(BlobStore):
    """Blobs as files under a root directory (the embedded default)."""

    root: str = "data/blobs"

    def _path(self, key: str) -> Path:
        root = Path(self.root).resolve()
        path = (root / check_key(key)).resolve()
        if root not in path.parents:
            raise ValueError(f"blob key escapes the store root: {key!r}")
        return path

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def _write(self, key: str, writer) -> str:
        path = self._path(key)
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
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        root = Path(self.root).resolve()
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")
        )

    def delete(self, keys: Iterable[str]) -> int:
        count = 0
        for key in keys:
            count += 1
            with contextlib.suppress(FileNotFoundError):
                self._path(key).unlink()
        return count

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no blob at {key!r}")
        yield path


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
        self._get_client().put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        return self.uri(key)

    def put_file(self, key: str, path: str | os.PathLike) -> str:
        self._get_client().upload_file(str(path), self.bucket, self._key(key))
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        return self._get_client().get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._get_client().head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def list_keys(self, prefix: str) -> list[str]:
        full = self._key(prefix).rstrip("/") + "/"
        strip = len(self._key("x")) - 1
        paginator = self._get_client().get_paginator("list_objects_v2")
        keys = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete(self, keys: Iterable[str]) -> int:
        full = [self._key(key) for key in keys]
        for start in range(0, len(full), 1000):
            batch = [{"Key": key} for key in full[start : start + 1000]]
            self._get_client().delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(full)

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        suffix = Path(key).suffix
        with tempfile.TemporaryDirectory(prefix="blob-") as tmp:
            target = Path(tmp) / f"blob{suffix}"
            self._get_client().download_file(self.bucket, self._key(key), str(target))
            yield target
