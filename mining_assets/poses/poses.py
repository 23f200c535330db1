"""poses: 33 body landmarks and up to two hands for every accepted frame; video frames tracked in time order.

Work is keyed by content and settings. A photo takes the IMAGE-mode landmarks quality_scores found for it when its
quality row's ``work_key`` is the one this run would compute (``image_work_key``), else those of a stored ``poses``
row of the same content and key, else it runs in IMAGE mode. A video's frames are tracked in VIDEO mode, so each
frame's result depends on the frames fed before it: a video is keyed as a whole (``sequence_work_key``: the
settings, the media item and its accepted frames' content and timestamps in the order they are fed) and a complete
stored run of the same key, of any partition, is reused; a video whose accepted sequence changed, or whose last run
lost a frame (errors are not reused), runs again, from its first frame.
"""

import contextlib
import math
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from mining_assets.checks import first_reasons, output_check, output_spec
from mining_assets.keyword_settings import stage_config
from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions
from mining_assets.pools import POSE_MODELS
from mining_assets.poses.quality import MIN_POSE_SIDE, image_work_key, landmarker_settings, quality_scores
from mining_assets.retries import STEP_RETRY
from mining_assets.vision.batches import prepared_batches
from mining_assets.vision.common import frame_loader
from mining_assets.warehouse import (
    replace_stage_rows,
    table_definition_metadata,
    unique_key_spec,
)
from mining_assets.work import work_key
from resources.blob_store import BlobStore
from resources.models.pose import (
    HAND_LANDMARKS,
    LANDMARK_COLUMNS,
    NOSE,
    POSE_LANDMARKS,
    PoseEstimator,
    PoseResult,
    VideoSequence,
)
from resources.warehouse import Warehouse, query_dicts

STAGE = "poses"
BATCH_SIZE = 2
LENGTHS = {
    "pose_landmarks": POSE_LANDMARKS * 4,
    "pose_world_landmarks": POSE_LANDMARKS * 3,
    "left_hand": HAND_LANDMARKS * 3,
    "right_hand": HAND_LANDMARKS * 3,
}
ACCEPTED_FRAMES = f"""
SELECT f.frame_id, f.media_id, f.media_type, f.frame_index, f.timestamp_s, f.blob_key, f.sha256,
       q.work_key AS scored_key,
       {", ".join(f"q.{name}" for name in LANDMARK_COLUMNS)}
FROM quality_scores q JOIN frames f USING (partition_key, frame_id)
WHERE q.partition_key = ? AND q.accepted
ORDER BY f.media_id, f.timestamp_s NULLS LAST, f.frame_index NULLS LAST, f.frame_id
"""
STORED_LANDMARKS = ", ".join(f"p.{name}" for name in LANDMARK_COLUMNS)
# stored video rows of the sequences this run would feed (``_wanted``: work_key, frame_sha256, sequence_index)
STORED_SEQUENCES = f"""
SELECT p.partition_key AS stored_in, p.work_key, p.sequence_index, {STORED_LANDMARKS}
FROM poses p JOIN _wanted w USING (work_key, frame_sha256, sequence_index)
WHERE p.media_type = 'video'
"""
# one stored IMAGE-mode row per photo content (``_photos``: frame_sha256) with the key, this partition's first
STORED_PHOTOS = f"""
SELECT p.frame_sha256, {STORED_LANDMARKS}
FROM poses p JOIN _photos USING (frame_sha256)
WHERE p.media_type = 'photo' AND p.work_key = ?
QUALIFY row_number() OVER (PARTITION BY p.frame_sha256 ORDER BY p.partition_key = ? DESC, p.partition_key) = 1
"""


class PosesConfig(dg.Config):
    min_side: int = MIN_POSE_SIDE
    rescore: bool = False  # ignore stored poses and run MediaPipe again (photos still take quality_scores')


def video_timestamps_ms(seconds: list[float | None]) -> list[int]:
    """Millisecond timestamps for VIDEO mode, strictly increasing: a repeat (or a missing time) is put 1 ms after
    the previous frame, as MediaPipe refuses a timestamp that does not increase."""
    stamps: list[int] = []
    for value in seconds:
        stamp = round(value * 1000) if value is not None and math.isfinite(value) else -1
        stamps.append(max(stamp, stamps[-1] + 1) if stamps else max(stamp, 0))
    return stamps


def video_sequences(frames: list[dict]) -> dict[str, list[dict]]:
    """The video frames of each media item, in the order given (time order, as ``ACCEPTED_FRAMES`` reads them)."""
    sequences: dict[str, list[dict]] = {}
    for frame in frames:
        if frame["media_type"] == "video":
            sequences.setdefault(frame["media_id"], []).append(frame)
    return sequences


def sequence_stamps(sequence: list[dict]) -> list[int]:
    """The VIDEO-mode timestamps (ms) a video's frames are fed at."""
    return video_timestamps_ms(
        [None if pd.isna(frame.get("timestamp_s")) else frame["timestamp_s"] for frame in sequence]
    )


def sequence_work_key(settings: dict[str, Any], media_id: str, sequence: list[dict]) -> str:
    """The key of a video's tracked landmarks: the VIDEO-mode settings, the media item, and each frame it is fed
    (content and timestamp), in order."""
    fed = [[frame["sha256"], stamp] for frame, stamp in zip(sequence, sequence_stamps(sequence), strict=True)]
    return work_key(mode="video", media_id=media_id, frames=fed, **settings)


def query_with(conn: Any, sql: str, params: list, **frames: pd.DataFrame) -> list[dict]:
    """Rows of a query (as dicts) that reads DataFrames registered under the given names."""
    for name, frame in frames.items():
        conn.register(name, frame)
    try:
        return query_dicts(conn, sql, params)
    finally:
        for name in frames:
            conn.unregister(name)


def stored_poses(
    warehouse: Warehouse, partition_key: str, wanted: dict[str, list[dict]], image_key: str, photos: list[str]
) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """Stored landmarks, of any partition (this one's first): for each sequence key (``wanted``: key -> the frames
    it is fed) a complete run of it, one per frame in order; and for each photo content (``photos``: sha256) a row
    with ``image_key``. A run that lost a frame is incomplete, and the sequence runs again."""
    lookup = pd.DataFrame(
        [(key, frame["sha256"], index) for key, sequence in wanted.items() for index, frame in enumerate(sequence)],
        columns=["work_key", "frame_sha256", "sequence_index"],
    )
    contents = pd.DataFrame({"frame_sha256": sorted(set(photos))})
    rows: list[dict] = []
    stored_photos: list[dict] = []
    for attempt in warehouse.retrying():
        with attempt as conn:
            if len(lookup):
                rows = query_with(conn, STORED_SEQUENCES, [], _wanted=lookup)
            if len(contents):
                stored_photos = query_with(conn, STORED_PHOTOS, [image_key, partition_key], _photos=contents)
    runs: dict[tuple[str, str], dict[int, dict]] = {}
    for row in rows:
        runs.setdefault((row.pop("stored_in"), row.pop("work_key")), {})[row.pop("sequence_index")] = row
    sequences: dict[str, list[dict]] = {}
    for (_, key), run in sorted(runs.items(), key=lambda item: (item[0][0] != partition_key, item[0])):
        if key not in sequences and len(run) == len(wanted[key]):
            sequences[key] = [run[index] for index in range(len(run))]
    return sequences, {row.pop("frame_sha256"): row for row in stored_photos}


def frame_work_keys(frames: list[dict], image_key: str, video_settings: dict[str, Any]) -> dict[str, str]:
    """Each frame's ``work_key`` (frame_id -> key): a photo's is its IMAGE-mode key (that of its quality row when
    its landmarks are copied), a video frame's the key of its video's whole sequence."""
    keys = {frame["frame_id"]: image_key for frame in frames if frame["media_type"] != "video"}
    for media_id, sequence in video_sequences(frames).items():
        key = sequence_work_key(video_settings, media_id, sequence)
        keys |= {frame["frame_id"]: key for frame in sequence}
    return keys


def reuse_stored(
    frames: list[dict],
    image_key: str,
    keys: dict[str, str],
    sequences: dict[str, list[dict]],
    photos: dict[str, dict],
) -> tuple[list[dict], list[dict]]:
    """Rows of the frames whose result is stored and the frames left to run, in the order given. A photo takes its
    quality row's landmarks (``reusable``), else a stored ``poses`` row of its content (``photos``: sha256 ->
    landmarks); a video takes a complete stored run of its sequence key (``sequences``), else all of it runs."""
    rows: list[dict] = []
    rest: list[dict] = []
    counts: Counter[str] = Counter()
    for frame in frames:
        if frame["media_type"] == "video":
            if keys[frame["frame_id"]] not in sequences:
                rest.append(frame)
            continue
        if not reusable(frame, image_key) and frame["sha256"] not in photos:
            rest.append(frame)
            continue
        landmarks = {} if reusable(frame, image_key) else photos[frame["sha256"]]
        rows.append(pose_row(frame | landmarks, counts[frame["media_id"]]))
        counts[frame["media_id"]] += 1
    for sequence in video_sequences(frames).values():
        run = sequences.get(keys[sequence[0]["frame_id"]])
        if run is not None:
            rows += [
                pose_row(frame | found, index) for index, (frame, found) in enumerate(zip(sequence, run, strict=True))
            ]
    return rows, rest


def pose_row(frame: dict, sequence_index: int, found: PoseResult | None = None) -> dict:
    """One ``poses`` row: landmarks as flat float lists, NULL where nothing was found. Without ``found`` the
    landmarks are those the frame row already carries (a photo's, as quality_scores found them)."""
    timestamp = frame.get("timestamp_s")
    landmarks = found.columns() if found is not None else {name: frame[name] for name in LANDMARK_COLUMNS}
    return {
        "frame_id": frame["frame_id"],
        "media_id": frame["media_id"],
        "media_type": frame["media_type"],
        "sequence_index": sequence_index,
        "timestamp_s": None if timestamp is None or pd.isna(timestamp) else float(timestamp),
        **landmarks,
    }


def reusable(frame: dict, image_key: str) -> bool:
    """Whether a photo's landmarks from quality_scores are what poses would compute: IMAGE mode on the same
    decoded frame with the same settings (``image_key``; video frames are tracked in VIDEO mode instead)."""
    return frame["media_type"] == "photo" and frame["scored_key"] == image_key and frame["image_width"] is not None


def estimate_poses(
    frames: list[dict], estimator: PoseEstimator, load: Callable[[dict], Any], counts: dict[str, int] | None = None
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Pose rows of frames grouped per media item (``media_id``, ``media_type``, ``timestamp_s``, ``blob_key``; video
    frames in time order) and the frames that failed with the reason. Frames decode on worker threads meanwhile.
    ``counts`` (media_id -> rows already made) continues the items' sequence indexes.

    Photos run in IMAGE mode, each on its own. A video's frames run in VIDEO mode: the landmarkers track the person
    and hands from frame to frame (the region found in one frame seeds the next, and the detector runs again only
    when tracking is lost), which keeps landmarks temporally consistent (less jitter, the same person followed)
    where independent detections would jump between people or drop a hand. Tracking needs strictly increasing
    timestamps and can't be rewound, so every video gets fresh landmarkers.
    """
    stamps: dict[str, int] = {}
    for sequence in video_sequences(frames).values():
        stamps |= dict(zip((frame["frame_id"] for frame in sequence), sequence_stamps(sequence), strict=True))
    rows: list[dict] = []
    errors: list[tuple[str, str]] = []
    counts = dict(counts or {})
    with contextlib.ExitStack() as stack:
        current: tuple[str | None, VideoSequence | None] = (None, None)
        for batch in prepared_batches(frames, load, estimator.prepare, BATCH_SIZE):
            errors += [(frame["frame_id"], reason) for frame, reason in batch.failed]
            for frame, prepared in zip(batch.items, batch.inputs or [], strict=True):
                try:
                    if frame["media_type"] == "video":
                        if current[0] != frame["media_id"]:
                            stack.close()  # the previous video's landmarkers
                            current = (frame["media_id"], stack.enter_context(estimator.video()))
                        found = current[1].detect(prepared, stamps[frame["frame_id"]])
                    else:
                        found = estimator.detect(prepared)
                except (RuntimeError, ValueError) as error:  # one frame MediaPipe refuses; the rest goes on
                    errors.append((frame["frame_id"], f"pose estimation failed: {type(error).__name__}: {error}"))
                    continue
                index = counts.get(frame["media_id"], 0)
                counts[frame["media_id"]] = index + 1
                rows.append(pose_row(frame, index, found))
    return rows, errors


def landmark_problems(rows: list[dict]) -> list[str]:
    """Rows whose landmark lists have the wrong length or a non-finite x or y (empty: all good)."""
    problems = []
    for row in rows:
        for column, length in LENGTHS.items():
            values = row[column]
            if values is None:
                if column.startswith("pose") and row["pose_found"]:
                    problems.append(f"{row['frame_id']}: {column} missing although a pose was found")
                continue
            width = 4 if column == "pose_landmarks" else 3
            points = np.asarray(values, dtype=np.float64)
            if points.size != length:
                problems.append(f"{row['frame_id']}: {column} has {points.size} values, expected {length}")
            elif not np.isfinite(points.reshape(-1, width)[:, :2]).all():
                problems.append(f"{row['frame_id']}: {column} has non-finite x or y")
    return problems


def iter_sample(rows: list[dict], count: int = 10) -> Iterator[list]:
    for row in rows[:count]:
        nose = row["pose_landmarks"][NOSE * 4 : NOSE * 4 + 2] if row["pose_landmarks"] else [None, None]
        yield [
            row["frame_id"],
            row["media_id"],
            row["sequence_index"],
            row["timestamp_s"],
            row["pose_found"],
            *(None if v is None else round(v, 3) for v in nose),
            row["left_hand"] is not None,
            row["right_hand"] is not None,
        ]


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    deps=[quality_scores],
    group_name="poses",
    kinds={"mediapipe", "duckdb"},
    pool=POSE_MODELS,
    metadata=table_definition_metadata("poses"),
    check_specs=[
        dg.AssetCheckSpec(
            "landmarks_well_formed",
            asset="poses",
            description="Every pose row's landmark lists have the models' lengths (33 points, 21 a hand), finite x, y.",
        ),
        unique_key_spec("poses", ["poses"]),
        output_spec("poses", "frames with a pose"),
    ],
)
def poses(
    context: dg.AssetExecutionContext,
    config: PosesConfig,
    pose_estimator: PoseEstimator,
    blob_store: BlobStore,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """Pose (33 landmarks, world coordinates) and hand landmarks of every accepted frame, video frames tracked."""
    config, _ = stage_config(context, config, warehouse)
    partition_key = context.partition_key
    todo = warehouse.query_dicts(ACCEPTED_FRAMES, [partition_key])
    rows, errors, models, image_key, keys = [], [], None, None, {}
    copied, reused_videos, ran_videos, computed = set(), set(), set(), 0
    if todo:
        models = pose_estimator.describe()
        image_key = image_work_key(pose_estimator, config.min_side)
        settings = {"min_side": config.min_side, **landmarker_settings(pose_estimator, video=True)}
        keys = frame_work_keys(todo, image_key, settings)
        wanted = {keys[frames[0]["frame_id"]]: frames for frames in video_sequences(todo).values()}
        photos = [f["sha256"] for f in todo if f["media_type"] != "video" and not reusable(f, image_key)]
        sequences, stored_photos = {}, {}
        if not config.rescore and (wanted or photos):
            sequences, stored_photos = stored_poses(warehouse, partition_key, wanted, image_key, photos)
        rows, rest = reuse_stored(todo, image_key, keys, sequences, stored_photos)
        copied = {frame["frame_id"] for frame in todo if reusable(frame, image_key)}
        reused_videos = {row["media_id"] for row in rows if row["media_type"] == "video"}
        ran_videos = {frame["media_id"] for frame in rest if frame["media_type"] == "video"}
        if rest:
            load = frame_loader(blob_store, config.min_side)
            fresh, errors = estimate_poses(rest, pose_estimator, load, Counter(row["media_id"] for row in rows))
            rows, computed = rows + fresh, len(fresh)
    table = pd.DataFrame(rows).assign(partition_key=partition_key, models=models) if rows else pd.DataFrame()
    if rows:
        table["frame_sha256"] = table["frame_id"].map({frame["frame_id"]: frame["sha256"] for frame in todo})
        table["work_key"] = table["frame_id"].map(keys)
    table_meta, unique_key = replace_stage_rows(warehouse, partition_key, "poses", table, STAGE, errors)

    for item, reason in errors[:20]:
        context.log.warning(f"{item}: {reason}")
    problems = landmark_problems(rows)
    videos = {row["media_id"] for row in rows if row["media_type"] == "video"}
    with_pose = sum(row["pose_found"] for row in rows)
    return dg.MaterializeResult(
        metadata={
            **table_meta,
            "accepted_frames": len(todo),
            "frames": len(rows),
            "computed_now": computed,  # frames run through MediaPipe in this run
            "reused": len(rows) - computed,  # frames whose result came from stored rows (quality_scores' or poses')
            "reused_from_quality": len(copied),
            "with_pose": with_pose,
            "with_hands": sum(row["left_hand"] is not None or row["right_hand"] is not None for row in rows),
            "left_hands": sum(row["left_hand"] is not None for row in rows),
            "right_hands": sum(row["right_hand"] is not None for row in rows),
            "media_items": len({row["media_id"] for row in rows}),
            "video_sequences": len(videos),
            "video_sequences_computed_now": len(ran_videos),
            "video_sequences_reused": len(reused_videos),
            "failed": len(errors),
            "models": models or "",
            "photo_work_key": image_key or "",
            "problems": dg.MetadataValue.json([{"item": i, "reason": r} for i, r in errors[:50]]),
            "sample": dg.MetadataValue.md(
                markdown_table(
                    ["frame_id", "media_id", "seq", "t (s)", "pose", "nose x", "nose y", "left hand", "right hand"],
                    list(iter_sample(rows)),
                    "_no poses_",
                )
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="landmarks_well_formed",
                passed=not problems,
                metadata={"problems": len(problems), "examples": dg.MetadataValue.json(problems[:20])},
            ),
            unique_key,
            output_check(
                len(todo),
                with_pose,
                f"no person found in any of {len(rows)} frames" + first_reasons(errors),
                upstream="quality_scores (accepted frames)",
            ),
        ],
    )
