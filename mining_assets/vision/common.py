"""Helpers the vision and pose stages share: loading a catalogued frame for a model, and storing a partition's
files."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.request import url2pathname

import dagster as dg

from mining_assets.partitions import storage_key
from mining_assets.vision.images import decode_image

if TYPE_CHECKING:
    from PIL import Image

    from resources.blob_store import BlobStore


def frame_loader(blob_store: BlobStore, min_side: int) -> Callable[[dict], Image.Image]:
    """Load a frame row's image (``blob_key``) as RGB; raises ImageError with the reason when unusable."""

    def load(frame: dict) -> Image.Image:
        return decode_image(blob_store.get_bytes(frame["blob_key"]), min_side)

    return load


def partition_prefix(stage: str, partition_key: str) -> str:
    """The blob-store folder a stage writes one keyword's files to (``embeddings/glass-door``)."""
    return f"{stage}/{storage_key(partition_key)}"


def content_key(prefix: str, data: bytes, suffix: str) -> str:
    """A key named by content, so a re-run writes new files beside the old ones and nothing is overwritten."""
    return f"{prefix}/{hashlib.sha256(data).hexdigest()[:24]}{suffix}"


def remove_orphans(blob_store: BlobStore, prefix: str, keep: Iterable[str]) -> tuple[int, list[str], list[str]]:
    """After a stage stored its new files and rows: delete files under its prefix (``partition_prefix``: the
    stage's own folder for one keyword, which no other stage or keyword writes to) that no row refers to.

    Returns how many the store removed; ``key: code message`` for each orphan it did not remove (left for
    ``blob_gc``, never counted); and which of the kept keys are missing from the store.
    """
    from resources.blob_store import BlobDeleteError

    folder = prefix.rstrip("/") + "/"
    keep = set(keep)
    stored = {key for key in blob_store.list_keys(prefix) if key.startswith(folder)}
    try:
        removed, refused = blob_store.delete(sorted(stored - keep)), []
    except BlobDeleteError as error:
        removed = error.deleted
        refused = [f"{key}: {code} {message}".rstrip() for key, code, message in error.failures]
    return removed, refused, sorted(keep - stored)


def metadata_location(uri: str) -> dg.MetadataValue:
    """A local file as a path the UI shows, anything else (s3://, https://) as a URL."""
    return (
        dg.MetadataValue.path(url2pathname(uri.removeprefix("file://")))
        if uri.startswith("file://")
        else (dg.MetadataValue.url(uri))
    )
