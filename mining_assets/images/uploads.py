"""media_uploads: photos and videos of a keyword uploaded to S3 (one folder per keyword) or found in a local folder,
told apart by content, stored once and recorded; photos become frames, videos go on to video_frames."""

import contextlib
import dataclasses
import functools
import hashlib
import os
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd

from mining_assets.keywords import register_keywords
from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions, keyword_slug, normalize_keyword
from mining_assets.video.downloads import PROBED_FIELDS, video_blob_key
from mining_assets.video.probe import MediaError, VideoProbe, file_sha256, probe_video
from mining_assets.vision.images import MIN_SIDE, ImageError, decode_image, photo_suffix
from mining_assets.warehouse import (
    execute_with_rows,
    insert_rows,
    keyword_text,
    record_errors,
    table_definition_metadata,
    table_report,
    unique_key_spec,
)
from resources.blob_store import BlobStore
from resources.uploads import UploadBucket, UploadError
from resources.warehouse import Warehouse

STAGE = "media_uploads"
_VIDEO_SUFFIXES = {"mov": ".mp4", "matroska": ".mkv", "avi": ".avi", "mpegts": ".ts", "mpeg": ".mpg", "flv": ".flv",
                   "ogg": ".ogv", "asf": ".wmv"}  # fmt: skip
UPLOAD_COLUMNS = ["media_id", "source", "location", "media_type", "status", "error", "size_bytes", "sha256"]
PHOTO_COLUMNS = ["media_id", "source", "source_id", "query", "page_url", "image_url", "photographer", "license",
                 "status", "error", "width", "height", "blob_key", "uri", "sha256"]  # fmt: skip
VIDEO_COLUMNS = ["media_id", "source", "url", "title", "status", *PROBED_FIELDS]
UPSERT_VIDEOS = f"""
MERGE INTO videos USING (SELECT * FROM _incoming) AS incoming
ON videos.partition_key = incoming.partition_key AND videos.media_id = incoming.media_id
WHEN MATCHED THEN UPDATE SET
    {", ".join(f"{name} = incoming.{name}" for name in ("url", "title", *PROBED_FIELDS))},
    status = CASE WHEN videos.status IN ('framed', 'complete') THEN videos.status ELSE 'downloaded' END,
    error = CASE WHEN videos.status IN ('framed', 'complete') THEN videos.error ELSE NULL END,
    updated_at = now()::TIMESTAMP
WHEN NOT MATCHED THEN INSERT (partition_key, keyword, {", ".join(VIDEO_COLUMNS)}, discovered_at, updated_at)
    VALUES (incoming.partition_key, incoming.keyword, {", ".join("incoming." + name for name in VIDEO_COLUMNS)},
            now()::TIMESTAMP, now()::TIMESTAMP)
"""  # same content under the same id: a video already sampled keeps its status, so a re-run changes nothing


class MediaUploadsConfig(dg.Config):
    s3_keys: list[str] | None = None  # objects a sensor run brings; None: all objects of this keyword's folders
    local_dir: str | None = None  # a folder of photos and videos, read recursively; hidden files are skipped
    keyword: str | None = None  # the keyword as uploaded (the S3 folder name), recorded when the partition is new
    license: str = "as uploaded"  # recorded for every photo
    min_side: int = MIN_SIDE


class Rejected(Exception):
    """An item that is not stored; the message is the reason, media_type what its content turned out to be."""

    def __init__(self, reason: str, media_type: str | None = None):
        super().__init__(reason)
        self.media_type = media_type


@dataclasses.dataclass(frozen=True)
class Item:
    source: str  # s3 or local
    location: str  # s3://bucket/key or file:///path, as found: recorded, never used to build a storage key
    open: Callable[[], contextlib.AbstractContextManager[Path]]  # a local file holding the item's bytes


@dataclasses.dataclass(frozen=True)
class Media:
    media_type: str  # photo or video
    suffix: str
    width: int
    height: int
    probe: VideoProbe | None = None


def image_format(path: Path) -> str | None:
    """The image format Pillow recognizes from the file's header (nothing is decoded), or None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                fmt = image.format or "image"
    except Image.DecompressionBombError:
        return "image"  # an image too large to decode: decode_image gives the reason
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return None
    return None if fmt == "MPEG" else fmt  # Pillow names MPEG video streams but can't decode them


def inspect_media(path: Path, min_side: int = MIN_SIDE) -> Media:
    """Photo or video, by content: what Pillow recognizes is a photo, what PyAV can decode is a video.

    Pillow goes first because FFmpeg also opens a JPEG or PNG as a one-frame "video".

    Raises:
        Rejected: neither an image nor a video, or an image that can't be used (too small, truncated, a bomb).
    """
    fmt = image_format(path)
    if fmt:
        try:
            image = decode_image(path.read_bytes(), min_side)
        except ImageError as error:
            raise Rejected(str(error), "photo") from error
        return Media("photo", photo_suffix(fmt), image.width, image.height)
    try:
        probe = probe_video(path)
    except MediaError as error:
        raise Rejected(f"neither an image nor a video: {error}") from error
    import av

    with av.open(str(path)) as opened:  # probe_video just opened it
        container = opened.format.name
    if container == "image2" or container.endswith("_pipe"):
        raise Rejected(f"neither an image nor a video: a still image Pillow does not read ({container})")
    return Media("video", _VIDEO_SUFFIXES.get(container.split(",")[0], ".video"), probe.width, probe.height, probe)


def local_items(folder: str) -> list[Item]:
    """Every visible file under a folder, recursively (hidden files and folders skipped), in path order."""
    root = Path(folder).expanduser().absolute()
    if not root.is_dir():
        raise UploadError(f"local folder not found: {root}")
    paths: list[Path] = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        paths += [Path(directory) / name for name in names if not name.startswith(".")]
    return [Item("local", path.as_uri(), functools.partial(contextlib.nullcontext, path))
            for path in sorted(paths) if path.is_file()]  # fmt: skip


def folder_belongs(folder: str | None, partition_key: str, keyword: str) -> bool:
    """Whether an upload folder's text is this partition's keyword (a refused folder belongs to none)."""
    try:
        text = normalize_keyword(folder) if folder is not None else None
    except ValueError:
        return False
    return text is not None and (keyword_slug(text) == partition_key or text == keyword)


def s3_items(
    uploads: UploadBucket, keys: list[str] | None, partition_key: str, keyword: str
) -> tuple[list[Item], list[tuple[str, str]], set[str]]:
    """The bucket's objects for this partition: the given keys, or (None) a listing of the keyword's folders.

    Returns:
        the items, (item, reason) for keys refused or a failed listing, and the names under which errors of the
        bucket itself are recorded (so that a run that looked at the bucket again replaces them).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    if not uploads.configured:
        skipped = [("s3", f"no upload bucket configured: {len(keys)} S3 keys skipped")] if keys else []
        return [], skipped, {"s3"} if keys else set()
    where = uploads.location(uploads.root)
    errors: list[tuple[str, str]] = []

    def belongs(key: str) -> bool:
        return folder_belongs(uploads.keyword_folder(key), partition_key, keyword)

    if keys is None:
        try:
            keys = [obj.key for obj in uploads.list_objects()]
        except (BotoCoreError, ClientError, UploadError) as error:
            return [], [(where, f"listing failed: {error}")], {"s3", where}
        keys = [key for key in keys if belongs(key)]
    else:
        wanted = list(dict.fromkeys(keys))
        keys = [key for key in wanted if belongs(key)]
        errors = [(uploads.location(key), f"not an upload of this keyword (not in a {where}<keyword>/ folder)")
                  for key in wanted if not belongs(key)]  # fmt: skip
    items = [Item("s3", uploads.location(key), functools.partial(uploads.download, key)) for key in keys]
    return items, errors, {"s3", where}


def ingest(item: Item, min_side: int, known: dict[str, dict], blob_store: BlobStore) -> dict:
    """Read one item, decide what it is, store it under a key made of its content hash; return its record.

    ``known`` maps the sha256 of content already stored for the partition to its first row, and is updated.
    """
    location_hash = hashlib.sha256(item.location.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    row: dict = {"source": item.source, "location": item.location, "media_id": f"{item.source}-unread-{location_hash}",
                 "media_type": None, "error": None, "size_bytes": None, "sha256": None}  # fmt: skip
    try:
        with item.open() as path:
            sha = file_sha256(path)
            row.update(media_id=f"{item.source}-{sha[:16]}", sha256=sha, size_bytes=path.stat().st_size)
            first = known.get(sha)
            if first and first["location"] != item.location:
                return {**row, "media_type": first["media_type"], "status": "duplicate", "same_as": first["media_id"],
                        "error": f"same content as {first['location']}"}  # fmt: skip
            media = inspect_media(path, min_side)
            if media.media_type == "photo":
                key = f"photos/{row['media_id']}{media.suffix}"
            else:
                key = video_blob_key(row["media_id"], media.suffix)
            uri = blob_store.uri(key) if blob_store.exists(key) else blob_store.put_file(key, path)
    except Rejected as error:
        return {**row, "media_type": error.media_type, "status": "failed", "error": str(error)}
    except Exception as error:  # one bad item never stops the partition; its reason is recorded
        reason = str(error) if isinstance(error, UploadError) else f"{type(error).__name__}: {error}"
        return {**row, "status": "failed", "error": reason}
    probed = dataclasses.asdict(media.probe) if media.probe else {}
    row = {**row, **probed, "media_type": media.media_type, "status": "stored", "error": None, "blob_key": key,
           "uri": uri, "width": media.width, "height": media.height}  # fmt: skip
    known[sha] = row
    return row


def remember_keyword(warehouse: Warehouse, partition_key: str, text: str | None) -> str | None:
    """Record the keyword text of a partition new to the keywords table; returns why it was not, if it was not."""
    if not text:
        return None
    try:
        keyword = normalize_keyword(text)
    except ValueError as error:
        return f"keyword {text!r} refused: {error}"
    if keyword_slug(keyword) != partition_key:
        return f"keyword {keyword!r} is partition {keyword_slug(keyword)!r}, not {partition_key!r}: not recorded"
    _, rejected = register_keywords(warehouse, [keyword])
    return rejected[0][1] if rejected else None


def media_tables(rows: list[dict], license_text: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The photos and videos rows of this run: one per media id, none for a second copy of a stored media id."""
    photos, videos = [], []
    for row in rows:
        if row["status"] == "duplicate" and row["same_as"] == row["media_id"]:
            continue  # the same content under two names: the media row is the stored one's
        location = row["location"]
        if row["media_type"] == "photo":
            photos.append({**row, "source_id": (row["sha256"] or "")[:16], "query": "", "license": license_text,
                           "page_url": location, "image_url": location, "photographer": None})  # fmt: skip
        elif row["media_type"] == "video" and row["status"] == "stored":
            videos.append({**row, "status": "downloaded", "url": location, "title": location.rsplit("/", 1)[-1]})
    return (pd.DataFrame(photos, columns=PHOTO_COLUMNS).drop_duplicates("media_id"),
            pd.DataFrame(videos, columns=VIDEO_COLUMNS).drop_duplicates("media_id"))  # fmt: skip


def _replace_rows(conn, table: str, key: str, partition_key: str, frame: pd.DataFrame) -> None:
    """Delete the partition's rows with this run's keys, then insert this run's rows (stamped now)."""
    conn.execute(f"DELETE FROM {table} WHERE partition_key = ? AND {key} IN ?", [partition_key, list(frame[key])])
    insert_rows(conn, table, frame)


def write_rows(conn, partition_key: str, keyword: str, rows: list[dict], license_text: str) -> None:
    """Upsert this run's rows: uploads by location, photos and videos by media id.

    Call it inside a retried block (the block is the one transaction). Never a whole-partition replace: a sensor
    run brings only the new objects.
    """
    photos, videos = media_tables(rows, license_text)
    tables = [("uploads", "location", pd.DataFrame(rows, columns=UPLOAD_COLUMNS), UPLOAD_COLUMNS),
              ("photos", "media_id", photos, PHOTO_COLUMNS), ("videos", "media_id", videos, VIDEO_COLUMNS)]  # fmt: skip
    for table, key, frame, columns in tables:
        if not len(frame):
            continue
        frame = frame.assign(partition_key=partition_key, keyword=keyword)[["partition_key", "keyword", *columns]]
        if table == "videos":
            execute_with_rows(conn, UPSERT_VIDEOS, frame)
        else:
            _replace_rows(conn, table, key, partition_key, frame)


@dg.asset(
    partitions_def=keyword_partitions,
    group_name="images",
    kinds={"s3", "duckdb"},
    metadata=table_definition_metadata("uploads"),
    check_specs=[
        dg.AssetCheckSpec("stored_files_exist", asset="media_uploads"),
        unique_key_spec("media_uploads", ["uploads"]),
    ],
)
def media_uploads(
    context: dg.AssetExecutionContext,
    config: MediaUploadsConfig,
    uploads: UploadBucket,
    blob_store: BlobStore,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """Photos and videos uploaded for the keyword (S3 folder or local folder), told apart by content, stored once."""
    partition_key = context.partition_key
    note = remember_keyword(warehouse, partition_key, config.keyword)
    for attempt in warehouse.retrying():
        with attempt as conn:
            keyword = keyword_text(conn, partition_key)
            earlier_rows = conn.execute(
                "SELECT sha256, media_id, location, media_type FROM uploads WHERE partition_key = ? "
                "AND status = 'stored' ORDER BY registered_at DESC, location DESC",
                [partition_key],
            ).fetchall()
    if note:
        context.log.warning(note)
    # content stored before, by sha256: its first row (the dict keeps the last of the reversed order)
    known = {sha: {"media_id": m, "location": loc, "media_type": kind} for sha, m, loc, kind in earlier_rows}

    items, errors, scope = s3_items(uploads, config.s3_keys, partition_key, keyword)
    if config.local_dir:
        scope.add(config.local_dir)
        try:
            items += local_items(config.local_dir)
        except UploadError as error:
            errors.append((config.local_dir, str(error)))
    rows = [ingest(item, config.min_side, known, blob_store) for item in items]
    failures = errors + [(row["location"], row["error"]) for row in rows if row["status"] == "failed"]
    scope |= {item for item, _ in errors} | {row["location"] for row in rows}

    # the lease keeps two runs of this keyword (two sensor ticks) from both inserting the same new items
    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            write_rows(conn, partition_key, keyword, rows, config.license)
            earlier = conn.execute(
                "SELECT item, reason FROM ingest_errors WHERE partition_key = ? AND stage = ?", [partition_key, STAGE]
            ).fetchall()
            # record_errors replaces the stage's errors: keep those of items this run did not look at again
            kept = [(i, r) for i, r in earlier if i not in scope]
            record_errors(conn, partition_key, STAGE, sorted(kept + failures))
    table, unique = table_report(warehouse, partition_key, "uploads")
    for item, reason in failures[:20]:
        context.log.warning(f"{item!r}: {reason}")

    stored = [row for row in rows if row["status"] == "stored"]
    missing = [row["blob_key"] for row in stored if not blob_store.exists(row["blob_key"])]
    counts = Counter(f"{row['media_type'] or 'unknown'}/{row['status']}" for row in rows)
    sample = [[r["media_id"], r["media_type"], r["status"], r["location"]] for r in rows[:10]]
    return dg.MaterializeResult(
        metadata={
            **table,
            "items": len(rows),
            "stored": len(stored),
            "by_media_type_and_status": dg.MetadataValue.json(dict(sorted(counts.items()))),
            "problems": dg.MetadataValue.json([{"item": i, "reason": r} for i, r in failures[:50]]),
            "sample": dg.MetadataValue.md(
                markdown_table(["media_id", "media_type", "status", "location"], sample, "_no uploads_")
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="stored_files_exist",
                passed=not missing,
                metadata={"missing": len(missing), "examples": dg.MetadataValue.json(missing[:5])},
            ),
            unique,
        ],
    )
