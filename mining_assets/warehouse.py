"""The warehouse's tables and the few write patterns every stage uses, on the DuckLake lake of
``resources.warehouse``.

Each table has one writer, the asset that owns it, and its DDL stands beside that asset in a ``.sql`` file; state
that several stages contribute to (a media item's status, every stage's errors) is a view. Media and their frames
are shared by the keywords that find them (unpartitioned tables keyed by media id); a keyword's partition holds
membership rows that refer to them. DuckLake has no PRIMARY KEY or UNIQUE: each table's key (``KEYS``) is kept by
its writer (delete-then-insert per partition, or ``MERGE``) and checked by the asset that owns it. Every table
with a ``partition_key`` is partitioned by it, so writes to different keywords never share a data file.
Timestamps are set by the writer (``insert_rows`` fills the ``*_at`` columns a frame lacks).
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

# the cursor-level helper lives beside the resource; stages import it from here
from resources.warehouse import query_dicts as query_dicts

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from resources.warehouse import Warehouse

# The resources' own table; every other table's DDL stands beside the asset that owns it, in a ``.sql`` file named
# after the asset's module (``video/frames.sql`` beside ``video/frames.py``). The first line of each CREATE TABLE
# names its key (``-- key: a, b``), unique per row, kept by the one writer and checked by the owner's `unique_key`.
CORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_budgets (  -- key: api; each API's latest request slots, for all runs (resources.budgets)
    api VARCHAR NOT NULL,             -- pexels, unsplash, pixabay, youtube
    slots DOUBLE[] NOT NULL,          -- start times (Unix seconds) of its latest requests, at most one window's worth
    updated_at TIMESTAMP NOT NULL
);
"""

MEDIA_STATUSES = ("pending", "downloaded", "framed", "complete", "failed", "source_deleted")

_PACKAGE = Path(__file__).parent
_STATEMENT = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", re.S)
_VIEW = re.compile(r"CREATE OR REPLACE VIEW (\w+) AS\n(.*?);\n", re.S)
_KEY = re.compile(r"--\s*key:\s*([\w, ]+?)\s*(?:;|$)")
_COLUMN = re.compile(r"^\s*(\w+)\s+([A-Z]+(?:\[\])?)([^-]*?),?\s*(?:--\s*(.*))?$")
ERRORS_SUFFIX = "_errors"


@cache
def schema_files() -> dict[str, str]:
    """The DDL files beside their owners, by path relative to the package (``video/frames.sql``), in path order."""
    return {
        path.relative_to(_PACKAGE).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(_PACKAGE.rglob("*.sql"))
    }


@cache
def tables() -> dict[str, dict[str, Any]]:
    """Each table: its column definitions as written (``body``), its columns (name -> type, constraint text,
    comment) in order, its key, and the DDL file that holds it (``owner``)."""
    found: dict[str, dict[str, Any]] = {}
    for owner, text in {"warehouse.py": CORE_SCHEMA, **schema_files()}.items():
        for name, body in _STATEMENT.findall(text):
            if name in found:
                raise ValueError(f"table {name} is defined in {found[name]['owner']} and in {owner}")
            first, *lines = body.split("\n")
            key = _KEY.search(first)
            if not key:
                raise ValueError(f"table {name} ({owner}) does not name its key (-- key: ...)")
            columns: dict[str, tuple[str, str, str]] = {}
            for line in lines:
                match = _COLUMN.match(line)
                if match:
                    column, kind, constraint, comment = match.groups()
                    columns[column] = (kind, constraint.strip(), (comment or "").strip())
            keys = tuple(part.strip() for part in key.group(1).split(","))
            unknown = [column for column in keys if column not in columns]
            if unknown:
                raise ValueError(f"table {name} ({owner}): key columns {unknown} are not columns")
            found[name] = {"body": body, "columns": columns, "key": keys, "owner": owner}
    return found


@cache
def views() -> dict[str, str]:
    """Each view: its SELECT. ``ingest_errors`` is every stage's error table side by side."""
    stages = sorted(name for name in tables() if name.endswith(ERRORS_SUFFIX))
    found = {
        "ingest_errors": "\nUNION ALL\n".join(
            f"SELECT partition_key, '{name.removesuffix(ERRORS_SUFFIX)}' AS stage, item, reason, recorded_at "
            f"FROM {name}"
            for name in stages
        )
    }
    found.update({name: select for text in schema_files().values() for name, select in _VIEW.findall(text)})
    return found


@cache
def normalized_views() -> dict[str, str]:
    """Each view's SQL as DuckDB stores it (made once per process on empty tables in memory), to tell whether a
    lake's view is current."""
    import duckdb

    with duckdb.connect() as scratch:
        for table in tables():
            scratch.execute(table_ddl(table))
        for view, select in views().items():
            scratch.execute(f"CREATE VIEW {view} AS\n{select}")
        return dict(scratch.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall())


def __getattr__(name: str) -> Any:
    """``KEYS``: the key of each table (``KEYS["media"] == ("media_id",)``), read from the DDL files when asked."""
    if name == "KEYS":
        return {table: spec["key"] for table, spec in tables().items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def table_ddl(table: str) -> str:
    """The CREATE TABLE statement of one table (plain SQL: no partitioning)."""
    return f"CREATE TABLE {table} ({tables()[table]['body']}\n)"


def error_table(stage: str) -> str:
    """The table that holds a stage's recorded (item, reason) errors."""
    name = f"{stage}{ERRORS_SUFFIX}"
    if name not in tables():
        raise KeyError(f"stage {stage!r} has no error table {name} in its DDL file")
    return name


class LegacyLake(Exception):
    """A lake written by the earlier data model (one ``videos``/``photos``/``uploads`` table per keyword row)."""


# tables only the earlier data model has, and a column only its `video_frames` had
LEGACY_TABLES = ("videos", "photos", "uploads")
_MIGRATING = contextvars.ContextVar("migrating", default=False)


@contextmanager
def migrating() -> Iterator[None]:
    """Within the block, attaching a lake of the earlier data model leaves it as it is (for the migration)."""
    token = _MIGRATING.set(True)
    try:
        yield
    finally:
        _MIGRATING.reset(token)


def legacy_tables(existing: dict[str, set[str]]) -> list[str]:
    """The tables of the earlier data model among a lake's base tables (name -> columns)."""
    found = [name for name in (*LEGACY_TABLES, "ingest_errors") if name in existing]
    if "partition_key" in existing.get("video_frames", set()):
        found.append("video_frames")
    return found


def partition_by_key(conn: duckdb.DuckDBPyConnection, table: str) -> None:
    """Partition a table with a ``partition_key`` by it, so writers of different keywords share no data file."""
    if "partition_key" in tables()[table]["columns"]:
        conn.execute(f"ALTER TABLE {table} SET PARTITIONED BY (partition_key)")


def add_missing_columns(conn: duckdb.DuckDBPyConnection, table: str, existing: set[str]) -> None:
    """Add the DDL's columns a lake's table lacks (NULL for its rows, or the column's literal default)."""
    for column, (kind, constraint, _) in tables()[table]["columns"].items():
        if column not in existing:
            default = re.search(r"DEFAULT\s+(\S+)", constraint)
            extra = f" DEFAULT {default.group(1)}" if default else ""
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}{extra}")


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the tables that do not exist (partitioned by partition_key), add the columns a table lacks, and
    (re)create the views.

    A lake made by an earlier schema keeps its rows; a new column is added as NULL (or its literal default).
    Tables of an earlier data model that a view's name now stands for are left to ``mining warehouse migrate``.
    """
    from resources.warehouse import LAKE

    conn.execute("BEGIN TRANSACTION")
    try:
        existing: dict[str, set[str]] = {}
        for table, column in conn.execute(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c "
            "JOIN information_schema.tables t USING (table_catalog, table_schema, table_name) "
            "WHERE c.table_catalog = ? AND c.table_schema = 'main' AND t.table_type = 'BASE TABLE'",
            [LAKE],
        ).fetchall():
            existing.setdefault(table, set()).add(column)
        legacy = legacy_tables(existing)
        if legacy and _MIGRATING.get():
            conn.execute("COMMIT")
            return
        if legacy:
            raise LegacyLake(
                f"this lake holds tables of the earlier data model ({', '.join(legacy)}): "
                "convert it with `mining warehouse migrate`"
            )
        if "partition_leases" in existing:  # the write leases moved out of the lake (resources.warehouse)
            conn.execute("DROP TABLE partition_leases")
        for table in tables():
            if table not in existing:
                conn.execute(table_ddl(table))
                partition_by_key(conn, table)
            else:
                add_missing_columns(conn, table, existing[table])
        # a view is written only when it is missing or its SQL changed: every process attaches, and DDL on each
        # attach would make concurrent attaches conflict in the catalog
        current = dict(conn.execute(
            "SELECT view_name, sql FROM duckdb_views() WHERE database_name = ? AND NOT internal", [LAKE]
        ).fetchall())  # fmt: skip
        for view, select in views().items():
            if view not in existing and current.get(view) != normalized_views()[view]:
                conn.execute(f"CREATE OR REPLACE VIEW {view} AS\n{select}")
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
    if unchanged(conn, table, partition_key, rows, where, params):
        return len(rows)
    conn.execute(f"DELETE FROM {table} WHERE partition_key = ? {where}", [partition_key, *params])
    return insert_rows(conn, table, rows)


def unchanged(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    partition_key: str,
    rows: pd.DataFrame,
    where: str = "",
    params: Sequence[Any] = (),
) -> bool:
    """Whether the partition's rows (matching ``where``) already are exactly ``rows``, as the table's types hold
    them (timestamps the writer sets left out): then a replace would only rewrite them, so it is left undone and an
    unchanged re-run writes no data file."""
    scope = f"FROM {table} WHERE partition_key = ? {where}"
    stored = conn.execute(f"SELECT count(*) {scope}", [partition_key, *params]).fetchone()[0]
    if stored != len(rows) or not len(rows):
        return stored == len(rows) == 0
    kinds = tables()[table]["columns"]
    names = [name for name in rows.columns if name in kinds]
    if len(names) != len(rows.columns):
        return False
    incoming = ", ".join(f'CAST("{name}" AS {kinds[name][0]}) AS "{name}"' for name in names)
    columns = ", ".join(f'"{name}"' for name in names)
    conn.register("_compared", rows)
    try:
        differing = conn.execute(
            f"SELECT count(*) FROM (SELECT {columns} {scope} EXCEPT ALL SELECT {incoming} FROM _compared)",
            [partition_key, *params],
        ).fetchone()[0]
    finally:
        conn.unregister("_compared")
    return differing == 0


def record_errors(
    conn: duckdb.DuckDBPyConnection, partition_key: str, stage: str, errors: Sequence[tuple[str, str]]
) -> None:
    """Replace the (item, reason) errors a stage recorded for a partition, in the stage's own error table."""
    import pandas as pd

    frame = pd.DataFrame(errors, columns=["item", "reason"]).assign(partition_key=partition_key)
    replace_partition_rows(conn, error_table(stage), partition_key, frame)


def replace_stage_rows(
    warehouse: Warehouse,
    partition_key: str,
    table: str,
    rows: pd.DataFrame,
    stage: str,
    errors: Sequence[tuple[str, str]],
    where: str = "",
    params: Sequence[Any] = (),
    owned: Sequence[str] | None = None,
) -> tuple[dict[str, Any], dg.AssetCheckResult]:
    """A stage's write: its rows of ``table`` and its recorded errors replaced for a partition, in one transaction
    under the partition's lease; returns the table's report (``table_report`` over ``owned``) from that
    transaction."""
    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            replace_partition_rows(conn, table, partition_key, rows, where, params)
            record_errors(conn, partition_key, stage, errors)
            report = table_report(conn, partition_key, table, owned)
    return report


def keyword_text(conn: duckdb.DuckDBPyConnection, partition_key: str) -> str:
    """The keyword text behind a partition key; a key added by hand in the UI is its own text."""
    row = conn.execute("SELECT keyword FROM keywords WHERE partition_key = ?", [partition_key]).fetchone()
    return row[0] if row else partition_key


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
    conn: duckdb.DuckDBPyConnection, partition_key: str, table: str, owned: Sequence[str] | None = None
) -> tuple[dict[str, Any], dg.AssetCheckResult]:
    """What the owner of ``table`` reports after its write: the table's metadata and the `unique_key` check over
    the tables it owns (``owned``, default just ``table``). Read in the writing block, it reports what that block
    commits, in the same transaction."""
    return table_metadata(conn, table, partition_key), unique_key_check(conn, partition_key, owned or [table])


def unique_key_spec(asset: str, tables_owned: Sequence[str]) -> dg.AssetCheckSpec:
    """The `unique_key` check of an asset that owns tables: their keys (``KEYS``) are unique in the partition."""
    keys = "; ".join(f"{table}: {', '.join(tables()[table]['key'])}" for table in tables_owned)
    return dg.AssetCheckSpec("unique_key", asset=asset, description=f"No two rows share a key ({keys}).")


def duplicate_keys(conn: duckdb.DuckDBPyConnection, table: str, partition_key: str) -> int:
    """How many keys of ``table`` occur more than once in a partition (in the whole table, for a table shared by
    every keyword)."""
    key = ", ".join(tables()[table]["key"])
    partitioned = "partition_key" in tables()[table]["columns"]
    where, params = ("WHERE partition_key = ?", [partition_key]) if partitioned else ("", [])
    return conn.execute(
        f"SELECT count(*) FROM (SELECT {key} FROM {table} {where} GROUP BY ALL HAVING count(*) > 1)", params
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
