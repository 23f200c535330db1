"""Converting a lake of the earlier data model (per-keyword ``videos``/``photos``/``uploads`` rows, per-keyword
``video_frames``, one ``ingest_errors`` table) to the current one, in one transaction (``mining warehouse migrate``).

What the earlier tables held becomes the rows the current writers would have written: every video, photo and
upload a keyword named is a ``registry`` item (YouTube and stock items by media id, uploads and local files by
location); each stored media id is one ``media`` row and each keyword's use of it a ``keyword_media`` row (a
second item with the same content repeats the first: ``duplicate_of``); a keyword's old frames of a video are a
``legacy`` sample of it (``l`` and 12 hex of sha256 of the partition key, settings 0), so the next ``video_frames``
run samples again under its real settings while the old frames and their blob keys stay as they are. Old errors go
to their stage's error table; every output table gains ``frame_sha256`` from ``frames``; ``pose_datasets``'
``source_deleted`` becomes ``deleted_sources``. Stop every run first: the migration takes no lease.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mining_assets.sources.stock import STOCK_SOURCES
from mining_assets.warehouse import (
    ERRORS_SUFFIX,
    LEGACY_TABLES,
    add_missing_columns,
    ensure_schema,
    legacy_tables,
    migrating,
    partition_by_key,
    table_ddl,
    tables,
    views,
)

if TYPE_CHECKING:
    import duckdb

    from resources.warehouse import Warehouse

STAGING_PREFIX = "migrating_"  # a current table being filled beside the earlier one whose name it takes
UPLOAD_SOURCES = ("local", "s3")  # named by location, not by a media id the source gives
# the stage an earlier ingest_errors row belongs to now: media_registry for what names items, media for fetching
STAGE_OF = """CASE
    WHEN stage = 'video_registry' THEN 'media_registry'
    WHEN stage IN ('raw_videos', 'media_uploads') THEN 'media'
    WHEN stage = 'stock_images' AND item IN ({stock}) THEN 'media_registry'
    WHEN stage = 'stock_images' THEN 'media'
    ELSE stage
END""".format(stock=", ".join(f"'{name}'" for name in STOCK_SOURCES))


def base_tables(conn: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """The lake's base tables and their columns."""
    from resources.warehouse import LAKE

    found: dict[str, set[str]] = {}
    for table, column in conn.execute(
        "SELECT c.table_name, c.column_name FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_catalog, table_schema, table_name) "
        "WHERE c.table_catalog = ? AND c.table_schema = 'main' AND t.table_type = 'BASE TABLE'",
        [LAKE],
    ).fetchall():
        found.setdefault(table, set()).add(column)
    return found


def required_missing(table: str, columns: set[str]) -> list[str]:
    """The NOT NULL columns (without a default) of the current ``table`` that an earlier one lacks: the table is
    rebuilt rather than altered, since a column added to a table with rows can only be NULL."""
    return [
        name
        for name, (_, constraint, _) in tables()[table]["columns"].items()
        if name not in columns and "NOT NULL" in constraint and "DEFAULT" not in constraint
    ]


def create_table(conn: duckdb.DuckDBPyConnection, table: str, name: str | None = None) -> None:
    """The current ``table``; under ``name`` when it is built beside an earlier one (partitioned only once it has
    its own name: DuckLake fails to commit a table made, partitioned and renamed in one transaction)."""
    conn.execute(table_ddl(table).replace(f"CREATE TABLE {table} (", f"CREATE TABLE {name or table} (", 1))
    if name is None:
        partition_by_key(conn, table)


def _first(columns: list[str]) -> str:
    """Per (partition_key, item): each column's first non-NULL value by rank (what the likeliest row says)."""
    return ", ".join(f"first({c} ORDER BY rank) FILTER (WHERE {c} IS NOT NULL) AS {c}" for c in columns)


def _upload(source: str) -> str:
    return f"{source} IN ({', '.join(repr(s) for s in UPLOAD_SOURCES)})"


def fill_registry(conn: duckdb.DuckDBPyConnection) -> None:
    """One row per item a keyword named: uploads by location (media id and type unknown until fetched, as the
    current registry leaves them), videos and stock photos by their media id."""
    columns = [c for c in tables()["registry"]["columns"] if c not in ("partition_key", "item")]
    conn.execute(f"""
INSERT INTO registry (partition_key, item, {", ".join(columns)})
WITH named AS (
    SELECT 1 AS rank, partition_key, keyword, CASE WHEN {_upload("source")} THEN url ELSE media_id END AS item,
           source, CASE WHEN {_upload("source")} THEN NULL ELSE media_id END AS media_id, NULL AS source_id,
           CASE WHEN {_upload("source")} THEN NULL ELSE 'video' END AS media_type, url, url AS page_url,
           NULL AS query, title, channel, duration_s, NULL AS photographer, NULL AS photographer_url,
           NULL AS license, NULL AS description, NULL AS download_location, discovered_at
    FROM videos
    UNION ALL
    SELECT 2 AS rank, partition_key, keyword, CASE WHEN {_upload("source")} THEN image_url ELSE media_id END,
           source, CASE WHEN {_upload("source")} THEN NULL ELSE media_id END,
           CASE WHEN {_upload("source")} THEN NULL ELSE source_id END, CASE WHEN {_upload("source")} THEN NULL
           ELSE 'photo' END, image_url, page_url, nullif(query, ''),
           CASE WHEN {_upload("source")} THEN regexp_extract(image_url, '[^/]*$') END, NULL, NULL,
           photographer, photographer_url, license, description, NULL, stored_at
    FROM photos
    UNION ALL
    SELECT 3 AS rank, partition_key, keyword, location, source, NULL, NULL, NULL, location, location, NULL,
           regexp_extract(location, '[^/]*$'), NULL, NULL, NULL, NULL, NULL, NULL, NULL, registered_at
    FROM uploads
)
SELECT partition_key, item, {_first(columns)} FROM named GROUP BY partition_key, item
""")


def fill_media(conn: duckdb.DuckDBPyConnection) -> None:
    """Each stored media id once: stored videos, stored photos (an upload's size from ``uploads``; the earlier
    ``photos`` table kept none for stock photos, so theirs is 0)."""
    conn.execute("""
INSERT INTO media (media_id, media_type, source, blob_key, uri, sha256, size_bytes, width, height, duration_s, fps,
                   frame_count, codec, stored_at)
WITH stored AS (
    SELECT media_id, 'video' AS media_type, source, blob_key, uri, sha256, size_bytes, width, height, duration_s,
           fps, frame_count, codec, updated_at AS stored_at
    FROM videos WHERE blob_key IS NOT NULL AND uri IS NOT NULL AND sha256 IS NOT NULL
    UNION ALL
    SELECT p.media_id, 'photo', p.source, p.blob_key, p.uri, p.sha256, coalesce(u.size_bytes, 0), p.width, p.height,
           NULL, NULL, NULL, NULL, p.stored_at
    FROM photos p
    LEFT JOIN (SELECT media_id, max(size_bytes) AS size_bytes FROM uploads GROUP BY media_id) u USING (media_id)
    WHERE p.status = 'stored' AND p.blob_key IS NOT NULL AND p.uri IS NOT NULL AND p.sha256 IS NOT NULL
)
SELECT media_id, media_type, source, blob_key, uri, sha256, coalesce(size_bytes, 0), coalesce(width, 0),
       coalesce(height, 0), duration_s, fps, frame_count, codec, stored_at
FROM stored
QUALIFY row_number() OVER (PARTITION BY media_id ORDER BY stored_at DESC NULLS LAST, blob_key) = 1
""")


def fill_keyword_media(conn: duckdb.DuckDBPyConnection) -> None:
    """Each keyword's stored items: the media id stored under, or (a duplicate of other content) the media item
    with the same sha256; the second item of a keyword with the same media repeats the first."""
    conn.execute(f"""
INSERT INTO keyword_media (partition_key, item, media_id, duplicate_of, fetched_at)
WITH members AS (
    SELECT partition_key, CASE WHEN {_upload("source")} THEN url ELSE media_id END AS item, media_id, sha256,
           false AS repeated, updated_at AS fetched_at
    FROM videos WHERE blob_key IS NOT NULL
    UNION ALL
    SELECT partition_key, CASE WHEN {_upload("source")} THEN image_url ELSE media_id END, media_id, sha256,
           status = 'duplicate', stored_at
    FROM photos WHERE status IN ('stored', 'duplicate')
    UNION ALL
    SELECT partition_key, location, media_id, sha256, status = 'duplicate', registered_at
    FROM uploads WHERE status IN ('stored', 'duplicate')
),
resolved AS (
    SELECT m.partition_key, m.item, coalesce(own.media_id, same.media_id) AS media_id,
           bool_and(m.repeated) AS repeated, max(m.fetched_at) AS fetched_at
    FROM members m
    LEFT JOIN media own ON own.media_id = m.media_id
    LEFT JOIN (SELECT sha256, min(media_id) AS media_id FROM media GROUP BY sha256) same ON same.sha256 = m.sha256
    WHERE coalesce(own.media_id, same.media_id) IS NOT NULL
    GROUP BY ALL
)
SELECT partition_key, item, media_id,
       CASE WHEN row_number() OVER first_item > 1 THEN first_value(item) OVER first_item END, fetched_at
FROM resolved
WINDOW first_item AS (PARTITION BY partition_key, media_id ORDER BY repeated, item)
""")


def fill_samples(conn: duckdb.DuckDBPyConnection, frames_table: str, into: str) -> None:
    """A keyword's earlier frames of a video as one ``legacy`` sample of it (settings 0: no run asks for them)."""
    sampling = "'l' || sha256(partition_key)[1:12]"
    conn.execute(f"""
INSERT INTO video_samples (media_id, sampling, strategy, every_n_frames, every_s, max_frames, jpeg_quality, frames,
                           stopped, sampled_at)
SELECT media_id, {sampling}, 'legacy', 0, 0, 0, 0, count(*), NULL, min(created_at)
FROM {frames_table} GROUP BY partition_key, media_id
""")
    conn.execute(f"""
INSERT INTO {into} (media_id, sampling, frame_index, frame_id, timestamp_s, width, height, blob_key, uri,
                          sha256, created_at)
SELECT media_id, {sampling}, frame_index, frame_id, timestamp_s, width, height, blob_key, uri, sha256, created_at
FROM {frames_table}
QUALIFY row_number() OVER (PARTITION BY partition_key, media_id, frame_index ORDER BY created_at DESC) = 1
""")
    conn.execute(f"""
INSERT INTO keyword_samples (partition_key, media_id, sampling, sampled_at)
SELECT partition_key, media_id, {sampling}, min(created_at) FROM {frames_table} GROUP BY partition_key, media_id
""")


def mapped_errors(errors_table: str | None, stored_ids: bool) -> str:
    """A SELECT of (stage, partition_key, item, reason, recorded_at): the earlier errors under their current stage
    and item, and the failures the earlier media tables recorded that the errors table no longer held."""
    parts = []
    if errors_table:
        # a local or S3 video failed by media id then; now its item is its location
        parts.append(f"""
SELECT {STAGE_OF} AS stage, e.partition_key,
       CASE WHEN e.stage = 'video_registry' AND e.item = 'search' THEN 'youtube search'
            WHEN e.stage = 'raw_videos' AND v.url IS NOT NULL THEN v.url
            ELSE e.item END AS item, e.reason, e.recorded_at
FROM {errors_table} e
LEFT JOIN (SELECT partition_key, media_id, min(url) AS url FROM videos WHERE {_upload("source")} GROUP BY ALL) v
  ON e.stage = 'raw_videos' AND v.partition_key = e.partition_key AND v.media_id = e.item""")
    if stored_ids:
        parts.append(f"""
SELECT 'media' AS stage, partition_key, CASE WHEN {_upload("source")} THEN url ELSE media_id END AS item,
       error AS reason, updated_at AS recorded_at
FROM videos WHERE status = 'failed' AND error IS NOT NULL
UNION ALL
SELECT 'media', partition_key, CASE WHEN {_upload("source")} THEN image_url ELSE media_id END, error, stored_at
FROM photos WHERE status = 'failed' AND error IS NOT NULL
UNION ALL
SELECT 'media', partition_key, location, error, registered_at FROM uploads WHERE status = 'failed'
  AND error IS NOT NULL""")
    if not parts:
        return "SELECT NULL::VARCHAR AS stage, NULL::VARCHAR, NULL::VARCHAR, NULL::VARCHAR, NULL::TIMESTAMP LIMIT 0"
    recorded = parts[0]
    if len(parts) == 1:
        return recorded
    # an old status row's failure counts only where the errors table held nothing for that item
    return f"""
WITH recorded AS ({recorded}),
status_failures AS ({parts[1]})
SELECT * FROM recorded
UNION ALL
SELECT * FROM status_failures s
WHERE NOT EXISTS (SELECT 1 FROM recorded r WHERE r.partition_key = s.partition_key AND r.item = s.item)"""


def fill_errors(conn: duckdb.DuckDBPyConnection, select: str) -> dict[str, int]:
    """Each stage's errors into its table, one row per (partition_key, item): reasons of one item that now fall to
    one stage are joined, oldest first."""
    stages = [row[0] for row in conn.execute(f"SELECT DISTINCT stage FROM ({select}) ORDER BY 1").fetchall()]
    unknown = [stage for stage in stages if f"{stage}{ERRORS_SUFFIX}" not in tables()]
    if unknown:
        raise ValueError(f"ingest_errors holds stages with no error table now: {', '.join(unknown)}; nothing changed")
    written = {}
    for stage in stages:
        table = f"{stage}{ERRORS_SUFFIX}"
        conn.execute(
            f"INSERT INTO {table} (partition_key, item, reason, recorded_at) "
            f"SELECT partition_key, item, string_agg(reason, '; ' ORDER BY recorded_at, reason), max(recorded_at) "
            f"FROM ({select}) WHERE stage = ? GROUP BY partition_key, item",
            [stage],
        )
        written[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return written


def rebuild_with_sha256(
    conn: duckdb.DuckDBPyConnection, into: str, table: str, old_columns: set[str], old_frames: str | None
) -> int:
    """Fill the current ``table`` (built as ``into``) from its earlier rows, with each frame's content
    (``frames.sha256``, else the earlier per-keyword ``video_frames``); returns how many rows had neither and were
    left out."""
    columns = [c for c in tables()[table]["columns"] if c in old_columns]
    fallback = ""
    sha = "f.sha256"
    if old_frames:
        fallback = (
            f"LEFT JOIN (SELECT partition_key, frame_id, min(sha256) AS sha256 FROM {old_frames} GROUP BY ALL) v "
            "ON v.partition_key = o.partition_key AND v.frame_id = o.frame_id"
        )
        sha = "coalesce(f.sha256, v.sha256)"
    conn.execute(f"""
INSERT INTO {into} ({", ".join(columns)}, frame_sha256)
SELECT {", ".join("o." + c for c in columns)}, {sha}
FROM {table} o
LEFT JOIN (SELECT partition_key, frame_id, min(sha256) AS sha256 FROM frames GROUP BY ALL) f
  ON f.partition_key = o.partition_key AND f.frame_id = o.frame_id
{fallback}
WHERE {sha} IS NOT NULL
""")
    before = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    after = conn.execute(f"SELECT count(*) FROM {into}").fetchone()[0]
    return before - after


def convert(conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """``migrate_lake``'s work in the caller's transaction; ``{"migrated": False}`` on a lake of the current
    model (nothing changed)."""
    existing = base_tables(conn)
    legacy = legacy_tables(existing)
    if not legacy:
        return {"migrated": False, "legacy_tables": []}
    missing_media = [table for table in LEGACY_TABLES if table not in existing]
    if missing_media:
        raise ValueError(f"the lake lacks {', '.join(missing_media)}: not a lake of the earlier model; nothing changed")
    schema = tables()
    # a current table whose earlier one can't be altered into it is built beside it (DuckLake loses track of a
    # table renamed and dropped in one transaction, but renaming a table made in it is fine) and takes its name
    # once the earlier one is dropped
    staged: dict[str, str] = {}
    for table in schema:
        if table not in existing:
            continue
        missing = required_missing(table, existing[table])
        if table in legacy or missing:
            if table != "video_frames" and missing != ["frame_sha256"]:
                raise ValueError(
                    f"{table} lacks {', '.join(missing)}: no way to fill it from its rows; nothing changed"
                )
            staged[table] = STAGING_PREFIX + table
    for table in schema:
        if table in staged:
            create_table(conn, table, staged[table])
        elif table not in existing:
            create_table(conn, table)
        else:
            partition_by_key(conn, table)  # the earlier model may have left it unpartitioned; new files follow it
            add_missing_columns(conn, table, existing[table])
    old_frames = "video_frames" if "video_frames" in staged else None
    fill_registry(conn)
    fill_media(conn)
    fill_keyword_media(conn)
    if old_frames:
        fill_samples(conn, old_frames, staged["video_frames"])
    errors_table = "ingest_errors" if "ingest_errors" in existing else None
    before_errors = conn.execute("SELECT count(*) FROM ingest_errors").fetchone()[0] if errors_table else 0
    fill_errors(conn, mapped_errors(errors_table, stored_ids=True))
    left_out = {
        table: rebuild_with_sha256(conn, staged[table], table, existing[table], old_frames)
        for table in staged
        if table != "video_frames"
    }
    conn.execute("""
INSERT INTO deleted_sources (media_id, blob_key, verified_by, deleted_at)
SELECT p.media_id, any_value(m.blob_key), min(p.partition_key), NULL
FROM pose_datasets p JOIN media m USING (media_id)
WHERE p.source_deleted AND p.media_id <> '*'
GROUP BY p.media_id
""")
    dropped = [*LEGACY_TABLES, *([errors_table] if errors_table else []), *staged]
    for table in dropped:
        conn.execute(f"DROP TABLE {table}")
    for table, staging in staged.items():
        conn.execute(f"ALTER TABLE {staging} RENAME TO {table}")
        partition_by_key(conn, table)  # the rows moved over stay in their files; what stages write next is partitioned
    for view, select in views().items():
        conn.execute(f"CREATE OR REPLACE VIEW {view} AS\n{select}")
    return {
        "migrated": True,
        "legacy_tables": legacy,
        "rebuilt": list(staged),
        "dropped": [table for table in dropped if table not in staged],
        "errors_before": before_errors,
        "rows_left_out": {table: count for table, count in left_out.items() if count},
    }


def migrate_lake(warehouse: Warehouse) -> dict[str, Any]:
    """Convert a lake of the earlier data model to the current one, in one retried transaction; on a lake of the
    current model nothing changes (``migrated`` is False).

    Stop every run first: the conversion rewrites tables every stage writes, and takes no lease.

    Returns:
        ``migrated``, the earlier tables found (``legacy_tables``), those dropped (``dropped``) and those rebuilt
        in the current shape under their own name (``rebuilt``), ``errors_before`` (rows of the
        earlier ``ingest_errors``), ``rows_left_out`` (output rows whose frame is nowhere, per table) and ``rows``:
        the row count of every current table after the conversion.
    """
    with migrating():
        for attempt in warehouse.retrying():
            with attempt as conn:
                report = convert(conn)
    cursor = warehouse.cursor()
    try:
        ensure_schema(cursor)  # outside migrating(): refuses a lake still holding earlier tables
        report["rows"] = {table: cursor.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables()}
    finally:
        cursor.close()
    return report
