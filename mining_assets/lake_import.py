"""Bringing an older warehouse file over to the lake, from a Parquet export made by the DuckDB that wrote it.

DuckDB 1.4 (the lake's version) cannot open a file written by a newer DuckDB, so the old file is exported with its
own DuckDB (``EXPORT DATABASE 'DIR' (FORMAT parquet)``) and loaded here table by table, matching columns by name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from mining_assets.keywords import KEYWORDS_LEASE
from mining_assets.warehouse import LEGACY_TABLES, migrating, tables, views

if TYPE_CHECKING:
    import duckdb

    from resources.warehouse import Warehouse

_COPY = re.compile(r"COPY\s+(?:\"?\w+\"?\.)?\"?(\w+)\"?\s+FROM\s+'([^']+)'", re.IGNORECASE)


def export_files(folder: Path) -> dict[str, Path]:
    """Table name -> Parquet file of an export: from its load.sql when present, else by file name."""
    found = {path.stem: path for path in sorted(folder.glob("*.parquet"))}
    load = folder / "load.sql"
    if load.is_file():
        for table, location in _COPY.findall(load.read_text(encoding="utf-8")):
            path = folder / Path(location).name
            if path.is_file():
                found[table] = path
    return found


def import_export(warehouse: Warehouse, folder: Path, replace: bool = False) -> dict[str, str]:
    """Load every table of an export into the lake's table of the same name, all in one transaction (holding the
    keywords lease: the export has a keywords table).

    Columns are matched by name; a column the lake has and the export lacks is NULL (timestamps: now()), a column
    only the export has is left out and named. A lake table that already holds rows is left alone unless
    ``replace``, which empties it first. Returns what happened to each table of the export.

    An export of the earlier data model (``videos``, ``photos``, ``uploads`` tables) is loaded as it is into an
    empty lake and then converted by ``mining warehouse migrate``'s conversion.
    """
    if any(table in LEGACY_TABLES for table in export_files(folder)):
        return import_earlier_model(warehouse, folder)
    for attempt in warehouse.retrying(lease=KEYWORDS_LEASE):
        with attempt as conn:
            report = load_tables(conn, folder, replace)
    return report


def import_earlier_model(warehouse: Warehouse, folder: Path) -> dict[str, str]:
    """Load an export of the earlier data model table by table as it is (the lake must hold no rows), then convert
    the lake to the current model."""
    from mining_assets.migrate import migrate_lake

    files = export_files(folder)
    with migrating():
        for attempt in warehouse.retrying(lease=KEYWORDS_LEASE):
            with attempt as conn:
                filled = [t for t in tables() if t != "api_budgets"
                          and conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]]  # fmt: skip
                if filled:
                    raise ValueError(
                        f"this export is of the earlier data model, and it can only be imported into an empty lake "
                        f"(this one has rows in {', '.join(filled[:5])})"
                    )
                for view in views():
                    conn.execute(f"DROP VIEW IF EXISTS {view}")
                report: dict[str, str] = {}
                for table, path in files.items():
                    if table not in tables() and table not in (*LEGACY_TABLES, "ingest_errors"):
                        report[table] = "left out: not a table of this warehouse"
                        continue
                    source = f"read_parquet('{str(path).replace(chr(39), chr(39) * 2)}')"
                    if table in tables():
                        conn.execute(f"DROP TABLE {table}")  # the empty current table: the earlier one replaces it
                    conn.execute(f"CREATE TABLE {table} AS SELECT * FROM {source}")
                    report[table] = f"{conn.execute(f'SELECT count(*) FROM {table}').fetchone()[0]} rows"
    converted = migrate_lake(warehouse)
    report["(converted)"] = (
        f"earlier tables {', '.join(converted['legacy_tables'])} converted to the current data model; "
        f"media: {converted['rows']['media']} rows, registry: {converted['rows']['registry']} rows"
    )
    return report


def load_tables(conn: duckdb.DuckDBPyConnection, folder: Path, replace: bool) -> dict[str, str]:
    """``import_export``'s work, in the caller's transaction."""
    schema = tables()
    report: dict[str, str] = {}
    for table, path in export_files(folder).items():
        if table not in schema:
            report[table] = "left out: not a table of this warehouse"
            continue
        source = f"read_parquet('{str(path).replace(chr(39), chr(39) * 2)}')"
        exported = [row[0] for row in conn.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
        columns = schema[table]["columns"]
        required = [c for c, (_, constraint, _) in columns.items() if "NOT NULL" in constraint and c not in exported]
        if required:
            report[table] = f"refused: the export lacks required columns {', '.join(required)}"
            continue
        existing = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if existing and not replace:
            report[table] = f"skipped: the lake's table already has {existing} rows (--replace empties it first)"
            continue
        if existing:
            conn.execute(f"DELETE FROM {table}")
        shared = [c for c in columns if c in exported]
        stamps = [c for c, (kind, _, _) in columns.items() if kind == "TIMESTAMP" and c not in exported]
        values = shared + ["now()::TIMESTAMP"] * len(stamps)
        conn.execute(f"INSERT INTO {table} ({', '.join(shared + stamps)}) SELECT {', '.join(values)} FROM {source}")
        count = conn.execute(f"SELECT count(*) FROM {source}").fetchone()[0]
        left_out = [c for c in exported if c not in columns]
        note = f"; columns left out: {', '.join(left_out)}" if left_out else ""
        report[table] = f"{count} rows{' (replaced ' + str(existing) + ')' if existing else ''}{note}"
    if not report:
        report["(none)"] = f"no Parquet files in {folder}"
    return report
