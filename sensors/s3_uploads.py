"""s3_uploads_sensor: new photos and videos in the upload bucket (one folder per keyword) become keyword partitions,
each with an upload_pipeline run that brings exactly the new objects.

Each tick lists each keyword folder page by page and keeps what is new by (key, ETag) against the warehouse table
``upload_objects``, which only media_registry writes: an object is new until a run has registered it, whatever its
LastModified says (S3 stamps a multipart upload with the time it started, so one that finishes late lists as older
than objects seen before it). What the sensor holds at once is one listing page, the objects it requests this
tick and those it requested earlier that no run has registered yet (the cursor), each at most
``UploadBucket.max_pending``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterable

import dagster as dg

from mining_assets.jobs import upload_pipeline
from mining_assets.partitions import keyword_partitions, keyword_slug, normalize_keyword
from resources.uploads import UploadBucket
from resources.warehouse import Warehouse

# the objects of one listing page that runs have registered (media_registry writes the table)
REGISTERED = "SELECT key, etag FROM upload_objects WHERE bucket = ? AND key IN (SELECT unnest(?::VARCHAR[]))"
MAX_REFUSED_REMEMBERED = 100  # refused folders warned about once; beyond that many, a warning each tick


@dataclasses.dataclass(frozen=True)
class Requested:
    """An object asked of a run: its key and ETag, and how often it was asked for again after the timeout."""

    key: str
    etag: str
    attempt: int = 0


@dataclasses.dataclass(frozen=True)
class UploadCursor:
    """The objects requested but not registered yet ((key, ETag) -> (requested at, attempt)), and the folders
    refused as keywords (warned about once)."""

    pending: dict[tuple[str, str], tuple[float, int]] = dataclasses.field(default_factory=dict)
    refused: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str | None) -> UploadCursor:
        """The cursor a tick left; one of an earlier version (newest LastModified) holds nothing pending."""
        if not text:
            return cls()
        data = json.loads(text)
        pending = {(key, etag): (float(at), int(attempt)) for key, etag, at, attempt in data.get("pending", [])}
        return cls(pending, frozenset(data.get("refused", [])))

    def dumps(self) -> str:
        pending = sorted([key, etag, at, attempt] for (key, etag), (at, attempt) in self.pending.items())
        return json.dumps({"pending": pending, "refused": sorted(self.refused)})


def registered(warehouse: Warehouse, bucket: str, keys: list[str]) -> set[tuple[str, str]]:
    """The (key, ETag) pairs of these keys that a run registered: one query, read only."""
    if not keys:
        return set()
    return {(key, etag) for key, etag in warehouse.execute(REGISTERED, [bucket, keys])}


def settled(warehouse: Warehouse, bucket: str, pending: dict, page_size: int) -> dict:
    """The pending objects no run has registered yet, asked ``page_size`` keys at a time."""
    idents = sorted(pending)
    done: set[tuple[str, str]] = set()
    for start in range(0, len(idents), page_size):
        done |= registered(warehouse, bucket, sorted({key for key, _ in idents[start : start + page_size]}))
    return {ident: state for ident, state in pending.items() if ident not in done}


def partition_of(uploads: UploadBucket, key: str) -> tuple[str, str] | None:
    """(partition key, keyword) of an object's folder; None when the folder can't be a keyword."""
    folder = uploads.keyword_folder(key)
    try:
        keyword = normalize_keyword(folder) if folder is not None else None
    except ValueError:
        return None
    return (keyword_slug(keyword), keyword) if keyword is not None else None


def upload_run_key(bucket: str, objects: Iterable[Requested]) -> str:
    """A run key made of the objects themselves (bucket, key, ETag): the same objects never run twice, unless
    asked for again after the timeout (the attempt is then part of the key)."""
    identity = json.dumps(sorted([bucket, obj.key, obj.etag, *([obj.attempt] if obj.attempt else [])]
                                 for obj in objects))  # fmt: skip
    return "s3-uploads-" + hashlib.sha256(identity.encode("ascii")).hexdigest()[:32]  # ASCII: any key serializes


def upload_run_config(objects: list[Requested], keyword: str) -> dict:
    """The run brings these objects (with the ETags listed, which media_registry records), and the keyword text for
    the warehouse (the sensor does not write it)."""
    listed = [{"key": obj.key, "etag": obj.etag} for obj in objects]
    return {"ops": {"media_registry": {"config": {"s3_objects": listed, "keyword": keyword}}}}


@dataclasses.dataclass
class Listing:
    """What one pass over the keyword folders found: the new objects by partition, the folders refused, and whether
    it went through every folder (it stops once ``room`` objects were found)."""

    groups: dict[str, tuple[str, list[Requested]]] = dataclasses.field(default_factory=dict)
    refused: set[str] = dataclasses.field(default_factory=set)
    complete: bool = True

    def add(self, partition_key: str, keyword: str, obj: Requested) -> None:
        self.groups.setdefault(partition_key, (keyword, []))[1].append(obj)


def list_new(
    uploads: UploadBucket, warehouse: Warehouse, pending: dict, room: int, warned: frozenset[str], log
) -> Listing:
    """Up to ``room`` objects no run has registered and none was requested for (``pending``), folder by folder,
    page by page, each page checked against ``upload_objects`` with one query."""
    listing = Listing()
    if room <= 0:
        listing.complete = False
        return listing
    for prefix, folder in uploads.keyword_folders():
        try:
            keyword = normalize_keyword(folder)
        except ValueError as error:
            listing.refused.add(prefix)
            if prefix not in warned:
                log.warning(f"upload folder {folder!r} refused ({error}); its objects are skipped")
            continue
        for page in uploads.object_pages(prefix):
            known = registered(warehouse, uploads.bucket, sorted({obj.key for obj in page}))
            for obj in page:
                if (obj.key, obj.etag) not in known and (obj.key, obj.etag) not in pending:
                    listing.add(keyword_slug(keyword), keyword, Requested(obj.key, obj.etag))
                    room -= 1
                    if room == 0:  # the rest waits for a later tick, once runs have registered what was asked
                        listing.complete = False
                        return listing
    return listing


@dg.sensor(job=upload_pipeline, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED)
def s3_uploads_sensor(context: dg.SensorEvaluationContext, uploads: UploadBucket, warehouse: Warehouse):
    """Watches s3://<bucket>/<prefix>/<keyword>/ for new photos and videos: one run per keyword and tick."""
    if not uploads.configured:
        return dg.SkipReason("no upload bucket configured (set MINING_UPLOADS_BUCKET)")
    now = time.time()
    cursor = UploadCursor.parse(context.cursor)
    pending = settled(warehouse, uploads.bucket, cursor.pending, uploads.page_size)
    # a run that failed before registering its objects (or never started) gets them again, under a new run key
    batch = Listing()  # what this tick requests: objects asked for again, then the new ones
    for (key, etag), (at, attempt) in sorted(pending.items()):
        if now - at < uploads.pending_timeout_seconds:
            continue
        partition = partition_of(uploads, key)
        if partition is None:  # in no keyword's folder any more (the prefix changed): no run can register it
            del pending[(key, etag)]
            continue
        context.log.warning(f"{key!r} was requested {(now - at) / 3600:.1f} h ago and is not registered: asked again")
        batch.add(*partition, Requested(key, etag, attempt + 1))
        pending[(key, etag)] = (now, attempt + 1)
    listing = list_new(uploads, warehouse, pending, uploads.max_pending - len(pending), cursor.refused, context.log)
    for partition_key, (keyword, objects) in listing.groups.items():
        for obj in objects:
            pending[(obj.key, obj.etag)] = (now, 0)
            batch.add(partition_key, keyword, obj)
    refused = listing.refused if listing.complete else listing.refused | cursor.refused
    next_cursor = UploadCursor(pending, frozenset(sorted(refused)[:MAX_REFUSED_REMEMBERED])).dumps()
    if not batch.groups:
        waiting = f" ({len(pending)} requested earlier, not registered yet)" if pending else ""
        if len(pending) >= uploads.max_pending:
            waiting += ": no more are requested until runs register them (max_pending)"
        return dg.SensorResult(skip_reason=f"no new uploads{waiting}", cursor=next_cursor)
    existing = set(context.instance.get_dynamic_partitions(keyword_partitions.name))
    added = [key for key in batch.groups if key not in existing]
    for key, (_, objects) in batch.groups.items():
        context.log.info(f"partition {key}: {len(objects)} new upload(s)")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=key,
                run_key=upload_run_key(uploads.bucket, objects),
                run_config=upload_run_config(objects, keyword),
            )
            for key, (keyword, objects) in batch.groups.items()
        ],
        dynamic_partitions_requests=[keyword_partitions.build_add_request(added)] if added else [],
        cursor=next_cursor,
    )
