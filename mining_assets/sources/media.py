"""media: every registry item of a keyword fetched, told apart by content and stored once per media id, where
downloads and uploads meet; a keyword's partition holds membership rows (``keyword_media``) that refer to it."""

import dataclasses
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd

from mining_assets.checks import first_reasons, output_check, output_spec
from mining_assets.keyword_settings import stage_config
from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions
from mining_assets.retries import STEP_RETRY
from mining_assets.sources.media_registry import media_registry
from mining_assets.sources.stock import STOCK_SOURCES, fetch_photo, hit_of
from mining_assets.sources.uploads import Rejected, inspect_media, item_for, local_version
from mining_assets.sources.videos import fetch_video, video_blob_key
from mining_assets.video.probe import file_sha256
from mining_assets.vision.images import MIN_SIDE
from mining_assets.warehouse import (
    execute_with_rows,
    query_dicts,
    record_errors,
    table_definition_metadata,
    table_report,
    tables,
    unique_key_spec,
)
from resources.blob_store import BlobStore
from resources.faults import InfrastructureError
from resources.stock_photos import PexelsSource, PixabayPhotoSource, UnsplashSource
from resources.uploads import UploadBucket
from resources.warehouse import Warehouse
from resources.youtube import YouTubeResource

if TYPE_CHECKING:
    import duckdb

STAGE = "media"
OWNED = ["keyword_media", "media"]  # the tables whose keys the `unique_key` check covers


def media_leases(media_ids) -> list[str]:
    """The leases of media rows: media is shared by every keyword, so two keywords storing one media id (or one
    deleting its original while another stores it) take turns on that id; other ids go side by side."""
    return sorted({f"media:{media_id}" for media_id in media_ids})


MEDIA_COLUMNS = [name for name in tables()["media"]["columns"] if name != "stored_at"]
STORE_MEDIA = f"""
MERGE INTO media USING (SELECT * FROM _incoming) AS incoming ON media.media_id = incoming.media_id
WHEN MATCHED THEN UPDATE SET
    {", ".join(f"{c} = incoming.{c}" for c in MEDIA_COLUMNS if c != "media_id")}, stored_at = now()::TIMESTAMP
WHEN NOT MATCHED THEN INSERT ({", ".join(MEDIA_COLUMNS)}, stored_at)
    VALUES ({", ".join("incoming." + c for c in MEDIA_COLUMNS)}, now()::TIMESTAMP)
"""
MEMBER_COLUMNS = ["partition_key", "item", "media_id", "duplicate_of"]
ADD_MEMBERS = """INSERT INTO keyword_media (partition_key, item, media_id, duplicate_of, fetched_at)
SELECT partition_key, item, media_id, duplicate_of, now()::TIMESTAMP FROM _incoming"""
RECORD_CONTENTS = """INSERT INTO upload_contents (location, etag, media_id, recorded_at)
SELECT DISTINCT location, etag, media_id, now()::TIMESTAMP FROM _incoming i WHERE NOT EXISTS
    (SELECT 1 FROM upload_contents c WHERE c.location = i.location AND c.etag = i.etag)"""
FLUSH_EVERY = 8  # results recorded in batches: a run that dies keeps what it stored up to the last batch


class MediaConfig(dg.Config):
    max_concurrent_downloads: int = 3
    retry_failed: bool = True  # fetch again the items whose last fetch failed
    min_side: int = MIN_SIDE  # photos smaller than this on either side are refused


class Fetched(Exception):
    """Not an error: the item turned out to be media already stored (same content), named by ``media_id``."""

    def __init__(self, media_id: str):
        super().__init__(media_id)
        self.media_id = media_id


def upload_media_id(
    row: dict, etags: dict[str, str], contents: dict[tuple[str, str], str], read: set[str]
) -> tuple[str | None, bool]:
    """The media id a registry item is known to be, and whether its content changed since it was read.

    An upload-bucket object read before under the ETag it is listed with now (a local file: under its size and
    modification time) is that content: it is not read again, for this keyword or any other. One read under another
    ETag only (new content under the same key) is read again. Anything else is what its membership, or the source's
    own id, says. ``read``: the locations of ``contents``."""
    etag = etags.get(row["url"]) if row["source"] in ("s3", "local") else None
    if etag is not None and (row["url"], etag) in contents:
        return contents[(row["url"], etag)], False
    if etag is not None and row["url"] in read:
        return None, True
    return row["member_of"] or row["media_id"], False


def is_stored(known: dict | None, deleted: set[str], blob_store: BlobStore) -> bool:
    """Whether a ``media`` row's item needs no fetch: its file is in the store, or its original was deleted on
    purpose once its extraction was verified (``deleted_sources``: never downloaded again)."""
    return known is not None and (known["media_id"] in deleted or blob_store.exists(known["blob_key"]))


def fetch_item(
    row: dict,
    known: Callable[[str], dict | None],
    deleted: set[str],
    config: MediaConfig,
    resources: dict,
    blob_store: BlobStore,
) -> dict:
    """Fetch one registry item and store it; returns its ``media`` row. A stock photo is returned with its bytes
    (``data``) and not stored yet: only the caller knows whether it repeats another photo of the run.

    ``known`` gives the stored ``media`` row of a media id (any keyword's), or None.

    Raises:
        Fetched: an upload whose content is stored already (its media id is on the exception).
        Exception: the reason this item is not stored.
    """
    source = row["source"]
    if source in STOCK_SOURCES:
        photo = fetch_photo(hit_of(row), resources[source], config.min_side)
        return {"media_id": row["media_id"], "media_type": "photo", "source": source,
                "blob_key": f"photos/{row['media_id']}{photo['suffix']}", "sha256": photo["sha256"],
                "size_bytes": len(photo["data"]), "width": photo["width"], "height": photo["height"],
                "data": photo["data"]}  # fmt: skip
    if source in ("local", "s3"):
        item = item_for(resources["uploads"], source, row["url"])
        with item.open() as path:
            sha = file_sha256(path)
            media_id = f"{source}-{sha[:16]}"
            if is_stored(known(media_id), deleted, blob_store):
                raise Fetched(media_id)
            media = inspect_media(path, config.min_side)
            if media.media_type == "photo":
                key = f"photos/{media_id}{media.suffix}"
            else:
                key = video_blob_key(media_id, media.suffix)
            uri = blob_store.put_file(key, path)
            probed = dataclasses.asdict(media.probe) if media.probe else {}
            return {**probed, "media_id": media_id, "media_type": media.media_type, "source": source,
                    "blob_key": key, "uri": uri, "sha256": sha, "size_bytes": path.stat().st_size,
                    "width": media.width, "height": media.height}  # fmt: skip
    fields = fetch_video(row["media_id"], row["url"], resources["youtube"], blob_store)
    return {**fields, "media_id": row["media_id"], "source": source}


def reason_of(error: BaseException) -> str:
    return str(error) if isinstance(error, Rejected) else (str(error) or type(error).__name__)


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    deps=[media_registry],
    group_name="sources",
    kinds={"youtube", "s3", "duckdb"},
    metadata=table_definition_metadata("media"),
    check_specs=[
        dg.AssetCheckSpec(
            "stored_files_exist",
            asset="media",
            description="Each of the keyword's media has its file in the blob store (deleted_sources excepted).",
        ),
        dg.AssetCheckSpec(
            "items_fetched",
            asset="media",
            blocking=False,
            description="Warns when a registry item of the keyword could not be fetched or stored.",
        ),
        unique_key_spec("media", OWNED),
        output_spec("media", "stored media item"),
    ],
)
def media(
    context: dg.AssetExecutionContext,
    config: MediaConfig,
    youtube: YouTubeResource,
    uploads: UploadBucket,
    pexels: PexelsSource,
    unsplash: UnsplashSource,
    pixabay: PixabayPhotoSource,
    blob_store: BlobStore,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """The keyword's videos and photos (downloads and uploads alike) in the blob store, each stored once per media id
    whatever keywords find it, with what probing found (size, duration, fps, codec)."""
    config, _ = stage_config(context, config, warehouse)
    partition_key = context.partition_key
    for attempt in warehouse.retrying():
        with attempt as conn:
            registry = query_dicts(
                conn,
                "SELECT r.*, k.media_id AS member_of, k.duplicate_of FROM registry r LEFT JOIN keyword_media k "
                "ON k.partition_key = r.partition_key AND k.item = r.item WHERE r.partition_key = ? ORDER BY r.item",
                [partition_key],
            )
            failed_before = dict(
                conn.execute(
                    "SELECT item, reason FROM media_errors WHERE partition_key = ?", [partition_key]
                ).fetchall()
            )
            # the ETag each upload of the keyword was last listed with, and the media id of each (object, ETag) read
            etags = dict(conn.execute(
                "SELECT 's3://' || bucket || '/' || key, arg_max(etag, registered_at) FROM upload_objects "
                "WHERE partition_key = ? GROUP BY ALL", [partition_key]).fetchall())  # fmt: skip
            etags |= {r["url"]: local_version(r["url"]) for r in registry if r["source"] == "local"}
            contents = {(location, etag): media_id for location, etag, media_id in conn.execute(
                "SELECT location, etag, media_id FROM upload_contents WHERE location IN (SELECT unnest(?::VARCHAR[]))",
                [list(etags)]).fetchall()}  # fmt: skip
            ids = sorted({r["member_of"] or r["media_id"] for r in registry if r["member_of"] or r["media_id"]}
                         | set(contents.values()))  # fmt: skip
            stored = {row["media_id"]: row for row in query_dicts(
                conn, "SELECT * FROM media WHERE media_id IN (SELECT unnest(?::VARCHAR[]))", [ids])}  # fmt: skip
            deleted = {media_id for (media_id,) in conn.execute(
                "SELECT media_id FROM deleted_sources WHERE media_id IN (SELECT unnest(?::VARCHAR[]))", [ids]
            ).fetchall()}  # fmt: skip
    resources = {"youtube": youtube, "uploads": uploads, "pexels": pexels, "unsplash": unsplash, "pixabay": pixabay}

    members: list[dict] = []  # membership rows of this run, written at the next flush
    claimed = {r["member_of"]: r["item"] for r in registry if r["member_of"] and not r["duplicate_of"]}

    def add_member(item: str, media_id: str) -> None:
        """The item is this media; a second item of the keyword with the same media repeats the first."""
        first = claimed.setdefault(media_id, item)
        members.append({"item": item, "media_id": media_id, "duplicate_of": None if first == item else first})

    reused = 0
    todo: list[dict] = []
    read_locations = {location for location, _ in contents}
    for row in registry:
        media_id, changed = upload_media_id(row, etags, contents, read_locations)
        known = stored.get(media_id or "")
        if is_stored(known, deleted, blob_store):
            if row["member_of"] != known["media_id"]:  # stored by another keyword, or this upload's content is
                reused += 1  # known: only the membership is new
                add_member(row["item"], known["media_id"])
        elif row["item"] in failed_before and not config.retry_failed and not changed:
            continue
        else:
            todo.append(row)
    read: list[dict] = []  # (location, etag, media_id) of the uploads read this run, recorded at the next flush

    def record_read(row: dict, media_id: str) -> None:
        if etags.get(row["url"]) is not None:
            read.append({"location": row["url"], "etag": etags[row["url"]], "media_id": media_id})

    failures: list[tuple[str, str]] = [] if config.retry_failed else sorted(failed_before.items())
    notes: list[tuple[str, str]] = []
    new_media: list[dict] = []
    by_sha = {m["sha256"]: m["media_id"] for m in stored.values()}
    fetched = 0

    def flush(final: bool = False) -> tuple[dict, dg.AssetCheckResult, list[dict]] | None:
        """Write the new media rows (a block of their own, under their ids' leases, which other keywords' runs may
        wait on), then this run's memberships under the partition's lease; the last flush adds the errors and
        returns what the step reports (table metadata, `unique_key`, the summary), read in that transaction."""
        media_rows = pd.DataFrame(new_media, columns=MEDIA_COLUMNS).drop_duplicates("media_id", keep="last")
        if len(media_rows):
            for attempt in warehouse.retrying(lease=media_leases(media_rows["media_id"])):
                with attempt as conn:
                    execute_with_rows(conn, STORE_MEDIA, media_rows)
        new_media.clear()
        if read:  # which content each (upload, ETag) is: under its media id's lease, so it is recorded once
            for attempt in warehouse.retrying(lease=media_leases(row["media_id"] for row in read)):
                with attempt as conn:
                    execute_with_rows(conn, RECORD_CONTENTS, pd.DataFrame(read))
            read.clear()
        rows = pd.DataFrame(members, columns=MEMBER_COLUMNS[1:]).assign(partition_key=partition_key)
        report = None
        if len(rows) or final:
            for attempt in warehouse.retrying(lease=partition_key):
                with attempt as conn:
                    if len(rows):
                        conn.execute("DELETE FROM keyword_media WHERE partition_key = ? AND item IN "
                                     "(SELECT unnest(?::VARCHAR[]))", [partition_key, list(rows["item"])])  # fmt: skip
                        execute_with_rows(conn, ADD_MEMBERS, rows)
                    if final:
                        record_errors(conn, partition_key, STAGE, sorted(failures + notes))
                        report = (*table_report(conn, partition_key, "keyword_media", OWNED), summary_of(conn))
        members.clear()
        return report

    def summary_of(conn: "duckdb.DuckDBPyConnection") -> list[dict]:
        return query_dicts(
            conn,
            "SELECT m.media_type, count(*) AS items, sum(m.size_bytes) AS bytes, sum(m.duration_s) AS seconds, "
            "list(m.blob_key) FILTER (WHERE d.media_id IS NULL) AS keys, count(d.media_id) AS source_deleted "
            "FROM keyword_media k JOIN media m USING (media_id) LEFT JOIN deleted_sources d USING (media_id) "
            "WHERE k.partition_key = ? AND k.duplicate_of IS NULL GROUP BY m.media_type",
            [partition_key],
        )

    def known(media_id: str) -> dict | None:
        """The stored media row of an upload's content, once hashed: this keyword's, or any other's (and whether its
        original was deleted), so the same content found at another location is not stored again."""
        if media_id in stored:
            return stored[media_id]
        for attempt in warehouse.retrying():
            with attempt as conn:
                rows = query_dicts(conn, "SELECT * FROM media WHERE media_id = ?", [media_id])
                gone = conn.execute("SELECT 1 FROM deleted_sources WHERE media_id = ?", [media_id]).fetchall()
        if gone:
            deleted.add(media_id)
        return rows[0] if rows else None

    flush()  # memberships of media other keywords stored
    with ThreadPoolExecutor(max_workers=max(1, config.max_concurrent_downloads), thread_name_prefix="fetch") as pool:
        futures = {pool.submit(fetch_item, row, known, deleted, config, resources, blob_store): row for row in todo}
        # results taken in registry order, not as they finish: of two items with the same content, the one stored
        # (and the one the other is a duplicate_of) is the same on every run
        for done, (future, row) in enumerate(futures.items(), 1):
            try:
                media_row = future.result()
            except Fetched as same:  # content stored before (by any keyword): read, and not stored again
                reused += 1
                add_member(row["item"], same.media_id)
                record_read(row, same.media_id)
                continue
            except InfrastructureError:  # the store or the warehouse failed, not the item: the step fails
                raise
            except Exception as error:  # one bad item never stops the partition; its reason is recorded
                reason = reason_of(error)
                context.log.warning(f"{row['item']} ({row['url'][:200]}) failed: {reason}")
                failures.append((row["item"], reason))
                continue
            # the same bytes under another id (another site, another name) are that media item
            media_id = by_sha.setdefault(media_row["sha256"], media_row["media_id"])
            if media_id == media_row["media_id"]:
                if "data" in media_row:  # a stock photo: stored, then its source told, only when it is new
                    media_row["uri"] = blob_store.put_bytes(media_row["blob_key"], media_row.pop("data"))
                    try:
                        resources[row["source"]].report_download(hit_of(row))
                    except Exception as error:  # the photo is stored; only the source's download count missed it
                        notes.append((row["item"], f"stored, but the download was not reported: {error}"))
                new_media.append(media_row)
                stored[media_id] = media_row
                fetched += 1
            add_member(row["item"], media_id)
            record_read(row, media_id)
            if done % FLUSH_EVERY == 0:
                flush()
    table, unique, summary = flush(final=True)
    keys = sorted({key for row in summary for key in row["keys"] or []})  # none: every original deleted
    missing = [key for key in keys if not blob_store.exists(key)]
    counts = Counter({row["media_type"]: row["items"] for row in summary})
    return dg.MaterializeResult(
        metadata={
            **table,
            "fetched_now": fetched,
            "reused_from_other_keywords": reused,
            "failed_now": len(failures),
            "source_deleted": int(sum(row["source_deleted"] for row in summary)),  # extracted, original removed
            "by_media_type": dg.MetadataValue.json(dict(counts)),
            "bytes_stored": int(sum(row["bytes"] or 0 for row in summary)),
            "hours_of_video": round(sum(row["seconds"] or 0 for row in summary) / 3600, 3),
            "problems": dg.MetadataValue.json([{"item": i, "reason": r} for i, r in (failures + notes)[:50]]),
            "sample": dg.MetadataValue.md(
                markdown_table(["item", "reason"], [(i[:120], r[:200]) for i, r in failures[:10]], "_no failures_")
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="stored_files_exist",
                passed=not missing,
                metadata={"missing": len(missing), "examples": dg.MetadataValue.json(missing[:5])},
            ),
            dg.AssetCheckResult(
                check_name="items_fetched",
                passed=not failures,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"failed": len(failures), "attempted": len(todo)},
            ),
            unique,
            output_check(
                len(registry),
                sum(counts.values()),
                "no registry item could be fetched" + first_reasons(failures),
                upstream="registry",
            ),
        ],
    )
