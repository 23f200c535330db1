"""frames: the catalog where video and photo sources meet, one row per frame, traceable to its source URL."""

import dagster as dg

from mining_assets.images.stock import stock_images
from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions
from mining_assets.video.frames import video_frames
from mining_assets.warehouse import table_definition_metadata, table_metadata, unique_key_check, unique_key_spec
from resources.warehouse import Warehouse

CATALOG_VIDEO_FRAMES = """
INSERT INTO frames (partition_key, keyword, frame_id, media_id, source, media_type, frame_index, timestamp_s,
                    width, height, blob_key, uri, sha256, source_url, created_at)
SELECT f.partition_key, f.keyword, f.frame_id, f.media_id, f.source, 'video', f.frame_index, f.timestamp_s,
       f.width, f.height, f.blob_key, f.uri, f.sha256, v.url, now()::TIMESTAMP
FROM video_frames f JOIN videos v USING (partition_key, media_id)
WHERE f.partition_key = ?
"""
CATALOG_PHOTOS = """
INSERT INTO frames (partition_key, keyword, frame_id, media_id, source, media_type, frame_index, timestamp_s,
                    width, height, blob_key, uri, sha256, source_url, created_at)
SELECT partition_key, keyword, media_id, media_id, source, 'photo', NULL, NULL,
       width, height, blob_key, uri, sha256, page_url, now()::TIMESTAMP
FROM photos WHERE partition_key = ? AND status = 'stored'
"""


@dg.asset(
    partitions_def=keyword_partitions,
    deps=[video_frames, stock_images, "media_uploads"],
    group_name="frames",
    kinds={"duckdb"},
    metadata=table_definition_metadata("frames"),
    check_specs=[
        dg.AssetCheckSpec("unique_frame_ids", asset="frames"),
        dg.AssetCheckSpec("traceable_to_source", asset="frames"),
        unique_key_spec("frames", ["frames"]),
    ],
)
def frames(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Every frame of a keyword, from videos (sampled frames) and photos (one frame each), with its source URL."""
    partition_key = context.partition_key
    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            conn.execute("DELETE FROM frames WHERE partition_key = ?", [partition_key])
            conn.execute(CATALOG_VIDEO_FRAMES, [partition_key])
            conn.execute(CATALOG_PHOTOS, [partition_key])
            conn.execute(
                "UPDATE videos SET status = 'complete', updated_at = now()::TIMESTAMP "
                "WHERE partition_key = ? AND status = 'framed'",
                [partition_key],
            )
    for attempt in warehouse.retrying():
        with attempt as conn:
            by_type = dict(
                conn.execute(
                    "SELECT media_type, count(*) FROM frames WHERE partition_key = ? GROUP BY media_type",
                    [partition_key],
                ).fetchall()
            )
            duplicates = conn.execute(
                "SELECT count(*) - count(DISTINCT frame_id) FROM frames WHERE partition_key = ?", [partition_key]
            ).fetchone()[0]
            untraceable = conn.execute(
                "SELECT count(*) FROM frames WHERE partition_key = ? AND (source_url IS NULL OR source_url = '')",
                [partition_key],
            ).fetchone()[0]
            sources = conn.execute(
                "SELECT count(DISTINCT media_id) FROM frames WHERE partition_key = ?", [partition_key]
            ).fetchone()[0]
            sample = conn.execute(
                "SELECT frame_id, media_type, timestamp_s, source_url, uri FROM frames WHERE partition_key = ? "
                "ORDER BY media_id, frame_index LIMIT 10",
                [partition_key],
            ).fetchall()
            table = table_metadata(conn, "frames", partition_key)
            unique = unique_key_check(conn, partition_key, ["frames"])
    return dg.MaterializeResult(
        metadata={
            **table,
            "frames": sum(by_type.values()),
            "by_media_type": dg.MetadataValue.json(by_type),
            "media_items": sources,
            "sample": dg.MetadataValue.md(
                markdown_table(["frame_id", "media_type", "timestamp_s", "source_url", "uri"], sample, "_no frames_")
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="unique_frame_ids", passed=duplicates == 0, metadata={"duplicates": duplicates}
            ),
            dg.AssetCheckResult(
                check_name="traceable_to_source", passed=untraceable == 0, metadata={"without_url": untraceable}
            ),
            unique,
        ],
    )
