"""video_frames: frames sampled from each of a keyword's videos, stored as JPEG once per video and sampling settings."""

import hashlib
import io
import json
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd

from mining_assets.checks import first_reasons, missing_blobs, output_check, output_spec
from mining_assets.keyword_settings import stage_config
from mining_assets.partitions import keyword_partitions
from mining_assets.retries import STEP_RETRY
from mining_assets.sources.media import media
from mining_assets.video.sampling import DecodedFrame, SamplingError, select_frames
from mining_assets.warehouse import (
    insert_rows,
    query_dicts,
    replace_stage_rows,
    table_definition_metadata,
    unique_key_spec,
)
from resources.blob_store import BlobStore
from resources.faults import InfrastructureError
from resources.warehouse import Warehouse

STAGE = "video_frames"
OWNED = ["keyword_samples", "video_samples", "video_frames"]  # covered by the `unique_key` check
FRAME_COLUMNS = ["media_id", "sampling", "frame_index", "frame_id", "timestamp_s", "width", "height", "blob_key",
                 "uri", "sha256"]  # fmt: skip
SAMPLE_COLUMNS = ["media_id", "sampling", "strategy", "every_n_frames", "every_s", "max_frames", "jpeg_quality",
                  "frames", "stopped"]  # fmt: skip


class FrameSamplingConfig(dg.Config):
    strategy: Literal["interval", "time", "keyframes"] = "time"
    every_n_frames: int = 30
    every_s: float = 1.0
    max_frames_per_video: int = 300  # 0: no cap
    jpeg_quality: int = 90


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """An RGB array (HxWx3) as a JPEG (libjpeg quality 1-100, 4:2:0 chroma)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_frame_jpeg(frame: DecodedFrame, quality: int = 90) -> bytes:
    """A decoded video frame as a JPEG: the same image and settings as ``encode_jpeg`` of its RGB array.

    One colour conversion (YUV to BGR, as the frame's range and matrix tags say) and OpenCV's libjpeg-turbo, which
    takes BGR as it is: the same quantisation tables and 4:2:0 chroma as PIL (byte for byte the same file with the
    libjpeg-turbo of Pillow 13 and OpenCV 4.14), for less CPU than PIL from RGB (1.07 against 1.22 ms for a
    640x480 photo). FFmpeg's own JPEG encoder, fed the decoder's YUV without a conversion, took 2.2 ms for the
    same PSNR.
    """
    import cv2

    ok, data = cv2.imencode(".jpg", frame.to_ndarray("bgr24"), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for frame {frame.index}")
    return data.tobytes()


def settings_of(config: FrameSamplingConfig) -> dict:
    """The settings that decide a sample's frames (and so its id)."""
    return {"strategy": config.strategy, "every_n_frames": config.every_n_frames, "every_s": float(config.every_s),
            "max_frames": config.max_frames_per_video, "jpeg_quality": config.jpeg_quality}  # fmt: skip


def sampling_id(config: FrameSamplingConfig) -> str:
    """``s`` and the first 12 hex of sha256 of the settings: one sample per media item and settings."""
    text = json.dumps(settings_of(config), sort_keys=True)
    return "s" + hashlib.sha256(text.encode()).hexdigest()[:12]


def frame_blob_key(media_id: str, sampling: str, frame_index: int) -> str:
    """Frames belong to their media item and sampling, whatever keywords use them."""
    return f"frames/{media_id}/{sampling}/{frame_index:07d}.jpg"


def extract_video_frames(
    path,
    video: dict,
    config: FrameSamplingConfig,
    blob_store: BlobStore,
    pool: ThreadPoolExecutor,
    max_in_flight: int = 4,
) -> tuple[list[dict], str | None]:
    """Sample one video and store its frames; return the frame rows and, if decoding stopped early, why.

    Colour conversion, JPEG encoding and storing run on the pool while the next frames decode (work on the decoding
    thread holds the decoder's frame threads back); frames that are not kept are never converted, and at most a
    few kept ones are in flight.
    """

    def store(frame: DecodedFrame) -> dict:
        data = encode_frame_jpeg(frame, config.jpeg_quality)
        key = frame_blob_key(video["media_id"], video["sampling"], frame.index)
        width, height = frame.width, frame.height
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
    frames = select_frames(
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


def sample_is_whole(sample: dict | None, frame_keys: list[str], blob_store: BlobStore) -> bool:
    """Whether a stored sample can be used as it is: recorded, and every frame file still in the store (one listing
    of the sample's own folder, not a look-up per frame)."""
    return sample is not None and not missing_blobs(blob_store, frame_keys)


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    deps=[media],
    group_name="video",
    kinds={"pyav", "duckdb"},
    metadata=table_definition_metadata("video_frames"),
    check_specs=[
        dg.AssetCheckSpec(
            "frames_stored",
            asset="video_frames",
            description="Every frame of the keyword's video samples, reused ones included, has its JPEG stored.",
        ),
        unique_key_spec("video_frames", OWNED),
        output_spec("video_frames", "frames"),
    ],
)
def video_frames(
    context: dg.AssetExecutionContext,
    config: FrameSamplingConfig,
    blob_store: BlobStore,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """Frames sampled from each of the keyword's videos (by interval, time or keyframes) as JPEGs, once per video
    and sampling settings whatever keywords use them."""
    config, _ = stage_config(context, config, warehouse)
    partition_key = context.partition_key
    sampling = sampling_id(config)
    for attempt in warehouse.retrying():
        with attempt as conn:
            videos = query_dicts(
                conn,
                "SELECT DISTINCT m.media_id, m.blob_key FROM keyword_media k JOIN media m USING (media_id) "
                "WHERE k.partition_key = ? AND m.media_type = 'video' ORDER BY m.media_id",
                [partition_key],
            )
            ids = [video["media_id"] for video in videos]
            samples = {row["media_id"]: row for row in query_dicts(
                conn, "SELECT * FROM video_samples WHERE sampling = ? AND media_id IN (SELECT unnest(?::VARCHAR[]))",
                [sampling, ids])}  # fmt: skip
            frame_keys: dict[str, list[str]] = {}
            for media_id, key in conn.execute(
                "SELECT media_id, blob_key FROM video_frames WHERE sampling = ? AND media_id IN "
                "(SELECT unnest(?::VARCHAR[]))",
                [sampling, ids],
            ).fetchall():
                frame_keys.setdefault(media_id, []).append(key)
            deleted = {media_id for (media_id,) in conn.execute(
                "SELECT media_id FROM deleted_sources WHERE media_id IN (SELECT unnest(?::VARCHAR[]))", [ids]
            ).fetchall()}  # fmt: skip
    new_frames: list[dict] = []
    new_samples: list[dict] = []
    outcomes: list[tuple[str, int, str | None]] = []  # (media_id, frames, problem)
    reused = 0
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="jpeg") as pool:
        for video in videos:
            media_id = video["media_id"]
            sample = samples.get(media_id)
            if sample_is_whole(sample, frame_keys.get(media_id, []), blob_store):
                reused += 1  # sampled before, for this or another keyword: nothing to decode
                outcomes.append((media_id, sample["frames"], f"partial: {sample['stopped']}" if sample["stopped"]
                                 else None))  # fmt: skip
                continue
            # its original went once its extraction was verified: never sampled again
            if media_id in deleted and not blob_store.exists(video["blob_key"]):
                if sample is not None:  # its frames are what remains: used as they are, the missing ones named
                    reused += 1
                    lost = len(missing_blobs(blob_store, frame_keys.get(media_id, [])))
                    outcomes.append((media_id, sample["frames"], f"source deleted; {lost} frame file(s) missing"))
                else:
                    outcomes.append((media_id, 0, "source deleted (deleted_sources) before it was sampled with "
                                                  f"these settings ({sampling})"))  # fmt: skip
                continue
            try:
                with blob_store.local_path(video["blob_key"]) as path:
                    rows, stopped = extract_video_frames(
                        path, {"media_id": media_id, "sampling": sampling}, config, blob_store, pool
                    )
            except InfrastructureError:  # the store failed, not the video: the step fails, earlier rows stay
                raise
            except Exception as error:  # one bad video never stops the partition; its reason is recorded
                outcomes.append((media_id, 0, str(error) or type(error).__name__))
                context.log.warning(f"{media_id}: {error}")
                continue
            if not rows:
                outcomes.append((media_id, 0, stopped or "no frame could be decoded"))
                continue
            new_frames += rows
            new_samples.append({"media_id": media_id, "sampling": sampling, **settings_of(config),
                                "frames": len(rows), "stopped": stopped})  # fmt: skip
            outcomes.append((media_id, len(rows), f"partial: {stopped}" if stopped else None))
            context.log.info(f"{media_id}: {len(rows)} frames{' (' + stopped + ')' if stopped else ''}")

    frame_rows = pd.DataFrame(new_frames, columns=FRAME_COLUMNS)
    sample_rows = pd.DataFrame(new_samples, columns=SAMPLE_COLUMNS)
    members = pd.DataFrame(
        [(partition_key, media_id, sampling) for media_id, count, _ in outcomes if count],
        columns=["partition_key", "media_id", "sampling"],
    )
    problems = [(media_id, problem) for media_id, _, problem in outcomes if problem]
    if len(sample_rows):
        # samples are shared by every keyword: two keywords storing one sample take turns on its lease, held for
        # this write alone
        leases = [f"video_samples:{media_id}:{sampling}" for media_id in sample_rows["media_id"]]
        for attempt in warehouse.retrying(lease=leases):
            with attempt as conn:
                # a sample that another keyword stored meanwhile is replaced by this one, which is the same (same
                # video, same settings, same encoder, same keys): it is stored once whoever got there first
                conn.execute(
                    "DELETE FROM video_frames WHERE sampling = ? AND media_id IN (SELECT unnest(?::VARCHAR[]))",
                    [sampling, list(sample_rows["media_id"])],
                )
                conn.execute(
                    "DELETE FROM video_samples WHERE sampling = ? AND media_id IN (SELECT unnest(?::VARCHAR[]))",
                    [sampling, list(sample_rows["media_id"])],
                )
                insert_rows(conn, "video_samples", sample_rows)
                insert_rows(conn, "video_frames", frame_rows)
    table, unique = replace_stage_rows(warehouse, partition_key, "keyword_samples", members, STAGE, problems,
                                       owned=OWNED)  # fmt: skip
    for attempt in warehouse.retrying():
        with attempt as conn:  # every frame the keyword's samples refer to, not only those decoded now
            keys = [key for (key,) in conn.execute(
                "SELECT f.blob_key FROM keyword_samples s JOIN video_frames f USING (media_id, sampling) "
                "WHERE s.partition_key = ?", [partition_key]).fetchall()]  # fmt: skip
    missing = missing_blobs(blob_store, keys)
    frames = int(sum(count for _, count, _ in outcomes))
    return dg.MaterializeResult(
        metadata={
            **table,
            "frames": frames,
            "frames_decoded_now": len(frame_rows),
            "videos_sampled_now": len(sample_rows),
            "videos_reused": reused,
            "videos_failed": sum(1 for _, count, _ in outcomes if not count),
            "sampling": sampling,
            "settings": dg.MetadataValue.json(settings_of(config)),
            "problems": dg.MetadataValue.json([{"media_id": m, "reason": p} for m, _, p in outcomes if p]),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="frames_stored",
                passed=not missing,
                metadata={
                    "frame_rows": len(keys),
                    "rows_without_blob": len(missing),
                    "examples": dg.MetadataValue.json(missing[:5]),
                },
            ),
            unique,
            # a keyword of photos has no video: nothing to warn of (media warns when a keyword has nothing at all)
            output_check(
                len(videos), frames, "no video gave a frame" + first_reasons(problems), "media (videos)", optional=True
            ),
        ],
    )
