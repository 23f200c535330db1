"""stock_images: photos a keyword finds on Pexels, Unsplash and Pixabay, each stored once with its photographer,
license and page URL; every stored photo becomes one frame of the catalog."""

import hashlib
import io
import re
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pandas as pd

from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions
from mining_assets.vision.images import MIN_SIDE, ImageError, decode_image, photo_suffix
from mining_assets.warehouse import (
    keyword_text,
    replace_stage_rows,
    table_definition_metadata,
    table_report,
    unique_key_spec,
)
from resources.blob_store import BlobStore
from resources.stock_photos import (
    PexelsSource,
    PhotoHit,
    PixabayPhotoSource,
    StockPhotoError,
    StockPhotoSource,
    UnsplashSource,
)
from resources.warehouse import Warehouse

SOURCES = ("pexels", "unsplash", "pixabay")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
PHOTO_COLUMNS = [
    "media_id", "source", "source_id", "query", "page_url", "image_url", "photographer", "photographer_url",
    "license", "description", "status", "error", "width", "height", "blob_key", "uri", "sha256",
]  # fmt: skip


class StockImagesConfig(dg.Config):
    sources: list[str] = list(SOURCES)
    per_query: int = 30  # photos asked of each source for each query
    queries: list[str] | None = None  # None: the keyword itself
    max_concurrent_downloads: int = 4
    min_side: int = MIN_SIDE


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


def hit_row(query: str, hit: PhotoHit) -> dict:
    return {
        "media_id": media_id(hit), "source": hit.source, "source_id": hit.source_id, "query": query,
        "page_url": hit.page_url, "image_url": hit.image_url, "photographer": hit.photographer,
        "photographer_url": hit.photographer_url, "license": hit.license, "description": hit.description,
    }  # fmt: skip


@dg.asset(
    partitions_def=keyword_partitions,
    group_name="images",
    kinds={"duckdb"},
    metadata=table_definition_metadata("photos"),
    check_specs=[dg.AssetCheckSpec("photos_stored", asset="stock_images"), unique_key_spec("stock_images", ["photos"])],
)
def stock_images(
    context: dg.AssetExecutionContext,
    config: StockImagesConfig,
    pexels: PexelsSource,
    unsplash: UnsplashSource,
    pixabay: PixabayPhotoSource,
    blob_store: BlobStore,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """Photos for the keyword from the stock-photo APIs, with photographer, license and page URL, each stored once."""
    partition_key = context.partition_key
    available = {"pexels": pexels, "unsplash": unsplash, "pixabay": pixabay}
    unknown = sorted(set(config.sources) - set(available))
    sources = {name: available[name] for name in config.sources if name in available}
    for attempt in warehouse.retrying():
        with attempt as conn:
            keyword = keyword_text(conn, partition_key)
            known = {
                row[0]: dict(zip(("width", "height", "blob_key", "uri", "sha256"), row[1:], strict=True))
                for row in conn.execute(
                    "SELECT media_id, width, height, blob_key, uri, sha256 FROM photos WHERE status = 'stored'"
                ).fetchall()
            }
    queries = [q for q in dict.fromkeys(" ".join(q.split()) for q in (config.queries or [keyword])) if q]
    hits, errors = collect_hits(sources, queries, config.per_query)
    errors += [(name, "unknown source") for name in unknown]

    rows: list[dict] = []
    to_fetch: list[tuple[str, PhotoHit]] = []
    for query, hit in hits:
        stored = known.get(media_id(hit))
        if stored and stored["blob_key"] and blob_store.exists(stored["blob_key"]):
            rows.append({**hit_row(query, hit), **stored, "status": "stored", "error": None})  # found before: reused
        else:
            to_fetch.append((query, hit))
    seen = {row["sha256"]: row["media_id"] for row in rows}
    with ThreadPoolExecutor(max_workers=max(1, config.max_concurrent_downloads)) as pool:
        futures = [pool.submit(fetch_photo, hit, sources[hit.source], config.min_side) for _, hit in to_fetch]
        for (query, hit), future in zip(to_fetch, futures, strict=True):
            row = hit_row(query, hit)
            try:
                photo = future.result()
            except (StockPhotoError, ImageError) as error:
                rows.append({**row, "status": "failed", "error": str(error)})
                continue
            if photo["sha256"] in seen:  # the same image under another id or on another site
                rows.append({**row, "status": "duplicate", "error": f"same image as {seen[photo['sha256']]}",
                             "sha256": photo["sha256"]})  # fmt: skip
                continue
            key = f"photos/{row['media_id']}{photo['suffix']}"
            seen[photo["sha256"]] = row["media_id"]
            rows.append({**row, "status": "stored", "error": None, "width": photo["width"],
                         "height": photo["height"], "blob_key": key, "uri": blob_store.put_bytes(key, photo["data"]),
                         "sha256": photo["sha256"]})  # fmt: skip
            try:
                sources[hit.source].report_download(hit)
            except StockPhotoError as error:  # the photo is stored; only the source's download count missed it
                errors.append((row["media_id"], f"stored, but the download was not reported: {error}"))
    table = pd.DataFrame(rows, columns=PHOTO_COLUMNS).assign(partition_key=partition_key, keyword=keyword)
    failures = errors + [(r["media_id"], r["error"]) for r in rows if r["status"] == "failed"]
    # uploads (s3, local) share the photos table: only the stock sources' rows are this asset's to replace
    replace_stage_rows(
        warehouse, partition_key, "photos", table, "stock_images", failures, f"AND source IN {SOURCES!r}"
    )
    table_meta, unique = table_report(warehouse, partition_key, "photos")
    for item, reason in failures[:20]:
        context.log.warning(f"{item}: {reason}")
    stored_rows = table[table["status"] == "stored"]
    missing = [key for key in stored_rows["blob_key"] if not blob_store.exists(key)]
    counts = table.groupby(["source", "status"]).size()
    return dg.MaterializeResult(
        metadata={
            **table_meta,
            "photos": len(stored_rows),
            "by_source_and_status": dg.MetadataValue.json({f"{s}/{t}": int(n) for (s, t), n in counts.items()}),
            "queries": dg.MetadataValue.json(queries),
            "problems": dg.MetadataValue.json([{"item": i, "reason": r} for i, r in failures[:50]]),
            "sample": dg.MetadataValue.md(
                markdown_table(
                    ["media_id", "photographer", "license", "page_url"],
                    stored_rows[["media_id", "photographer", "license", "page_url"]].head(10).values.tolist(),
                    "_no photos_",
                )
            ),
        },
        check_results=[
            dg.AssetCheckResult(check_name="photos_stored", passed=not missing, metadata={"missing": len(missing)}),
            unique,
        ],
    )
