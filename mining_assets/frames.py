"""frames: the catalog where video and photo sources meet, one row per frame, traceable to its source URL."""

import dagster as dg

from mining_assets.checks import output_check, output_spec
from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions
from mining_assets.retries import STEP_RETRY
from mining_assets.sources.media import media
from mining_assets.video.frames import video_frames
from mining_assets.warehouse import table_definition_metadata, table_report, unique_key_spec
from resources.warehouse import Warehouse


def frame_images(conn, partition_key: str):
    """A keyword's frames as the model stages read them: ``frame_id``, ``blob_key``, ``sha256``, by frame id."""
    return conn.execute(
        "SELECT frame_id, blob_key, sha256 FROM frames WHERE partition_key = ? ORDER BY frame_id", [partition_key]
    ).df()


CATALOG_VIDEO_FRAMES = """
INSERT INTO frames (partition_key, keyword, frame_id, media_id, source, media_type, frame_index, timestamp_s,
                    width, height, blob_key, uri, sha256, source_url, created_at)
SELECT s.partition_key, r.keyword, f.frame_id, f.media_id, m.source, 'video', f.frame_index, f.timestamp_s,
       f.width, f.height, f.blob_key, f.uri, f.sha256, r.page_url, now()::TIMESTAMP
FROM keyword_samples s
JOIN video_frames f ON f.media_id = s.media_id AND f.sampling = s.sampling
JOIN media m ON m.media_id = s.media_id
JOIN (SELECT k.partition_key, k.media_id, any_value(r.keyword ORDER BY r.item) AS keyword,
             any_value(r.page_url ORDER BY r.item) AS page_url
      FROM keyword_media k JOIN registry r USING (partition_key, item)
      WHERE k.partition_key = $1 AND k.duplicate_of IS NULL GROUP BY ALL) r
  ON r.partition_key = s.partition_key AND r.media_id = s.media_id
WHERE s.partition_key = $1
"""
CATALOG_PHOTOS = """
INSERT INTO frames (partition_key, keyword, frame_id, media_id, source, media_type, frame_index, timestamp_s,
                    width, height, blob_key, uri, sha256, source_url, created_at)
SELECT k.partition_key, any_value(r.keyword), m.media_id, m.media_id, m.source, 'photo', NULL, NULL,
       m.width, m.height, m.blob_key, m.uri, m.sha256, any_value(r.page_url ORDER BY r.item), now()::TIMESTAMP
FROM keyword_media k
JOIN registry r USING (partition_key, item)
JOIN media m ON m.media_id = k.media_id
WHERE k.partition_key = $1 AND k.duplicate_of IS NULL AND m.media_type = 'photo'
GROUP BY k.partition_key, m.media_id, m.source, m.width, m.height, m.blob_key, m.uri, m.sha256
"""


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    deps=[media, video_frames],
    group_name="frames",
    kinds={"duckdb"},
    metadata=table_definition_metadata("frames"),
    check_specs=[
        # frame ids are the table's key: `unique_key` checks them (a `unique_frame_ids` check repeated it)
        dg.AssetCheckSpec(
            "traceable_to_source", asset="frames", description="Every frame carries the URL of the page it came from."
        ),
        unique_key_spec("frames", ["frames"]),
        output_spec("frames", "frames"),
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
            # what is reported is read in the same transaction: what it commits
            by_type = dict(conn.execute(
                "SELECT media_type, count(*) FROM frames WHERE partition_key = ? GROUP BY media_type", [partition_key]
            ).fetchall())  # fmt: skip
            untraceable, sources = conn.execute(
                "SELECT count(*) FILTER (WHERE source_url IS NULL OR source_url = ''), count(DISTINCT media_id) "
                "FROM frames WHERE partition_key = ?",
                [partition_key],
            ).fetchone()
            (media_items,) = conn.execute(
                "SELECT count(DISTINCT media_id) FROM keyword_media WHERE partition_key = ? AND duplicate_of IS NULL",
                [partition_key],
            ).fetchone()
            sample = conn.execute(
                "SELECT frame_id, media_type, timestamp_s, source_url, uri FROM frames WHERE partition_key = ? "
                "ORDER BY media_id, frame_index LIMIT 10",
                [partition_key],
            ).fetchall()
            table, unique = table_report(conn, partition_key, "frames")
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
                check_name="traceable_to_source", passed=untraceable == 0, metadata={"without_url": untraceable}
            ),
            unique,
            output_check(
                media_items,
                sum(by_type.values()),
                "no media item of the keyword has a sampled frame or is a photo (see video_frames)",
                upstream="media",
            ),
        ],
    )
