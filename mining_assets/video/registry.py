"""video_registry: the videos known for a keyword, from a YouTube search, explicit URLs and a local folder."""

from pathlib import Path

import dagster as dg
import pandas as pd

from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions
from mining_assets.video.probe import file_sha256
from mining_assets.warehouse import (
    execute_with_rows,
    keyword_text,
    record_errors,
    table_definition_metadata,
    table_metadata,
    unique_key_check,
    unique_key_spec,
)
from resources.warehouse import Warehouse
from resources.youtube import VideoCandidate, VideoSourceError, YouTubeResource, candidate_for_url


class VideoRegistryConfig(dg.Config):
    max_results: int = 10
    search: bool = True
    urls: list[str] = []
    local_dir: str | None = None


def local_candidates(folder: str | Path) -> list[VideoCandidate]:
    """Every visible file in a folder (not recursive), identified by its content; probing decides what is a video."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise VideoSourceError(f"local folder not found: {folder}")
    return [
        VideoCandidate(media_id="local-" + file_sha256(path)[:16], source="local", url=path.as_uri(), title=path.name)
        for path in sorted(folder.iterdir())
        if path.is_file() and not path.name.startswith(".")
    ]


def gather_candidates(
    keyword: str, config: VideoRegistryConfig, youtube: YouTubeResource
) -> tuple[list[VideoCandidate], list[tuple[str, str]]]:
    """All candidates for a keyword (first occurrence of each media id wins) and the (item, reason) failures."""
    found: list[VideoCandidate] = []
    errors: list[tuple[str, str]] = []
    if config.search:
        try:
            found += youtube.search(keyword, config.max_results)
        except VideoSourceError as error:
            errors.append(("search", f"search failed: {error}"))
    for url in config.urls:
        try:
            found.append(youtube.describe(url))
        except VideoSourceError as error:
            # kept as a failed video, so the registry shows what was asked for and why it is missing
            found.append(candidate_for_url(url))
            errors.append((url, str(error)))
    if config.local_dir:
        try:
            found += local_candidates(config.local_dir)
        except (VideoSourceError, OSError) as error:
            errors.append((config.local_dir, str(error)))
    unique: dict[str, VideoCandidate] = {}
    for candidate in found:
        unique.setdefault(candidate.media_id, candidate)
    return list(unique.values()), errors


REGISTRY_COLUMNS = [
    "partition_key", "keyword", "media_id", "source", "url", "title", "channel", "duration_s", "status", "error",
]  # fmt: skip

# a video known before keeps its status (and its error): only what the source says of it may be filled in
UPSERT = f"""
MERGE INTO videos USING (SELECT * FROM _incoming) AS incoming
ON videos.partition_key = incoming.partition_key AND videos.media_id = incoming.media_id
WHEN MATCHED THEN UPDATE SET
    title = coalesce(incoming.title, videos.title),
    channel = coalesce(incoming.channel, videos.channel),
    duration_s = coalesce(incoming.duration_s, videos.duration_s),
    updated_at = now()::TIMESTAMP
WHEN NOT MATCHED THEN INSERT ({", ".join(REGISTRY_COLUMNS)}, discovered_at, updated_at)
    VALUES ({", ".join("incoming." + name for name in REGISTRY_COLUMNS)}, now()::TIMESTAMP, now()::TIMESTAMP)
"""


@dg.asset(
    partitions_def=keyword_partitions,
    group_name="video",
    kinds={"youtube", "duckdb"},
    metadata=table_definition_metadata("videos"),
    check_specs=[
        dg.AssetCheckSpec("sources_answered", asset="video_registry", blocking=False),
        unique_key_spec("video_registry", ["videos"]),
    ],
)
def video_registry(
    context: dg.AssetExecutionContext, config: VideoRegistryConfig, youtube: YouTubeResource, warehouse: Warehouse
) -> dg.MaterializeResult:
    """Videos found for a keyword (YouTube search, explicit URLs, a local folder): one row each, with status."""
    partition_key = context.partition_key
    for attempt in warehouse.retrying():
        with attempt as conn:
            keyword = keyword_text(conn, partition_key)
    candidates, errors = gather_candidates(keyword, config, youtube)
    reasons = dict(errors)
    rows = pd.DataFrame(
        [
            (partition_key, keyword, c.media_id, c.source, c.url, c.title, c.channel, c.duration_s)
            + (("failed", reasons[c.url]) if c.url in reasons else ("pending", None))
            for c in candidates
        ],
        columns=REGISTRY_COLUMNS,
    )
    # the lease keeps a second registry run of this keyword from inserting the same new videos beside this one
    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            known = {
                row[0]
                for row in conn.execute(
                    "SELECT media_id FROM videos WHERE partition_key = ?", [partition_key]
                ).fetchall()
            }
            if len(rows):
                execute_with_rows(conn, UPSERT, rows)
            record_errors(conn, partition_key, "video_registry", errors)
    for attempt in warehouse.retrying():
        with attempt as conn:
            statuses = dict(
                conn.execute(
                    "SELECT status, count(*) FROM videos WHERE partition_key = ? GROUP BY status", [partition_key]
                ).fetchall()
            )
            table = table_metadata(conn, "videos", partition_key)
            unique = unique_key_check(conn, partition_key, ["videos"])
    total = sum(statuses.values())
    for item, reason in errors:
        context.log.warning(f"{item}: {reason}")
    new = [c for c in candidates if c.media_id not in known]
    return dg.MaterializeResult(
        metadata={
            **table,
            "keyword": keyword,
            "videos": total,
            "new_videos": len(new),
            "by_status": dg.MetadataValue.json(statuses),
            "errors": dg.MetadataValue.json([{"item": i, "reason": r} for i, r in errors]),
            "new_preview": dg.MetadataValue.md(
                markdown_table(
                    ["media_id", "title", "url"], [(c.media_id, c.title, c.url) for c in new[:20]], "_no new videos_"
                )
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="sources_answered",
                passed=not errors,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"failures": len(errors)},
            ),
            unique,
        ],
    )
