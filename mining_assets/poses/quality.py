"""quality_scores: every frame of a keyword scored 0-100 as a pose-training sample (formula in poses/scoring.py).

A frame's measures and IMAGE-mode landmarks depend only on its content and the landmarker settings
(``image_work_key``), never on the keyword or the threshold: a row of any partition with the same ``frame_sha256``
and ``work_key`` is reused (its rating and acceptance taken again from its score under this run's threshold), and
only frames without one are loaded and run through MediaPipe. A frame that failed is tried again on the next run:
errors are not reused.
"""

from collections.abc import Callable
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from mining_assets.checks import nothing_passed, output_check, output_spec
from mining_assets.keyword_settings import stage_config
from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions
from mining_assets.pools import POSE_MODELS
from mining_assets.poses.scoring import (
    DEFAULT_THRESHOLD,
    RATING_NAMES,
    ImageMeasures,
    image_measures,
    quality_score,
    rating,
)
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
from resources.models.pose import LANDMARK_COLUMNS, PoseEstimator, PreparedImage, prepare_image
from resources.warehouse import Warehouse

STAGE = "quality_scores"
MIN_POSE_SIDE = 64  # px: the landmark models look at 256 px crops; smaller frames hold no usable pose
BATCH_SIZE = 2  # frames per worker task; MediaPipe itself takes one image at a time
QUALITY_COLUMNS = [
    "frame_id",
    "media_id",
    "score",
    "rating",
    "accepted",
    "threshold",
    "pose_points",
    "hand_points",
    "lighting_points",
    "sharpness_points",
    "resolution_points",
    "pose_visibility",
    "hands_found",
    "brightness",
    "contrast",
    "sharpness",
    "megapixels",
    *LANDMARK_COLUMNS,
]
# what a stored row gives a frame of the same content and settings; these are taken again from its score under
# the current threshold
RECOMPUTED = ("rating", "accepted", "threshold")
REUSED_COLUMNS = [name for name in QUALITY_COLUMNS if name not in ("frame_id", "media_id", *RECOMPUTED)]
CATALOG = "SELECT frame_id, media_id, blob_key, sha256 FROM frames WHERE partition_key = ? ORDER BY frame_id"
# one stored result per frame of the partition, of any partition (this one's first), by content and settings
STORED_SCORES = f"""
SELECT f.frame_id, {", ".join(f"q.{name}" for name in REUSED_COLUMNS)}
FROM frames f JOIN quality_scores q ON q.frame_sha256 = f.sha256 AND q.work_key = ?
WHERE f.partition_key = ?
QUALIFY row_number() OVER (
    PARTITION BY f.frame_id ORDER BY q.partition_key = f.partition_key DESC, q.partition_key, q.frame_id) = 1
"""


class QualityConfig(dg.Config):
    threshold: float = DEFAULT_THRESHOLD  # a frame is accepted (goes on to `poses`) at or above this score
    min_side: int = MIN_POSE_SIDE  # frames with a smaller side are recorded as too small
    rescore: bool = False  # ignore stored results and run MediaPipe on every frame


def landmarker_settings(estimator: PoseEstimator, video: bool = False) -> dict[str, Any]:
    """What of the pose estimator changes its landmarks: the bundles (``describe()``: names and sha256 prefixes)
    and the detection options; the tracking confidence only in VIDEO mode. Not the device or the cache folder."""
    settings: dict[str, Any] = {
        "models": estimator.describe(),
        "num_poses": estimator.num_poses,
        "num_hands": estimator.num_hands,
        "min_detection_confidence": estimator.min_detection_confidence,
        "min_presence_confidence": estimator.min_presence_confidence,
    }
    if video:
        settings["min_tracking_confidence"] = estimator.min_tracking_confidence
    return settings


def image_work_key(estimator: PoseEstimator, min_side: int) -> str:
    """The key of a frame's measures and IMAGE-mode landmarks: ``quality_scores.work_key``, and that of the photo
    rows ``poses`` copies from it. The acceptance threshold is not part of it (it is applied to the stored score)."""
    return work_key(mode="image", min_side=min_side, **landmarker_settings(estimator))


def stored_scores(warehouse: Warehouse, partition_key: str, key: str) -> dict[str, dict]:
    """Stored results (``REUSED_COLUMNS``) for the partition's frames by frame id: a row of any partition with the
    frame's content and ``key``, this partition's own first; frames without one are left out."""
    return {row.pop("frame_id"): row for row in warehouse.query_dicts(STORED_SCORES, [key, partition_key])}


def reused_row(frame: dict, stored: dict, threshold: float) -> dict:
    """A frame's row from a result of the same content and settings: measures and landmarks as they are, the
    frame's own ids, and the rating and acceptance of the score under ``threshold``."""
    return {
        **stored,
        "frame_id": frame["frame_id"],
        "media_id": frame["media_id"],
        "rating": rating(stored["score"]),
        "accepted": stored["score"] >= threshold,
        "threshold": threshold,
    }


def prepare_for_scoring(images: list) -> list[tuple[PreparedImage, ImageMeasures]]:
    """MediaPipe input and lighting/sharpness/size measures of decoded frames (runs on worker threads)."""
    prepared = []
    for image in images:
        pixels = np.asarray(image, dtype=np.uint8)
        prepared.append((prepare_image(pixels), image_measures(pixels)))
    return prepared


def score_frames(
    frames: list[dict], estimator: PoseEstimator, load: Callable[[dict], Any], threshold: float
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Quality rows of frames (``frame_id``, ``media_id``, ``blob_key``) and the frames that failed with the reason.

    Frames are fetched, decoded and measured on worker threads while MediaPipe runs on the current one.
    """
    rows: list[dict] = []
    errors: list[tuple[str, str]] = []
    for batch in prepared_batches(frames, load, prepare_for_scoring, BATCH_SIZE):
        errors += [(frame["frame_id"], reason) for frame, reason in batch.failed]
        for frame, (prepared, measures) in zip(batch.items, batch.inputs or [], strict=True):
            try:
                found = estimator.detect(prepared)
            except (RuntimeError, ValueError) as error:  # MediaPipe refusing one image loses that frame only
                errors.append((frame["frame_id"], f"pose estimation failed: {type(error).__name__}: {error}"))
                continue
            quality = quality_score(found.visibility, [hand.score for hand in found.hands], measures, threshold)
            rows.append(
                {
                    "frame_id": frame["frame_id"],
                    "media_id": frame["media_id"],
                    **vars(quality),
                    "pose_visibility": found.visibility,
                    "hands_found": len(found.hands),
                    **vars(measures),
                    **found.columns(),  # kept: poses copies a photo's landmarks instead of running MediaPipe again
                }
            )
    return rows, errors


def score_summary(table: pd.DataFrame) -> dict[str, Any]:
    """Counts per rating, score quantiles and a 10-point histogram, for the UI."""
    ratings = {name: int((table["rating"] == name).sum()) for name in RATING_NAMES}
    scores = table["score"].to_numpy(dtype=float)
    if not len(scores):
        return {"ratings": ratings, "quantiles": {}, "histogram": []}
    points = {"min": 0, "p10": 10, "p25": 25, "median": 50, "p75": 75, "p90": 90, "max": 100}
    quantiles = {name: round(float(np.percentile(scores, q)), 2) for name, q in points.items()}
    counts, _ = np.histogram(scores, bins=np.arange(0, 101, 10))
    histogram = [(f"{low}-{low + 10}", int(count)) for low, count in zip(range(0, 100, 10), counts, strict=True)]
    return {
        "ratings": ratings,
        "quantiles": {**quantiles, "mean": round(float(scores.mean()), 2)},
        "histogram": histogram,
    }


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    deps=[dg.AssetKey("frames")],
    group_name="poses",
    kinds={"mediapipe", "duckdb"},
    pool=POSE_MODELS,
    metadata=table_definition_metadata("quality_scores"),
    check_specs=[
        dg.AssetCheckSpec(
            "every_frame_scored",
            asset="quality_scores",
            description="Every catalogued frame has a score within 0-100, or a recorded reason.",
        ),
        unique_key_spec("quality_scores", ["quality_scores"]),
        output_spec("quality_scores", "accepted frames"),
    ],
)
def quality_scores(
    context: dg.AssetExecutionContext,
    config: QualityConfig,
    pose_estimator: PoseEstimator,
    blob_store: BlobStore,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """Every frame scored 0-100 for pose training (pose, hands, lighting, sharpness, resolution) and rated."""
    config, _ = stage_config(context, config, warehouse)
    partition_key = context.partition_key
    frames = warehouse.query_dicts(CATALOG, [partition_key])
    models = key = None
    stored: dict[str, dict] = {}
    if frames:
        models = pose_estimator.describe()  # resolves (or downloads) the bundles only when there is work
        key = image_work_key(pose_estimator, config.min_side)
        if not config.rescore:
            stored = stored_scores(warehouse, partition_key, key)
    by_frame: dict[str, dict] = {}
    todo: list[dict] = []
    for frame in frames:
        if frame["frame_id"] in stored:
            by_frame[frame["frame_id"]] = reused_row(frame, stored[frame["frame_id"]], config.threshold)
        else:
            todo.append(frame)
    errors, computed = [], 0
    if todo:
        load = frame_loader(blob_store, config.min_side)
        fresh, errors = score_frames(todo, pose_estimator, load, config.threshold)
        by_frame |= {row["frame_id"]: row for row in fresh}
        computed = len(fresh)
    rows = [by_frame[frame["frame_id"]] for frame in frames if frame["frame_id"] in by_frame]
    catalog = pd.DataFrame(frames, columns=["frame_id", "media_id", "blob_key", "sha256"])
    table = pd.DataFrame(rows, columns=QUALITY_COLUMNS).assign(partition_key=partition_key, models=models, work_key=key)
    table["frame_sha256"] = table["frame_id"].map(dict(zip(catalog["frame_id"], catalog["sha256"], strict=True)))
    table_meta, unique_key = replace_stage_rows(warehouse, partition_key, "quality_scores", table, STAGE, errors)

    for item, reason in errors[:20]:
        context.log.warning(f"{item}: {reason}")
    accounted = set(table["frame_id"]) | {item for item, _ in errors}
    unaccounted = sorted(set(catalog["frame_id"]) - accounted)
    out_of_range = int((~table["score"].between(0, 100)).sum())  # NaN included
    accepted = int(table["accepted"].sum())
    summary = score_summary(table)
    top = table.sort_values(["score", "frame_id"], ascending=[False, True]).head(10)
    return dg.MaterializeResult(
        metadata={
            **table_meta,
            "frames": len(catalog),
            "scored": len(table),
            "computed_now": computed,  # frames run through MediaPipe in this run
            "reused": len(table) - computed,  # frames whose result came from a stored row of the same content
            "accepted": accepted,
            "failed": len(errors),
            "threshold": config.threshold,
            "models": models or "",
            "work_key": key or "",
            "ratings": dg.MetadataValue.json(summary["ratings"]),
            "score_quantiles": dg.MetadataValue.json(summary["quantiles"]),
            "score_histogram": dg.MetadataValue.md(markdown_table(["score", "frames"], summary["histogram"])),
            "problems": dg.MetadataValue.json([{"item": i, "reason": r} for i, r in errors[:50]]),
            "top_frames": dg.MetadataValue.md(
                markdown_table(
                    ["frame_id", "score", "rating", "pose", "hands", "lighting", "sharpness", "resolution"],
                    top[
                        [
                            "frame_id",
                            "score",
                            "rating",
                            "pose_points",
                            "hand_points",
                            "lighting_points",
                            "sharpness_points",
                            "resolution_points",
                        ]
                    ]
                    .round(2)
                    .values.tolist(),
                )
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="every_frame_scored",
                passed=not unaccounted and out_of_range == 0,
                metadata={
                    "frames_without_score_or_reason": len(unaccounted),
                    "scores_outside_0_100": out_of_range,
                    "unaccounted": dg.MetadataValue.json(unaccounted[:50]),
                },
            ),
            unique_key,
            output_check(len(catalog), accepted, nothing_passed(table["score"], config.threshold, errors), "frames"),
        ],
    )
