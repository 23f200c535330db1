"""raw_videos: the registry's videos downloaded into the blob store and probed."""

import dataclasses
import re
import tempfile
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import dagster as dg

from mining_assets.partitions import keyword_partitions
from mining_assets.video.probe import VideoProbe, probe_video
from mining_assets.video.registry import video_registry
from mining_assets.warehouse import record_errors, set_video_status
from resources.blob_store import BlobStore
from resources.warehouse import Warehouse
from resources.youtube import YouTubeResource

_SAFE_SUFFIX = re.compile(r"^\.[a-z0-9]{1,5}$")


class RawVideosConfig(dg.Config):
    max_concurrent_downloads: int = 3
    retry_failed: bool = True


# what raw_videos records of a stored video: where it is, and what probing it found
PROBED_FIELDS = ("blob_key", "uri", *(field.name for field in dataclasses.fields(VideoProbe)))


def video_blob_key(media_id: str, suffix: str) -> str:
    """Videos are stored once per media id, so a video that several keywords find is downloaded once."""
    suffix = suffix.lower()
    return f"videos/{media_id}{suffix if _SAFE_SUFFIX.match(suffix) else '.video'}"


def stored_copies(conn, media_ids: list[str]) -> dict[str, dict]:
    """The probed fields of these videos as some keyword already stored them (one stored row each, if any)."""
    if not media_ids:
        return {}
    columns = ", ".join(PROBED_FIELDS)
    rows = conn.execute(
        f"SELECT media_id, {columns} FROM videos WHERE media_id IN ? AND blob_key IS NOT NULL "
        "AND status IN ('downloaded', 'framed', 'complete') "
        "QUALIFY row_number() OVER (PARTITION BY media_id ORDER BY partition_key) = 1",
        [media_ids],
    ).fetchall()
    return {row[0]: dict(zip(PROBED_FIELDS, row[1:], strict=True)) for row in rows}


def fetch_video(media_id: str, source: str, url: str, youtube: YouTubeResource, blob_store: BlobStore) -> dict:
    """Download (or, for local files, read) one video, probe it, and store it; return the fields to record.

    Raises:
        VideoSourceError, MediaError, OSError: the reason this video is failed.
    """
    with tempfile.TemporaryDirectory(prefix="download-") as tmp:
        if source == "local":
            path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
        else:
            path = youtube.download(url, Path(tmp))
        probe = probe_video(path)
        key = video_blob_key(media_id, path.suffix)
        uri = blob_store.put_file(key, path)
    return {"blob_key": key, "uri": uri, **dataclasses.asdict(probe)}


@dg.asset(
    partitions_def=keyword_partitions,
    deps=[video_registry],
    group_name="video",
    kinds={"youtube", "duckdb"},
    check_specs=[dg.AssetCheckSpec("downloads_succeeded", asset="raw_videos", blocking=False)],
)
def raw_videos(
    context: dg.AssetExecutionContext,
    config: RawVideosConfig,
    youtube: YouTubeResource,
    blob_store: BlobStore,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """Video files (height capped, video stream only) in the blob store, probed for duration, fps, size, codec."""
    partition_key = context.partition_key
    statuses = ("pending", "failed") if config.retry_failed else ("pending",)
    for attempt in warehouse.retrying():
        with attempt as conn:
            todo = conn.execute(
                "SELECT media_id, source, url FROM videos WHERE partition_key = ? AND status IN ? ORDER BY media_id",
                [partition_key, list(statuses)],
            ).fetchall()
            stored = conn.execute(
                "SELECT media_id, source, url, blob_key FROM videos WHERE partition_key = ? "
                "AND status IN ('downloaded', 'framed', 'complete') ORDER BY media_id",
                [partition_key],
            ).fetchall()
            copies = stored_copies(conn, sorted({row[0] for row in todo + stored}))
    # a stored video whose file went missing is fetched again
    todo += [(m, s, u) for m, s, u, key in stored if not key or not blob_store.exists(key)]
    # a video another keyword already stored is reused, not downloaded again
    reused: dict[str, dict] = {}
    to_fetch = []
    for media_id, source, url in todo:
        copy = copies.get(media_id)
        if copy is not None and blob_store.exists(copy["blob_key"]):
            reused[media_id] = copy
        else:
            to_fetch.append((media_id, source, url))
    if reused:
        for attempt in warehouse.retrying():
            with attempt as conn:
                for media_id, copy in reused.items():
                    set_video_status(conn, partition_key, media_id, "downloaded", None, **copy)

    # each result is recorded as it comes, in its own short transaction: a run that dies keeps what it stored
    failures: list[tuple[str, str]] = []
    downloaded = 0
    workers = max(1, config.max_concurrent_downloads)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download") as pool:
        futures = {
            pool.submit(fetch_video, media_id, source, url, youtube, blob_store): (media_id, url)
            for media_id, source, url in to_fetch
        }
        for future in as_completed(futures):
            media_id, url = futures[future]
            try:
                fields = future.result()
            except Exception as error:  # one bad video never stops the partition; its reason is recorded
                reason = str(error) or type(error).__name__
                context.log.warning(f"{media_id} ({url}) failed: {reason}")
                failures.append((media_id, reason))
                status, error_text, fields = "failed", reason, {}
            else:
                downloaded += 1
                status, error_text = "downloaded", None
            for attempt in warehouse.retrying():
                with attempt as conn:
                    set_video_status(conn, partition_key, media_id, status, error_text, **fields)
    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            record_errors(conn, partition_key, "raw_videos", failures)
            summary = conn.execute(
                "SELECT count(*) FILTER (WHERE status NOT IN ('pending', 'failed')), coalesce(sum(size_bytes), 0), "
                "coalesce(sum(duration_s) FILTER (WHERE status NOT IN ('pending', 'failed')), 0) "
                "FROM videos WHERE partition_key = ?",
                [partition_key],
            ).fetchone()
    return dg.MaterializeResult(
        metadata={
            "downloaded_now": downloaded,
            "reused_from_other_keywords": len(reused),
            "failed_now": len(failures),
            "videos_stored": summary[0],
            "bytes_stored": summary[1],
            "hours_of_video": round(summary[2] / 3600, 3),
            "failures": dg.MetadataValue.json([{"media_id": m, "reason": r} for m, r in failures]),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="downloads_succeeded",
                passed=not failures,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"failed": len(failures), "attempted": len(todo)},
            )
        ],
    )
