"""poses: 33 body landmarks and up to two hands for every accepted frame; video frames tracked in time order."""

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from mining_assets.checks import first_reasons, output_check, output_spec
from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions
from mining_assets.pools import POSE_MODELS
from mining_assets.poses.quality import MIN_POSE_SIDE, quality_scores
from mining_assets.retries import STEP_RETRY
from mining_assets.vision.batches import prepared_batches
from mining_assets.vision.common import frame_loader
from mining_assets.warehouse import (
    replace_stage_rows,
    table_definition_metadata,
    unique_key_spec,
)
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
from resources.warehouse import Warehouse

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
       q.models AS scored_with,
       {", ".join(f"q.{name}" for name in LANDMARK_COLUMNS)}
FROM quality_scores q JOIN frames f USING (partition_key, frame_id)
WHERE q.partition_key = ? AND q.accepted
ORDER BY f.media_id, f.timestamp_s NULLS LAST, f.frame_index NULLS LAST, f.frame_id
"""


class PosesConfig(dg.Config):
    min_side: int = MIN_POSE_SIDE


def video_timestamps_ms(seconds: list[float | None]) -> list[int]:
    """Millisecond timestamps for VIDEO mode, strictly increasing: a repeat (or a missing time) is put 1 ms after
    the previous frame, as MediaPipe refuses a timestamp that does not increase."""
    stamps: list[int] = []
    for value in seconds:
        stamp = round(value * 1000) if value is not None and math.isfinite(value) else -1
        stamps.append(max(stamp, stamps[-1] + 1) if stamps else max(stamp, 0))
    return stamps


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


def reusable(frame: dict, models: str) -> bool:
    """Whether a photo's landmarks from quality_scores are what poses would compute: IMAGE mode on the same
    decoded frame with the same bundles (video frames run again, in VIDEO mode with tracking)."""
    return frame["media_type"] == "photo" and frame["scored_with"] == models and frame["image_width"] is not None


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
    sequences: dict[str, list[dict]] = {}
    for frame in frames:
        if frame["media_type"] == "video":
            sequences.setdefault(frame["media_id"], []).append(frame)
    stamps: dict[str, int] = {}
    for sequence in sequences.values():
        seconds = [None if pd.isna(frame.get("timestamp_s")) else frame["timestamp_s"] for frame in sequence]
        stamps |= dict(zip((frame["frame_id"] for frame in sequence), video_timestamps_ms(seconds), strict=True))
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
    partition_key = context.partition_key
    todo = warehouse.query_dicts(ACCEPTED_FRAMES, [partition_key])
    rows, errors, models, counts = [], [], None, {}
    if todo:
        models = pose_estimator.describe()
        for frame in todo:  # photos: quality_scores already ran the same landmarkers on them
            if reusable(frame, models):
                counts[frame["media_id"]] = counts.get(frame["media_id"], 0) + 1
                rows.append(pose_row(frame, counts[frame["media_id"]] - 1))
        rest = [frame for frame in todo if not reusable(frame, models)]
        if rest:
            load = frame_loader(blob_store, config.min_side)
            estimated, errors = estimate_poses(rest, pose_estimator, load, counts)
            rows += estimated
    table = pd.DataFrame(rows).assign(partition_key=partition_key, models=models) if rows else pd.DataFrame()
    if rows:
        table["frame_sha256"] = table["frame_id"].map({frame["frame_id"]: frame["sha256"] for frame in todo})
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
            "reused_from_quality": sum(reusable(frame, models) for frame in todo),
            "with_pose": with_pose,
            "with_hands": sum(row["left_hand"] is not None or row["right_hand"] is not None for row in rows),
            "left_hands": sum(row["left_hand"] is not None for row in rows),
            "right_hands": sum(row["right_hand"] is not None for row in rows),
            "media_items": len({row["media_id"] for row in rows}),
            "video_sequences": len(videos),
            "failed": len(errors),
            "models": models or "",
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
