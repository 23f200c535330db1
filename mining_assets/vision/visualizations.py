"""detection_visualizations: each unique frame with its boxes and labels drawn, as JPEG in the blob store."""

import dagster as dg

from mining_assets.checks import first_reasons, output_check, output_spec
from mining_assets.keyword_settings import stage_config
from mining_assets.partitions import keyword_partitions
from mining_assets.retries import STEP_RETRY
from mining_assets.vision.coco import draw_detections
from mining_assets.vision.common import partition_prefix, remove_orphans
from mining_assets.vision.detections import detections
from mining_assets.vision.images import ImageError, decode_image
from mining_assets.warehouse import record_errors
from resources.blob_store import BlobStore
from resources.warehouse import Warehouse


class VisualizationConfig(dg.Config):
    include_empty: bool = False  # also draw frames where nothing was detected
    jpeg_quality: int = 85


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    deps=[detections],
    group_name="vision",
    kinds={"pillow"},
    check_specs=[output_spec("detection_visualizations", "drawings")],
)
def detection_visualizations(
    context: dg.AssetExecutionContext,
    config: VisualizationConfig,
    blob_store: BlobStore,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """Unique frames with their detections drawn (box, label, score), for a quick look at what the detector found."""
    config, _ = stage_config(context, config, warehouse)
    partition_key = context.partition_key
    for attempt in warehouse.retrying():
        with attempt as conn:
            frames = conn.execute(
                "SELECT f.frame_id, f.blob_key, count(d.frame_id) AS boxes FROM unique_frames u "
                "JOIN frames f USING (partition_key, frame_id) "
                "LEFT JOIN detections d ON d.partition_key = u.partition_key AND d.frame_id = u.frame_id "
                "WHERE u.partition_key = ? AND u.kept GROUP BY ALL ORDER BY f.frame_id",
                [partition_key],
            ).df()
            boxes = conn.execute(
                "SELECT frame_id, label, score, x0, y0, x1, y1 FROM detections WHERE partition_key = ?", [partition_key]
            ).df()
    unique = len(frames)
    if not config.include_empty:
        frames = frames[frames["boxes"] > 0]
    empty = "no frame could be drawn" if len(frames) else "no unique frame has a detection (include_empty is off)"
    prefix = partition_prefix("visualizations", partition_key)
    by_frame = dict(tuple(boxes.groupby("frame_id"))) if len(boxes) else {}
    written: dict[str, str] = {}
    errors: list[tuple[str, str]] = []
    for frame in frames.to_dict("records"):
        try:
            image = decode_image(blob_store.get_bytes(frame["blob_key"]), min_side=1)
        except (ImageError, OSError) as error:
            errors.append((frame["frame_id"], str(error)))
            continue
        key = f"{prefix}/{frame['frame_id']}.jpg"
        frame_boxes = by_frame.get(frame["frame_id"], boxes.iloc[:0])
        written[key] = blob_store.put_bytes(key, draw_detections(image, frame_boxes, config.jpeg_quality))
    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            record_errors(conn, partition_key, "detection_visualizations", errors)
    removed, not_removed, missing = remove_orphans(blob_store, prefix, written)
    return dg.MaterializeResult(
        metadata={
            "images": len(written),
            "failed": len(errors),
            "orphans_removed": removed,
            "orphans_not_removed": dg.MetadataValue.json(not_removed[:20]),  # the store refused: left for blob_gc
            "missing_after_write": len(missing),
            "sample": dg.MetadataValue.json(list(written.values())[:10]),
        },
        check_results=[
            output_check(unique, len(written), empty + first_reasons(errors), "unique_frames (kept frames)")
        ],
    )
