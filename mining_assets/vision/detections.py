"""detections: open-vocabulary boxes on every unique frame, for the keyword and the filter's classes."""

from collections.abc import Callable
from typing import Any

import dagster as dg
import pandas as pd

from mining_assets.checks import first_reasons, output_check, output_spec
from mining_assets.keyword_settings import stage_config
from mining_assets.partitions import keyword_partitions
from mining_assets.pools import VISION_MODELS
from mining_assets.retries import STEP_RETRY
from mining_assets.vision.batches import prepared_batches
from mining_assets.vision.common import frame_loader
from mining_assets.vision.images import MIN_SIDE
from mining_assets.vision.unique import unique_frames
from mining_assets.warehouse import (
    keyword_text,
    record_errors,
    replace_partition_rows,
    table_definition_metadata,
    table_report,
    unique_key_spec,
)
from mining_assets.work import model_settings, work_key
from resources.blob_store import BlobStore
from resources.models.detector import OUTSIDE_TOLERANCE, Detections, OpenVocabDetector
from resources.warehouse import Warehouse

OWNED_TABLES = ["detections", "detected_frames"]
DETECTION_COLUMNS = ["frame_id", "detection_index", "label", "score", "x0", "y0", "x1", "y1",
                     "image_width", "image_height"]  # fmt: skip


class DetectionConfig(dg.Config):
    labels: list[str] | None = None  # None: the keyword and the classes filtered_frames scored
    threshold: float = 0.3
    min_side: int = MIN_SIDE
    rescore: bool = False  # ignore stored boxes and run the detector on every unique frame


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
) -> tuple[list[dict], list[tuple[str, str]], list[dict]]:
    """Detection rows of the frames, the frames that failed with the reason, and a record per frame the model ran
    on (``frame_id``, ``detections``, and ``raw_outside``/``raw_degenerate``: boxes beyond the image or degenerate
    as the model returned them, before clipping)."""
    rows: list[dict] = []
    errors: list[tuple[str, str]] = []
    done: list[dict] = []
    batches = prepared_batches(frames, load, lambda images: detector.prepare(images, labels), detector.batch_size)
    for batch in batches:
        errors += [(frame["frame_id"], reason) for frame, reason in batch.failed]
        if not batch.items:
            continue
        sizes = [image.size for image in batch.images]
        found = detector.detect_prepared(batch.inputs, sizes, labels, threshold)
        for frame, (width, height), boxes in zip(batch.items, sizes, found, strict=True):
            rows += box_rows(frame["frame_id"], boxes, width, height)
            done.append({"frame_id": frame["frame_id"], "detections": len(boxes),
                         "raw_outside": boxes.raw_outside, "raw_degenerate": boxes.raw_degenerate})  # fmt: skip
    return rows, errors, done


def stored_detections(conn, partition_key: str, key: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For the partition's kept frames whose content some keyword already ran the detector on with the same work
    key: one record per content (``frame_sha256``, the source ``source_partition``/``source_frame``, the counts),
    this partition's own first, and the detection rows of those sources."""
    done = conn.execute(
        "SELECT d.frame_sha256, d.partition_key AS source_partition, d.frame_id AS source_frame, d.detections, "
        "d.raw_outside, d.raw_degenerate FROM detected_frames d "
        "WHERE d.work_key = ? AND d.frame_sha256 IN (SELECT f.sha256 FROM unique_frames u "
        "JOIN frames f USING (partition_key, frame_id) WHERE u.partition_key = ? AND u.kept) "
        "QUALIFY row_number() OVER (PARTITION BY d.frame_sha256 ORDER BY d.partition_key <> ?, d.partition_key, "
        "d.frame_id) = 1",
        [key, partition_key, partition_key],
    ).df()
    conn.register("_sources", done[["source_partition", "source_frame"]])
    try:
        boxes = conn.execute(
            "SELECT s.source_partition, s.source_frame, d.* EXCLUDE (partition_key, frame_id) FROM detections d "
            "JOIN _sources s ON d.partition_key = s.source_partition AND d.frame_id = s.source_frame"
        ).df()
    finally:
        conn.unregister("_sources")
    return done, boxes


def reused_rows(todo: pd.DataFrame, done: pd.DataFrame, boxes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """This partition's detection rows and frame records for its frames of already detected content."""
    frames = todo[["frame_id", "sha256"]].merge(done, left_on="sha256", right_on="frame_sha256").drop(columns="sha256")
    rows = frames[["frame_id", "source_partition", "source_frame"]].merge(
        boxes, on=["source_partition", "source_frame"]
    )
    return rows[DETECTION_COLUMNS], frames.drop(columns=["source_partition", "source_frame"])


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
        unique_key_spec("detections", OWNED_TABLES),
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
    config, _ = stage_config(context, config, warehouse)
    partition_key = context.partition_key
    for attempt in warehouse.retrying():
        with attempt as conn:
            labels = detection_labels(conn, partition_key, config)
            key = work_key(stage="detections", **model_settings(detector), labels=labels, threshold=config.threshold)
            todo = conn.execute(
                "SELECT f.frame_id, f.blob_key, f.sha256 FROM unique_frames u "
                "JOIN frames f USING (partition_key, frame_id) "
                "WHERE u.partition_key = ? AND u.kept ORDER BY f.frame_id",
                [partition_key],
            ).df()
            done, boxes = stored_detections(conn, partition_key, key)
    if config.rescore:
        done, boxes = done.iloc[:0], boxes.iloc[:0]
    rows: list[dict] = []
    errors: list[tuple[str, str]] = []
    records: list[dict] = []
    # the detector runs once per content and work key (model, precision, labels, threshold), for any keyword
    new = todo[~todo["sha256"].isin(done["frame_sha256"])]
    if not labels and len(todo):
        errors.append((partition_key, "no labels to detect: the label list is empty"))
    elif len(new):
        load = frame_loader(blob_store, config.min_side)
        rows, errors, records = detect_frames(new.to_dict("records"), detector, load, labels, config.threshold)
    reused, reused_records = reused_rows(todo, done, boxes) if labels else (boxes.iloc[:0], done.iloc[:0])
    sha = dict(zip(todo["frame_id"], todo["sha256"], strict=True))
    table = pd.concat(
        [frame for frame in (reused, pd.DataFrame(rows, columns=DETECTION_COLUMNS)) if len(frame)]
        or [pd.DataFrame(columns=DETECTION_COLUMNS)],
        ignore_index=True,
    ).assign(partition_key=partition_key, detector=detector.describe(), work_key=key)
    table["frame_sha256"] = table["frame_id"].map(sha)
    frame_records = pd.concat(
        [frame for frame in (reused_records, pd.DataFrame(records)) if len(frame)]
        or [pd.DataFrame(columns=["frame_id", "detections", "raw_outside", "raw_degenerate"])],
        ignore_index=True,
    ).assign(partition_key=partition_key, work_key=key)
    frame_records["frame_sha256"] = frame_records["frame_id"].map(sha)
    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            replace_partition_rows(conn, "detections", partition_key, table)
            replace_partition_rows(conn, "detected_frames", partition_key, frame_records)
            record_errors(conn, partition_key, "detections", errors)
            stored_metadata, unique_key = table_report(conn, partition_key, "detections", OWNED_TABLES)
    empty_frames = int((frame_records["detections"] == 0).sum())
    problem_frames = frame_records[(frame_records["raw_outside"] > 0) | (frame_records["raw_degenerate"] > 0)]
    for item, reason in errors[:20]:
        context.log.warning(f"{item}: {reason}")
    outside, degenerate = int(frame_records["raw_outside"].sum()), int(frame_records["raw_degenerate"].sum())
    return dg.MaterializeResult(
        metadata={
            **stored_metadata,
            "frames": len(todo),
            "detections": len(table),
            "frames_without_detections": empty_frames,
            "detected_now": len(records),  # frames the detector ran on this run
            "reused": len(reused_records),  # frames whose boxes came from stored rows of the same content and key
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
                    "examples": dg.MetadataValue.json(problem_frames["frame_id"].head(10).tolist()),
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
