"""The warehouse's tables and the few write patterns every stage uses, on the DuckLake lake of
``resources.warehouse``.

One row per keyword, video and frame. DuckLake has no PRIMARY KEY or UNIQUE: each table's key (``KEYS``) is kept
by its writers (delete-then-insert per partition, or ``MERGE``) and checked by the asset that owns it. Every table
with a ``partition_key`` is partitioned by it, so writes to different keywords never share a data file. Timestamps
are set by the writer (``insert_rows`` fills the ``*_at`` columns a frame lacks).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

import dagster as dg

# the cursor-level helper lives beside the resource; stages import it from here
from resources.warehouse import query_dicts as query_dicts

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from resources.warehouse import Warehouse

SCHEMA = """
CREATE TABLE IF NOT EXISTS keywords (
    partition_key VARCHAR NOT NULL,
    keyword VARCHAR NOT NULL,
    added_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS keyword_tags (  -- keywords added from a preset, with their category
    partition_key VARCHAR NOT NULL,
    preset VARCHAR NOT NULL,          -- e.g. actions
    category VARCHAR NOT NULL         -- e.g. grasping
);
CREATE TABLE IF NOT EXISTS videos (
    partition_key VARCHAR NOT NULL,
    keyword VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    url VARCHAR NOT NULL,
    title VARCHAR,
    channel VARCHAR,
    duration_s DOUBLE,
    status VARCHAR NOT NULL DEFAULT 'pending',
    error VARCHAR,
    blob_key VARCHAR,
    uri VARCHAR,
    size_bytes BIGINT,
    width INTEGER,
    height INTEGER,
    fps DOUBLE,
    frame_count BIGINT,
    codec VARCHAR,
    sha256 VARCHAR,
    discovered_at TIMESTAMP,
    updated_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS video_frames (
    partition_key VARCHAR NOT NULL,
    keyword VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    frame_index BIGINT NOT NULL,
    timestamp_s DOUBLE NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    blob_key VARCHAR NOT NULL,
    uri VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    created_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS frames (
    partition_key VARCHAR NOT NULL,
    keyword VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    media_type VARCHAR NOT NULL,      -- 'video' (a sampled frame) or 'photo' (the photo itself)
    frame_index BIGINT,               -- NULL for photos
    timestamp_s DOUBLE,               -- NULL for photos
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    blob_key VARCHAR NOT NULL,
    uri VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    source_url VARCHAR,
    created_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS photos (      -- one row per stock photo a keyword found, stored or not
    partition_key VARCHAR NOT NULL,
    keyword VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,        -- '<source>-<source id>'
    source VARCHAR NOT NULL,          -- pexels, unsplash, pixabay
    source_id VARCHAR NOT NULL,
    query VARCHAR NOT NULL,
    page_url VARCHAR NOT NULL,
    image_url VARCHAR NOT NULL,
    photographer VARCHAR,
    photographer_url VARCHAR,
    license VARCHAR NOT NULL,
    description VARCHAR,
    status VARCHAR NOT NULL,          -- stored, duplicate (same bytes as another photo), failed
    error VARCHAR,
    width INTEGER,                    -- as displayed (EXIF orientation applied)
    height INTEGER,
    blob_key VARCHAR,
    uri VARCHAR,
    sha256 VARCHAR,
    stored_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS prompt_sets (   -- the prompts filtered_frames last scored a keyword against
    partition_key VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,            -- 'class' (also a detector label) or 'caption'
    label VARCHAR NOT NULL,           -- the class or caption as given
    prompt VARCHAR NOT NULL           -- the text the model saw
);
CREATE TABLE IF NOT EXISTS frame_scores (  -- every score ever computed, so a new threshold needs no model
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    frame_sha256 VARCHAR NOT NULL,    -- a score is reused only for the same image content
    model VARCHAR NOT NULL,
    prompt VARCHAR NOT NULL,
    score FLOAT NOT NULL,
    scored_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS filtered_frames (
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    best_prompt VARCHAR NOT NULL,
    best_score FLOAT NOT NULL,
    passed BOOLEAN NOT NULL,
    threshold DOUBLE NOT NULL,
    model VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS frame_embeddings (
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    dim INTEGER NOT NULL,
    blob_key VARCHAR NOT NULL,        -- a float32 .npy shard, content-addressed
    uri VARCHAR NOT NULL,
    shard_row INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS unique_frames (
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    kept BOOLEAN NOT NULL,
    representative_id VARCHAR NOT NULL,  -- the kept frame this one duplicates (itself when kept)
    similarity FLOAT NOT NULL,
    threshold DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS detections (
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    detection_index INTEGER NOT NULL,
    label VARCHAR NOT NULL,
    score FLOAT NOT NULL,
    x0 FLOAT NOT NULL,                -- pixels of the stored frame, (x0, y0) top left, (x1, y1) bottom right
    y0 FLOAT NOT NULL,
    x1 FLOAT NOT NULL,
    y1 FLOAT NOT NULL,
    image_width INTEGER NOT NULL,
    image_height INTEGER NOT NULL,
    detector VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads (     -- media of a keyword from an S3 bucket or a local collection
    partition_key VARCHAR NOT NULL,
    keyword VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,        -- 's3-<sha256[:16]>' / 'local-<sha256[:16]>' of the content
    source VARCHAR NOT NULL,          -- s3, local
    location VARCHAR NOT NULL,        -- s3://bucket/key or file:///path, as found (never used as a storage path)
    media_type VARCHAR,               -- photo or video, decided by content; NULL when neither
    status VARCHAR NOT NULL,          -- stored, duplicate, failed
    error VARCHAR,
    size_bytes BIGINT,
    sha256 VARCHAR,
    registered_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS quality_scores (  -- 0-100 per frame; the formula is in the README
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,
    score DOUBLE NOT NULL,
    rating VARCHAR NOT NULL,          -- excellent, good, fair, poor
    accepted BOOLEAN NOT NULL,
    threshold DOUBLE NOT NULL,
    pose_points DOUBLE NOT NULL,      -- 0-50
    hand_points DOUBLE NOT NULL,      -- 0-20
    lighting_points DOUBLE NOT NULL,  -- 0-15
    sharpness_points DOUBLE NOT NULL, -- 0-10
    resolution_points DOUBLE NOT NULL,-- 0-5
    pose_visibility DOUBLE,           -- mean landmark visibility of the best pose (NULL: no pose)
    hands_found INTEGER NOT NULL,
    brightness DOUBLE NOT NULL,       -- mean luma 0-255
    contrast DOUBLE NOT NULL,         -- luma standard deviation
    sharpness DOUBLE NOT NULL,        -- variance of the Laplacian
    megapixels DOUBLE NOT NULL,
    image_width INTEGER NOT NULL,     -- the IMAGE-mode landmarks found while scoring, as in `poses`: for a photo
    image_height INTEGER NOT NULL,    -- they are exactly what `poses` would compute, so it copies them
    pose_found BOOLEAN NOT NULL,
    pose_landmarks FLOAT[],
    pose_world_landmarks FLOAT[],
    left_hand FLOAT[],
    left_hand_score FLOAT,
    right_hand FLOAT[],
    right_hand_score FLOAT,
    models VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS poses (       -- one row per accepted frame; landmarks as flat float lists
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,
    media_type VARCHAR NOT NULL,      -- video or photo
    sequence_index INTEGER NOT NULL,  -- order of the frame in its media item (time order for video)
    timestamp_s DOUBLE,               -- NULL for photos
    image_width INTEGER NOT NULL,
    image_height INTEGER NOT NULL,
    pose_found BOOLEAN NOT NULL,
    pose_landmarks FLOAT[],           -- 33 x (x, y, z, visibility), x and y normalised to the image
    pose_world_landmarks FLOAT[],     -- 33 x (x, y, z) metres, hip-centred
    left_hand FLOAT[],                -- 21 x (x, y, z) normalised; NULL when not found
    left_hand_score FLOAT,
    right_hand FLOAT[],
    right_hand_score FLOAT,
    models VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS pose_datasets (  -- HDF5 files written by pose_datasets
    partition_key VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,        -- '*' for the keyword's file
    frames INTEGER NOT NULL,
    blob_key VARCHAR NOT NULL,
    uri VARCHAR NOT NULL,
    sidecar_key VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    source_deleted BOOLEAN NOT NULL   -- set by its writer (DuckLake takes only literal defaults, and false is not one)
);
CREATE TABLE IF NOT EXISTS partition_leases (  -- who may write a partition now (resources.warehouse); expires by itself
    name VARCHAR NOT NULL,            -- a partition key, or table:<name> for a table without partitions
    holder VARCHAR NOT NULL,
    taken_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS ingest_errors (
    partition_key VARCHAR NOT NULL,
    stage VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    recorded_at TIMESTAMP
);
"""

# The key of each table: unique per row, kept by the writers, checked by the owning asset's `unique_key` check.
KEYS: dict[str, tuple[str, ...]] = {
    "keywords": ("partition_key",),
    "keyword_tags": ("partition_key", "preset"),
    "videos": ("partition_key", "media_id"),
    "video_frames": ("partition_key", "frame_id"),
    "frames": ("partition_key", "frame_id"),
    "photos": ("partition_key", "media_id"),
    "prompt_sets": ("partition_key", "kind", "label"),
    "frame_scores": ("partition_key", "frame_id", "model", "prompt"),
    "filtered_frames": ("partition_key", "frame_id"),
    "frame_embeddings": ("partition_key", "frame_id"),
    "unique_frames": ("partition_key", "frame_id"),
    "detections": ("partition_key", "frame_id", "detection_index"),
    "uploads": ("partition_key", "location"),
    "quality_scores": ("partition_key", "frame_id"),
    "poses": ("partition_key", "frame_id"),
    "pose_datasets": ("partition_key", "media_id"),
}

VIDEO_STATUSES = ("pending", "downloaded", "framed", "complete", "failed")

_STATEMENT = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", re.S)
_COLUMN = re.compile(r"^\s*(\w+)\s+([A-Z]+(?:\[\])?)([^-]*?),?\s*(?:--\s*(.*))?$")


@cache
def tables() -> dict[str, dict[str, Any]]:
    """Each table of SCHEMA: its column definitions as written (``body``) and its columns (name -> type, constraint
    text, comment), in order."""
    found: dict[str, dict[str, Any]] = {}
    for name, body in _STATEMENT.findall(SCHEMA):
        columns: dict[str, tuple[str, str, str]] = {}
        for line in body.split("\n")[1:]:
            match = _COLUMN.match(line)
            if match:
                column, kind, constraint, comment = match.groups()
                columns[column] = (kind, constraint.strip(), (comment or "").strip())
        found[name] = {"body": body, "columns": columns}
    return found


def table_ddl(table: str) -> str:
    """The CREATE TABLE statement of one table of SCHEMA (plain SQL: no partitioning)."""
    return f"CREATE TABLE {table} ({tables()[table]['body']}\n)"


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the tables that do not exist (partitioned by partition_key) and add the columns a table lacks.

    A lake made by an earlier schema keeps its rows; a new column is added as NULL (or its literal default).
    """
    from resources.warehouse import LAKE

    conn.execute("BEGIN TRANSACTION")
    try:
        existing: dict[str, set[str]] = {}
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_catalog = ? AND table_schema = 'main'",
            [LAKE],
        ).fetchall():
            existing.setdefault(table, set()).add(column)
        for table, spec in tables().items():
            if table not in existing:
                conn.execute(table_ddl(table))
                if "partition_key" in spec["columns"]:
                    conn.execute(f"ALTER TABLE {table} SET PARTITIONED BY (partition_key)")
                continue
            for column, (kind, constraint, _) in spec["columns"].items():
                if column not in existing[table]:
                    default = re.search(r"DEFAULT\s+(\S+)", constraint)
                    extra = f" DEFAULT {default.group(1)}" if default else ""
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}{extra}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def execute_with_rows(conn: duckdb.DuckDBPyConnection, sql: str, rows: pd.DataFrame) -> None:
    """Run ``sql`` (an INSERT or MERGE) with ``rows`` visible to it as the table ``_incoming``."""
    conn.register("_incoming", rows)
    try:
        conn.execute(sql)
    finally:
        conn.unregister("_incoming")


def insert_rows(conn: duckdb.DuckDBPyConnection, table: str, rows: pd.DataFrame) -> int:
    """Insert a frame's rows by column name; timestamp columns the frame lacks are set to now()."""
    if not len(rows):
        return 0
    names = list(rows.columns)
    stamps = [c for c, (kind, _, _) in tables()[table]["columns"].items() if kind == "TIMESTAMP" and c not in names]
    values = ", ".join(names + ["now()::TIMESTAMP"] * len(stamps))
    execute_with_rows(conn, f"INSERT INTO {table} ({', '.join(names + stamps)}) SELECT {values} FROM _incoming", rows)
    return len(rows)


def replace_partition_rows(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    partition_key: str,
    rows: pd.DataFrame,
    where: str = "",
    params: Sequence[Any] = (),
) -> int:
    """Replace a partition's rows of a table (optionally only those matching ``where``).

    Call it inside a retried block (``warehouse.retrying(lease=partition_key)``): the block is the transaction,
    and the lease keeps a second writer of the same partition from committing beside this one.
    """
    conn.execute(f"DELETE FROM {table} WHERE partition_key = ? {where}", [partition_key, *params])
    return insert_rows(conn, table, rows)


def record_errors(
    conn: duckdb.DuckDBPyConnection, partition_key: str, stage: str, errors: Sequence[tuple[str, str]]
) -> None:
    """Replace the (item, reason) errors a stage recorded for a partition."""
    import pandas as pd

    frame = pd.DataFrame(errors, columns=["item", "reason"]).assign(partition_key=partition_key, stage=stage)
    replace_partition_rows(conn, "ingest_errors", partition_key, frame, "AND stage = ?", [stage])


def replace_stage_rows(
    warehouse: Warehouse,
    partition_key: str,
    table: str,
    rows: pd.DataFrame,
    stage: str,
    errors: Sequence[tuple[str, str]],
    where: str = "",
    params: Sequence[Any] = (),
) -> None:
    """A stage's write: its rows of ``table`` and its recorded errors replaced for a partition, in one transaction
    under the partition's lease."""
    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            replace_partition_rows(conn, table, partition_key, rows, where, params)
            record_errors(conn, partition_key, stage, errors)


def keyword_text(conn: duckdb.DuckDBPyConnection, partition_key: str) -> str:
    """The keyword text behind a partition key; a key added by hand in the UI is its own text."""
    row = conn.execute("SELECT keyword FROM keywords WHERE partition_key = ?", [partition_key]).fetchone()
    return row[0] if row else partition_key


def set_video_status(
    conn: duckdb.DuckDBPyConnection,
    partition_key: str,
    media_id: str,
    status: str,
    error: str | None = None,
    **fields: Any,
) -> None:
    """Move one video to a new status, recording the error (or clearing it) and any probed fields."""
    if status not in VIDEO_STATUSES:
        raise ValueError(f"unknown video status {status!r}")
    assignments = ", ".join(f"{name} = ?" for name in fields)
    extra = f", {assignments}" if assignments else ""
    conn.execute(
        f"UPDATE videos SET status = ?, error = ?, updated_at = now()::TIMESTAMP{extra} "
        "WHERE partition_key = ? AND media_id = ?",
        [status, error, *fields.values(), partition_key, media_id],
    )


# ---------------------------------------------------------------------- what Dagster shows of a table
def column_schema(table: str) -> dg.TableSchema:
    """The table's columns as Dagster shows them, from its DDL (type, NOT NULL, and the DDL's comment)."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=column,
                type=kind,
                description=comment or None,
                constraints=dg.TableColumnConstraints(nullable="NOT NULL" not in constraint),
            )
            for column, (kind, constraint, comment) in tables()[table]["columns"].items()
        ]
    )


def table_definition_metadata(table: str) -> dict[str, Any]:
    """Definition metadata of the asset that owns ``table``: its name and columns, shown before any run."""
    return {"dagster/table_name": f"lake.main.{table}", "dagster/column_schema": column_schema(table)}


def table_metadata(conn: duckdb.DuckDBPyConnection, table: str, partition_key: str | None) -> dict[str, Any]:
    """Materialization metadata of the asset that owns ``table``: name, columns, the partition's and the table's
    row counts (so the overview never shows one partition's count as the asset's)."""
    total, in_partition = conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE partition_key = ?) FROM {table}", [partition_key]
    ).fetchone()
    return {
        **table_definition_metadata(table),
        "dagster/partition_row_count": dg.MetadataValue.int(int(in_partition)),
        "dagster/row_count": dg.MetadataValue.int(int(total)),
    }


def table_report(
    warehouse: Warehouse, partition_key: str, table: str, owned: Sequence[str] | None = None
) -> tuple[dict[str, Any], dg.AssetCheckResult]:
    """What the owner of ``table`` reports after its write: the table's metadata and the `unique_key` check over
    the tables it owns (``owned``, default just ``table``), read in one snapshot."""
    for attempt in warehouse.retrying():
        with attempt as conn:
            metadata = table_metadata(conn, table, partition_key)
            check = unique_key_check(conn, partition_key, owned or [table])
    return metadata, check


def unique_key_spec(asset: str, tables_owned: Sequence[str]) -> dg.AssetCheckSpec:
    """The `unique_key` check of an asset that owns tables: their keys (``KEYS``) are unique in the partition."""
    keys = "; ".join(f"{table}: {', '.join(KEYS[table])}" for table in tables_owned)
    return dg.AssetCheckSpec("unique_key", asset=asset, description=f"No two rows share a key ({keys}).")


def duplicate_keys(conn: duckdb.DuckDBPyConnection, table: str, partition_key: str) -> int:
    """How many keys of ``table`` occur more than once in a partition."""
    key = ", ".join(KEYS[table])
    return conn.execute(
        f"SELECT count(*) FROM (SELECT {key} FROM {table} WHERE partition_key = ? GROUP BY ALL HAVING count(*) > 1)",
        [partition_key],
    ).fetchone()[0]


def unique_key_check(
    conn: duckdb.DuckDBPyConnection, partition_key: str, tables_owned: Sequence[str]
) -> dg.AssetCheckResult:
    """The `unique_key` check's result: duplicated keys per owned table in this partition (0 everywhere passes)."""
    duplicated = {table: duplicate_keys(conn, table, partition_key) for table in tables_owned}
    return dg.AssetCheckResult(
        check_name="unique_key",
        passed=not any(duplicated.values()),
        metadata={"duplicated_keys": dg.MetadataValue.json(duplicated)},
    )
