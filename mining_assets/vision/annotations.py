"""coco_annotations: one COCO detection file per keyword, with the keyword's funnel (counts per stage)."""

import json

import dagster as dg

from mining_assets.checks import output_check, output_spec
from mining_assets.keyword_settings import settings_by_keyword
from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions
from mining_assets.retries import STEP_RETRY
from mining_assets.vision.coco import build_coco, coco_problems
from mining_assets.vision.common import metadata_location, partition_prefix
from mining_assets.vision.detections import detections
from mining_assets.warehouse import keyword_text
from resources.blob_store import BlobStore
from resources.warehouse import Warehouse

FUNNEL = """
SELECT
  (SELECT count(*) FROM frames WHERE partition_key = $1),
  (SELECT count(*) FROM filtered_frames WHERE partition_key = $1),
  (SELECT count(*) FILTER (WHERE passed) FROM filtered_frames WHERE partition_key = $1),
  (SELECT count(*) FROM frame_embeddings WHERE partition_key = $1),
  (SELECT count(*) FILTER (WHERE kept) FROM unique_frames WHERE partition_key = $1),
  (SELECT count(DISTINCT frame_id) FROM detections WHERE partition_key = $1),
  (SELECT count(*) FROM detections WHERE partition_key = $1)
"""
FUNNEL_STAGES = ["frames", "scored", "passed_filter", "embedded", "unique", "frames_with_detections", "detections"]


def funnel(conn, partition_key: str) -> dict[str, int]:
    """Counts per stage of one keyword, from the warehouse."""
    return dict(zip(FUNNEL_STAGES, conn.execute(FUNNEL, [partition_key]).fetchone(), strict=True))


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    deps=[detections],
    group_name="vision",
    kinds={"json"},
    check_specs=[
        dg.AssetCheckSpec(
            "image_ids_exist",
            asset="coco_annotations",
            description="Every detection of the keyword is in the stored file, in an image and category it holds.",
        ),
        output_spec("coco_annotations", "annotations"),
    ],
)
def coco_annotations(
    context: dg.AssetExecutionContext, blob_store: BlobStore, warehouse: Warehouse
) -> dg.MaterializeResult:
    """The keyword's unique frames and their boxes as a COCO detection file; metadata shows the keyword's funnel."""
    partition_key = context.partition_key
    for attempt in warehouse.retrying():
        with attempt as conn:
            keyword = keyword_text(conn, partition_key)
            images = conn.execute(
                "SELECT f.frame_id, f.width, f.height, f.uri, f.media_id, f.source_url, f.timestamp_s "
                "FROM unique_frames u JOIN frames f USING (partition_key, frame_id) "
                "WHERE u.partition_key = ? AND u.kept",
                [partition_key],
            ).df()
            boxes = conn.execute(
                "SELECT frame_id, label, score, x0, y0, x1, y1 FROM detections WHERE partition_key = ?", [partition_key]
            ).df()
            labels = [row[0] for row in conn.execute(
                "SELECT label FROM prompt_sets WHERE partition_key = ? AND kind = 'class' ORDER BY rowid",
                [partition_key],
            ).fetchall()]  # fmt: skip
            counts = funnel(conn, partition_key)
            settings = settings_by_keyword(conn, partition_key).get(partition_key, {})
            errors = dict(
                conn.execute(
                    "SELECT stage, count(*) FROM ingest_errors WHERE partition_key = ? GROUP BY stage", [partition_key]
                ).fetchall()
            )
    coco = build_coco(images, boxes, labels, f"detections for {keyword!r}")
    key = f"{partition_prefix('coco', partition_key)}/instances.json"
    uri = blob_store.put_bytes(key, json.dumps(coco, indent=1, default=str).encode())
    problems = coco_problems(json.loads(blob_store.get_bytes(key)))  # checked as stored
    # build_coco leaves out a box whose frame is not a kept unique frame (detections older than unique_frames):
    # counted here, as the file's own ids always match
    problems["detections_without_image"] = int((~boxes["frame_id"].isin(images["frame_id"])).sum())
    return dg.MaterializeResult(
        metadata={
            "uri": metadata_location(uri),
            "images": len(coco["images"]),
            "annotations": len(coco["annotations"]),
            "categories": dg.MetadataValue.json([c["name"] for c in coco["categories"]]),
            "funnel": dg.MetadataValue.md(
                markdown_table(["stage", "count"], list(counts.items()))
                + "\n\n"
                + markdown_table(["stage", "errors recorded"], sorted(errors.items()), "_no errors recorded_")
            ),
            **{f"count_{stage}": int(value) for stage, value in counts.items()},
            "keyword_settings": dg.MetadataValue.json(settings),  # each stage's settings stored for the keyword
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="image_ids_exist",
                passed=not any(problems.values()),
                metadata=problems,
            ),
            output_check(
                len(images),
                len(coco["annotations"]),
                "no detection on any of the keyword's unique frames",
                upstream="unique_frames (kept frames)",
            ),
        ],
    )
