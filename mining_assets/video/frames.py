"""video_frames: frames sampled from each downloaded video, stored as JPEG in the blob store."""

import hashlib
import io
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd

from mining_assets.partitions import keyword_partitions, storage_key
from mining_assets.video.downloads import raw_videos
from mining_assets.video.sampling import SamplingError, sample_frames
from mining_assets.warehouse import (
    record_errors,
    replace_partition_rows,
    set_video_status,
    table_definition_metadata,
    table_report,
    unique_key_spec,
)
from resources.blob_store import BlobStore
from resources.warehouse import Warehouse

FRAME_COLUMNS = [
    "partition_key", "keyword", "frame_id", "media_id", "source", "frame_index", "timestamp_s",
    "width", "height", "blob_key", "uri", "sha256",
]  # fmt: skip


class FrameSamplingConfig(dg.Config):
    strategy: Literal["interval", "time", "keyframes"] = "time"
    every_n_frames: int = 30
    every_s: float = 1.0
    max_frames_per_video: int = 300  # 0: no cap
    jpeg_quality: int = 90


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def frame_blob_key(partition_key: str, media_id: str, frame_index: int) -> str:
    return f"frames/{storage_key(partition_key)}/{media_id}/{frame_index:07d}.jpg"


def extract_video_frames(
    path,
    video: dict,
    config: FrameSamplingConfig,
    blob_store: BlobStore,
    pool: ThreadPoolExecutor,
    max_in_flight: int = 4,
) -> tuple[list[dict], str | None]:
    """Sample one video and store its frames; return the frame rows and, if decoding stopped early, why.

    JPEG encoding and storing run on the pool while the next frames decode; at most a few frames are in flight.
    """

    def store(frame) -> dict:
        data = encode_jpeg(frame.image, config.jpeg_quality)
        key = frame_blob_key(video["partition_key"], video["media_id"], frame.index)
        height, width = frame.image.shape[:2]
        return {
            **video,
            "frame_id": f"{video['media_id']}_{frame.index:07d}",
            "frame_index": frame.index,
            "timestamp_s": frame.timestamp_s,
            "width": width,
            "height": height,
            "blob_key": key,
            "uri": blob_store.put_bytes(key, data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    in_flight: deque[Future] = deque()
    rows: list[dict] = []
    stopped: str | None = None
    frames = sample_frames(
        path, config.strategy, config.every_n_frames, config.every_s, config.max_frames_per_video or None
    )
    try:
        for frame in frames:
            in_flight.append(pool.submit(store, frame))
            if len(in_flight) >= max_in_flight:
                rows.append(in_flight.popleft().result())
    except SamplingError as error:
        stopped = str(error)
    finally:
        rows.extend(future.result() for future in in_flight)
    return rows, stopped


@dg.asset(
    partitions_def=keyword_partitions,
    deps=[raw_videos, "media_uploads"],
    group_name="video",
    kinds={"pyav", "duckdb"},
    metadata=table_definition_metadata("video_frames"),
    check_specs=[
        dg.AssetCheckSpec("frames_stored", asset="video_frames"),
        unique_key_spec("video_frames", ["video_frames"]),
    ],
)
def video_frames(
    context: dg.AssetExecutionContext,
    config: FrameSamplingConfig,
    blob_store: BlobStore,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """Frames sampled from each downloaded video (by interval, time or keyframes) as JPEGs, one row per frame."""
    partition_key = context.partition_key
    for attempt in warehouse.retrying():
        with attempt as conn:
            videos = conn.execute(
                "SELECT partition_key, keyword, media_id, source, blob_key FROM videos WHERE partition_key = ? "
                "AND status IN ('downloaded', 'framed', 'complete') ORDER BY media_id",
                [partition_key],
            ).fetchall()
    rows: list[dict] = []
    outcomes: list[tuple[str, str, str | None]] = []
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="jpeg") as pool:
        for pk, keyword, media_id, source, blob_key in videos:
            video = {"partition_key": pk, "keyword": keyword, "media_id": media_id, "source": source}
            try:
                with blob_store.local_path(blob_key) as path:
                    video_rows, stopped = extract_video_frames(path, video, config, blob_store, pool)
            except Exception as error:  # one bad video never stops the partition; its reason is recorded
                outcomes.append((media_id, "failed", str(error) or type(error).__name__))
                context.log.warning(f"{media_id}: {error}")
                continue
            rows += video_rows
            if not video_rows:
                outcomes.append((media_id, "failed", stopped or "no frame could be decoded"))
            else:
                outcomes.append((media_id, "framed", f"partial: {stopped}" if stopped else None))
            context.log.info(f"{media_id}: {len(video_rows)} frames{' (' + stopped + ')' if stopped else ''}")

    frame_rows = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    new_keys = set(frame_rows["blob_key"])
    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            replace_partition_rows(conn, "video_frames", partition_key, frame_rows)
            for media_id, status, error in outcomes:
                set_video_status(conn, partition_key, media_id, status, error)
            record_errors(conn, partition_key, "video_frames", [(m, e) for m, s, e in outcomes if e])
    table, unique = table_report(warehouse, partition_key, "video_frames")
    # only now that the new frames and rows are stored, remove frames of earlier runs that this run did not make
    prefix = f"frames/{storage_key(partition_key)}"
    stored = set(blob_store.list_keys(prefix))
    orphans = blob_store.delete(sorted(stored - new_keys))
    missing = sorted(new_keys - stored)
    return dg.MaterializeResult(
        metadata={
            **table,
            "frames": len(frame_rows),
            "videos_framed": sum(1 for _, s, _ in outcomes if s == "framed"),
            "videos_failed": sum(1 for _, s, _ in outcomes if s == "failed"),
            "strategy": config.strategy,
            "orphans_removed": orphans,
            "problems": dg.MetadataValue.json([{"media_id": m, "reason": e} for m, _, e in outcomes if e]),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="frames_stored",
                passed=not missing,
                metadata={"rows_without_blob": len(missing), "examples": dg.MetadataValue.json(missing[:5])},
            ),
            unique,
        ],
    )
