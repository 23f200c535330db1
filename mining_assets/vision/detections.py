"""detections: open-vocabulary boxes on every unique frame, for the keyword and the filter's classes."""

from collections.abc import Callable
from typing import Any

import dagster as dg
import pandas as pd

from mining_assets.checks import first_reasons, output_check, output_spec
from mining_assets.partitions import keyword_partitions
from mining_assets.pools import VISION_MODELS
from mining_assets.retries import STEP_RETRY
from mining_assets.vision.batches import prepared_batches
from mining_assets.vision.common import frame_loader
from mining_assets.vision.images import MIN_SIDE
from mining_assets.vision.unique import unique_frames
from mining_assets.warehouse import (
    keyword_text,
    replace_stage_rows,
    table_definition_metadata,
    unique_key_spec,
)
from resources.blob_store import BlobStore
from resources.models.detector import OUTSIDE_TOLERANCE, Detections, OpenVocabDetector
from resources.warehouse import Warehouse

DETECTION_COLUMNS = ["frame_id", "detection_index", "label", "score", "x0", "y0", "x1", "y1",
                     "image_width", "image_height"]  # fmt: skip


class DetectionConfig(dg.Config):
    labels: list[str] | None = None  # None: the keyword and the classes filtered_frames scored
    threshold: float = 0.3
    min_side: int = MIN_SIDE


def detection_labels(conn, partition_key: str, config: DetectionConfig) -> list[str]:
    """Labels from config, else the filter's classes, else the keyword; blanks and repeats dropped."""
    if config.labels is not None:
        labels = config.labels
    else:
        labels = [row[0] for row in conn.execute(
            "SELECT label FROM prompt_sets WHERE partition_key = ? AND kind = 'class' ORDER BY rowid", [partition_key]
        ).fetchall()] or [keyword_text(conn, partition_key)]  # fmt: skip
    cleaned = [" ".join(label.split()) for label in labels]
    return list(dict.fromkeys(label for label in cleaned if label))


def box_rows(frame_id: str, boxes: Detections, width: int, height: int) -> list[dict]:
    """Warehouse rows of one frame's detections."""
    return [
        {
            "frame_id": frame_id,
            "detection_index": i,
            "label": label,
            "score": float(score),
            "x0": float(x0),
            "y0": float(y0),
            "x1": float(x1),
            "y1": float(y1),
            "image_width": width,
            "image_height": height,
        }
        for i, ((x0, y0, x1, y1), score, label) in enumerate(zip(boxes.boxes, boxes.scores, boxes.labels, strict=True))
    ]


def detect_frames(
    frames: list[dict], detector: OpenVocabDetector, load: Callable[[dict], Any], labels: list[str], threshold: float
) -> tuple[list[dict], list[tuple[str, str]], int, list[tuple[str, int, int]]]:
    """Detection rows of the frames, the frames that failed with the reason, how many frames had no box, and
    (frame_id, beyond the image, degenerate) for each frame the model returned such boxes for, before clipping."""
    rows: list[dict] = []
    errors: list[tuple[str, str]] = []
    empty_frames = 0
    raw_problems: list[tuple[str, int, int]] = []
    batches = prepared_batches(frames, load, lambda images: detector.prepare(images, labels), detector.batch_size)
    for batch in batches:
        errors += [(frame["frame_id"], reason) for frame, reason in batch.failed]
        if not batch.items:
            continue
        sizes = [image.size for image in batch.images]
        found = detector.detect_prepared(batch.inputs, sizes, labels, threshold)
        for frame, (width, height), boxes in zip(batch.items, sizes, found, strict=True):
            empty_frames += len(boxes) == 0
            rows += box_rows(frame["frame_id"], boxes, width, height)
            if boxes.raw_outside or boxes.raw_degenerate:
                raw_problems.append((frame["frame_id"], boxes.raw_outside, boxes.raw_degenerate))
    return rows, errors, empty_frames, raw_problems


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    deps=[unique_frames],
    group_name="vision",
    kinds={"pytorch", "duckdb"},
    pool=VISION_MODELS,
    metadata=table_definition_metadata("detections"),
    check_specs=[
        dg.AssetCheckSpec(
            "boxes_inside_image",
            asset="detections",
            description=f"Warns when the detector returned boxes beyond the image by over {OUTSIDE_TOLERANCE:.0%} "
            "of its longer side, or degenerate ones (no area, NaN), before they were clipped or dropped.",
        ),
        unique_key_spec("detections", ["detections"]),
        output_spec("detections", "boxes"),
    ],
)
def detections(
    context: dg.AssetExecutionContext,
    config: DetectionConfig,
    detector: OpenVocabDetector,
    blob_store: BlobStore,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """Boxes (pixels), score and label per unique frame from an open-vocabulary detector (Grounding DINO default)."""
    partition_key = context.partition_key
    for attempt in warehouse.retrying():
        with attempt as conn:
            labels = detection_labels(conn, partition_key, config)
            todo = conn.execute(
                "SELECT f.frame_id, f.blob_key, f.sha256 FROM unique_frames u "
                "JOIN frames f USING (partition_key, frame_id) "
                "WHERE u.partition_key = ? AND u.kept ORDER BY f.frame_id",
                [partition_key],
            ).df()
    rows: list[dict] = []
    errors: list[tuple[str, str]] = []
    empty_frames = 0
    raw_problems: list[tuple[str, int, int]] = []
    if not labels and len(todo):
        errors.append((partition_key, "no labels to detect: the label list is empty"))
    elif len(todo):
        load = frame_loader(blob_store, config.min_side)
        rows, errors, empty_frames, raw_problems = detect_frames(
            todo.to_dict("records"), detector, load, labels, config.threshold
        )
    table = pd.DataFrame(rows, columns=DETECTION_COLUMNS).assign(
        partition_key=partition_key, detector=detector.describe()
    )
    table["frame_sha256"] = table["frame_id"].map(dict(zip(todo["frame_id"], todo["sha256"], strict=True)))
    stored_metadata, unique_key = replace_stage_rows(
        warehouse, partition_key, "detections", table, "detections", errors
    )
    for item, reason in errors[:20]:
        context.log.warning(f"{item}: {reason}")
    outside, degenerate = sum(n for _, n, _ in raw_problems), sum(n for _, _, n in raw_problems)
    return dg.MaterializeResult(
        metadata={
            **stored_metadata,
            "frames": len(todo),
            "detections": len(table),
            "frames_without_detections": empty_frames,
            "failed": len(errors),
            "labels": dg.MetadataValue.json(labels),
            "per_label": dg.MetadataValue.json({k: int(v) for k, v in table["label"].value_counts().items()}),
            "threshold": config.threshold,
            "detector": detector.describe(),
            "problems": dg.MetadataValue.json([{"item": i, "reason": r} for i, r in errors[:50]]),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="boxes_inside_image",
                passed=not outside and not degenerate,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "outside": outside,
                    "degenerate": degenerate,
                    "tolerance": OUTSIDE_TOLERANCE,
                    "examples": dg.MetadataValue.json([frame for frame, _, _ in raw_problems[:10]]),
                },
            ),
            unique_key,
            output_check(
                len(todo),
                len(table),
                f"no box on any frame at threshold {config.threshold}" + first_reasons(errors),
                upstream="unique_frames (kept frames)",
            ),
        ],
    )
