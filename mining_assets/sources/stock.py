"""Stock photos (Pexels, Unsplash, Pixabay): what a search finds, and fetching one photo."""

from __future__ import annotations

import hashlib
import io
import re
from typing import TYPE_CHECKING

from mining_assets.vision.images import ImageError, decode_image, photo_suffix
from resources.stock_photos import PhotoHit, StockPhotoError

if TYPE_CHECKING:
    from resources.stock_photos import StockPhotoSource

STOCK_SOURCES = ("pexels", "unsplash", "pixabay")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def media_id(hit: PhotoHit) -> str:
    """``pexels-2379004``; an id that could not be part of a storage key is replaced by its hash."""
    safe = _SAFE_ID.match(hit.source_id)
    return f"{hit.source}-{hit.source_id if safe else hashlib.sha256(hit.source_id.encode()).hexdigest()[:16]}"


def collect_hits(
    sources: dict[str, StockPhotoSource], queries: list[str], per_query: int
) -> tuple[list[tuple[str, PhotoHit]], list[tuple[str, str]]]:
    """(query, hit) of every source and query, each photo once; and (source, reason) for every failed search."""
    found: dict[tuple[str, str], tuple[str, PhotoHit]] = {}
    errors: list[tuple[str, str]] = []
    for name, source in sources.items():
        for query in queries:
            try:
                hits = source.search(query, per_query)
            except StockPhotoError as error:
                errors.append((name, f"search {query!r}: {error}"))
                continue
            for hit in hits:
                found.setdefault((hit.source, hit.source_id), (query, hit))
    return list(found.values()), errors


def registry_row(query: str, hit: PhotoHit) -> dict:
    """The registry row of a photo a search found."""
    return {
        "item": media_id(hit), "source": hit.source, "media_id": media_id(hit), "source_id": hit.source_id,
        "media_type": "photo", "url": hit.image_url, "page_url": hit.page_url, "query": query,
        "photographer": hit.photographer, "photographer_url": hit.photographer_url, "license": hit.license,
        "description": hit.description, "download_location": hit.download_location,
    }  # fmt: skip


def hit_of(row: dict) -> PhotoHit:
    """The hit a registry row was made from (what the source needs to be told of a download)."""
    return PhotoHit(
        source=row["source"], source_id=row["source_id"] or "", page_url=row["page_url"], image_url=row["url"],
        photographer=row["photographer"], photographer_url=row["photographer_url"], license=row["license"] or "",
        description=row["description"], download_location=row["download_location"],
    )  # fmt: skip


def fetch_photo(hit: PhotoHit, source: StockPhotoSource, min_side: int) -> dict:
    """Download a photo and check that it is a usable image; returns its bytes, size as shown, suffix and sha256.

    Raises:
        StockPhotoError, ImageError: the reason this photo is not stored.
    """
    from PIL import Image

    data = source.download(hit.image_url)
    image = decode_image(data, min_side)  # refuses HTML, empty files, bombs; applies EXIF orientation
    fmt = Image.open(io.BytesIO(data)).format  # the header only: decode_image just read it
    return {
        "data": data,
        "width": image.width,
        "height": image.height,
        "suffix": photo_suffix(fmt),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


__all__ = ["STOCK_SOURCES", "ImageError", "StockPhotoError", "collect_hits", "fetch_photo", "hit_of", "media_id"]
