"""UploadBucket: photos and videos people upload to an S3 bucket, one folder per keyword.

Layout: ``s3://<bucket>/<prefix>/<keyword as typed>/<any name>``. The folder name is untrusted text: it becomes
a keyword (whose slug is the partition key) and is never used to build a storage path. An object's name says
nothing about what it holds: the content decides whether it is a photo, a video or neither.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr


class UploadError(Exception):
    """An upload that can't be read from the bucket; the message is the reason recorded for it."""


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


class UploadBucket(dg.ConfigurableResource):
    """The bucket people upload media to, read through dagster-aws's S3Resource.

    Unconfigured (``bucket`` unset, see ``unconfigured()``) for local-only use: nothing is listed, and an asset
    that is asked for S3 keys records why they were skipped.
    """

    bucket: str | None = None
    prefix: str = "uploads"
    s3: S3Resource

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

    def list_objects(self, since: datetime | None = None) -> list[UploadedObject]:
        """Objects under the prefix, oldest first (ties by key); with ``since``, those modified at or after it.

        ``since`` is inclusive because S3 (and moto) report LastModified to the second: an object written in the
        same second as the newest one seen must still be listed. The caller drops those it has already seen.
        """
        from dagster_aws.s3.sensor import get_objects

        after = since - timedelta(microseconds=1) if since else None
        found = get_objects(self.bucket, prefix=self.root, since_last_modified=after, client=self._get_client())
        objects = [
            UploadedObject(
                key=obj["Key"],
                size=int(obj.get("Size", 0)),
                etag=str(obj.get("ETag", "")).strip('"'),
                last_modified=obj["LastModified"],
            )
            for obj in found
        ]
        return sorted(objects, key=lambda obj: (obj.last_modified, obj.key))

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

        Raises:
            UploadError: the object is missing or can't be read.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        with tempfile.TemporaryDirectory(prefix="upload-") as tmp:
            target = Path(tmp) / "object"
            try:
                self._get_client().download_file(self.bucket, key, str(target))
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                if code in ("404", "NoSuchKey", "NotFound"):
                    raise UploadError("not found in the bucket (deleted since it was listed?)") from error
                raise UploadError(f"download failed: {error}") from error
            except BotoCoreError as error:
                raise UploadError(f"download failed: {error}") from error
            yield target
