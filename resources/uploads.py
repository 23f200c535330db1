"""UploadBucket: photos and videos people upload to an S3 bucket, one folder per keyword.

Layout: ``s3://<bucket>/<prefix>/<keyword as typed>/<any name>``. The folder name is untrusted text: it becomes
a keyword (whose slug is the partition key) and is never used to build a storage path. An object's name says
nothing about what it holds: the content decides whether it is a photo, a video or neither.

Listings go page by page (``page_size`` keys a request), so no caller ever holds a whole bucket's listing.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from resources.secrets import without_credentials

# the user-info of a URL (``http://user:secret@host``): botocore quotes the endpoint URL in its connection errors


class UploadError(Exception):
    """An upload that can't be read from the bucket; the message is the reason recorded for it."""


class UploadMissing(UploadError):
    """The object is not in the bucket (deleted since it was listed, or never there)."""


@dataclass(frozen=True)
class UploadedObject:
    key: str
    size: int
    etag: str
    last_modified: datetime


def readable_text(text: str | bytes) -> str:
    """Text as valid UTF-8: undecodable bytes (or the surrogates that stand for them) become U+FFFD."""
    if isinstance(text, bytes):
        return text.decode("utf-8", errors="replace")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", errors="surrogateescape")
        except UnicodeEncodeError:
            raw = text.encode("utf-8", errors="surrogatepass")
        return raw.decode("utf-8", errors="replace")
    return text


def failure_reason(error: BaseException) -> str:
    """What went wrong reading from the bucket, in words: a cut-off or timed-out read says so; boto3's "Max Retries
    Exceeded" is replaced by the failure it gave up on."""
    from boto3.exceptions import RetriesExceededError
    from botocore.exceptions import EndpointConnectionError, IncompleteReadError, ReadTimeoutError
    from botocore.exceptions import ResponseStreamingError as StreamingError

    if isinstance(error, RetriesExceededError):
        last = error.last_exception
        return f"{failure_reason(last) if last is not None else 'failed'} (given up after retries)"
    if isinstance(error, IncompleteReadError | StreamingError):
        return f"cut off before the end: {error}"
    if isinstance(error, ReadTimeoutError):
        return f"timed out: {error}"
    if isinstance(error, EndpointConnectionError):
        return f"bucket unreachable: {error}"
    return str(error) or type(error).__name__


def as_object(entry: dict) -> UploadedObject:
    """An entry of a ``list_objects_v2`` page (or a ``head_object`` answer with its ``Key``) as an UploadedObject."""
    return UploadedObject(
        key=entry["Key"],
        size=int(entry.get("Size", entry.get("ContentLength", 0))),
        etag=str(entry.get("ETag", "")).strip('"'),
        last_modified=entry["LastModified"],
    )


class UploadBucket(dg.ConfigurableResource):
    """The bucket people upload media to, read through dagster-aws's S3Resource.

    Unconfigured (``bucket`` unset, see ``unconfigured()``) for local-only use: nothing is listed, and an asset
    that is asked for S3 keys records why they were skipped.

    Attributes:
        page_size: Keys asked of S3 per listing request (S3 answers at most 1000): what a listing holds at once.
        max_pending: The most objects ``s3_uploads_sensor`` keeps requested but not registered yet; it requests no
            more until runs register them, so its cursor stays small.
        pending_timeout_seconds: How long the sensor waits for a requested object to be registered before it asks
            for it again (the run failed before registering it, or was lost).
    """

    bucket: str | None = None
    prefix: str = "uploads"
    s3: S3Resource
    page_size: int = 1000
    max_pending: int = 1000
    pending_timeout_seconds: float = 24 * 3600.0

    _client = PrivateAttr(default=None)

    @classmethod
    def unconfigured(cls) -> UploadBucket:
        """A bucket-less resource, for deployments that only ingest local folders."""
        return cls(bucket=None, s3=S3Resource())

    @property
    def configured(self) -> bool:
        return bool(self.bucket)

    @property
    def root(self) -> str:
        """The listing prefix: ``uploads/`` (empty when the folders sit at the bucket's top level)."""
        prefix = self.prefix.strip("/")
        return f"{prefix}/" if prefix else ""

    def _get_client(self):
        if not self.configured:
            raise UploadError("no upload bucket configured")
        if self._client is None:
            self._client = self.s3.get_client()
        return self._client

    def location(self, key: str) -> str:
        """``s3://bucket/key``: where an object was found, for the record (never a storage path)."""
        return f"s3://{self.bucket}/{key}"

    def failure(self, what: str, error: BaseException) -> tuple[UploadError, BaseException | None]:
        """The UploadError ``<what>: <reason>`` for an error of S3, and the error to chain to it.

        Credentials in the endpoint URL are scrubbed from the reason; the original error is chained only when the
        endpoint URL holds none, since Dagster shows a chained error's text too.
        """
        text = without_credentials(f"{what}: {failure_reason(error)}")
        for secret in (self.s3.aws_secret_access_key, self.s3.aws_session_token):
            if secret:
                text = text.replace(secret, "***")
        clean = without_credentials(self.s3.endpoint_url or "") == (self.s3.endpoint_url or "")
        return UploadError(text), error if clean else None

    def _pages(self, what: str, **params) -> Iterator[dict]:
        """``list_objects_v2`` pages of ``page_size`` keys, fetched one at a time as the caller asks for them.

        Raises:
            UploadError: a listing request failed (the reason names no credentials).
        """
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._get_client()
        paginator = client.get_paginator("list_objects_v2")
        pages = iter(paginator.paginate(Bucket=self.bucket, PaginationConfig={"PageSize": self.page_size}, **params))
        while True:
            try:
                page = next(pages)
            except StopIteration:
                return
            except (BotoCoreError, ClientError) as error:
                failure, cause = self.failure(f"listing {what} failed", error)
                raise failure from cause
            yield page

    def keyword_folders(self) -> Iterator[tuple[str, str]]:
        """(prefix, folder text) of each folder right under the prefix (``uploads/glass door/``, ``glass door``),
        one listing page at a time; the objects in them are not listed. The text is untrusted and may be empty
        (``uploads//``); the caller decides whether it can be a keyword."""
        for page in self._pages(self.location(self.root), Prefix=self.root, Delimiter="/"):
            for entry in page.get("CommonPrefixes", []):
                prefix = entry["Prefix"]
                yield prefix, readable_text(prefix[len(self.root) : -1])

    def object_pages(self, prefix: str | None = None) -> Iterator[list[UploadedObject]]:
        """The objects under ``prefix`` (default: the whole upload prefix), one listing page at a time, in key
        order; folder markers (keys ending in ``/``) are left out."""
        prefix = self.root if prefix is None else prefix
        for page in self._pages(self.location(prefix), Prefix=prefix):
            yield [as_object(entry) for entry in page.get("Contents", []) if not entry["Key"].endswith("/")]

    def list_objects(self, prefix: str | None = None) -> Iterator[UploadedObject]:
        """Every object under ``prefix`` (default: the upload prefix), in key order, listed page by page as the
        caller iterates."""
        for page in self.object_pages(prefix):
            yield from page

    def head(self, key: str) -> UploadedObject:
        """What S3 says of one object now (its ETag, size, LastModified).

        Raises:
            UploadMissing: the object is not in the bucket.
            UploadError: S3 could not be asked.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._get_client().head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code", "") in ("404", "NoSuchKey", "NotFound"):
                raise UploadMissing("not found in the bucket (deleted since it was listed?)") from error
            failure, cause = self.failure("HEAD failed", error)
            raise failure from cause
        except BotoCoreError as error:
            failure, cause = self.failure("HEAD failed", error)
            raise failure from cause
        return as_object({**answer, "Key": key})

    def keyword_folder(self, key: str) -> str | None:
        """The folder right under the prefix, as uploaded (``glass door`` for ``uploads/glass door/a.jpg``).

        None for keys outside the prefix, directly under it (no folder) and folder markers (keys ending in
        ``/``). The text is untrusted (it may be ``..``, quotes, markup or empty) and is returned as valid UTF-8;
        the caller decides whether it can be a keyword.
        """
        if not key.startswith(self.root) or key.endswith("/"):
            return None
        folder, sep, _ = key[len(self.root) :].partition("/")
        return readable_text(folder) if sep else None

    @contextlib.contextmanager
    def download(self, key: str) -> Iterator[Path]:
        """The object in a local temporary file for the duration of the block; the key never names the file.

        A read that fails or is cut off (boto3 retries it first) leaves no file behind.

        Raises:
            UploadMissing: the object is not in the bucket.
            UploadError: the object can't be read (refused, cut off, timed out, the bucket unreachable); the
                message is the reason, without credentials.
        """
        from boto3.exceptions import RetriesExceededError, S3TransferFailedError
        from botocore.exceptions import BotoCoreError, ClientError
        from s3transfer.exceptions import S3DownloadFailedError

        with tempfile.TemporaryDirectory(prefix="upload-") as tmp:
            target = Path(tmp) / "object"
            try:
                self._get_client().download_file(self.bucket, key, str(target))
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                if code in ("404", "NoSuchKey", "NotFound"):
                    raise UploadMissing("not found in the bucket (deleted since it was listed?)") from error
                failure, cause = self.failure("download failed", error)
                raise failure from cause
            except (BotoCoreError, RetriesExceededError, S3TransferFailedError, S3DownloadFailedError) as error:
                failure, cause = self.failure("download failed", error)
                raise failure from cause
            yield target
