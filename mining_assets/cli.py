"""The ``mining`` command line: start the local UI, add keywords, and inspect or export the video registry."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import dagster as dg

from mining_assets import keyword_settings
from mining_assets.keywords import add_keyword_partitions, register_keywords
from mining_assets.lake_import import import_export
from mining_assets.partitions import keyword_partitions, keyword_slug
from mining_assets.presets import PRESETS, register_preset
from mining_assets.warehouse import MEDIA_STATUSES
from resources import settings
from resources.warehouse import Warehouse, WarehouseUnavailable, warehouse_from_env

if TYPE_CHECKING:
    import duckdb

T = TypeVar("T")

DEFAULT_INSTANCE_YAML = """\
# Written by `mining`: the embedded SQLite instance. See deploy/dagster.production.yaml for Postgres and S3.
telemetry:
  enabled: false
# at most one run per keyword partition at a time; other keywords side by side (no warehouse pool);
# one model step at a time in each model pool (vision_models, pose_models)
concurrency:
  runs:
    max_concurrent_runs: 4
    tag_concurrency_limits:
      - key: dagster/partition
        value:
          applyLimitPerUniqueValue: true
        limit: 1
  pools:
    default_limit: 1
# a queued run waits out a code location that can't be loaded (a redeploy, an import error): retried every 5 s,
# 60 times, instead of failed at once (the run limits stay in `concurrency`: Dagster refuses them in both places)
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
    max_user_code_failure_retries: 60
    user_code_failure_retry_delay: 5
# a crashed run is failed, its pool slots freed after 5 s, and it is retried from the failed step (not a step
# that raised: the steps' own retry policies handle those)
run_monitoring:
  enabled: true
  poll_interval_seconds: 5
  free_slots_after_run_end_seconds: 5
  start_timeout_seconds: 180
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
"""
EXPORT_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json", ".parquet": "parquet"}
COPY_OPTIONS = {"csv": "FORMAT csv, HEADER", "json": "FORMAT json", "parquet": "FORMAT parquet"}
CELL_WIDTH = 40
LIST_COLUMNS = ("media_id", "media_type", "status", "source", "title", "url", "error")
KNOWN_KEY_SQL = (
    "SELECT 1 FROM keywords WHERE partition_key = ? UNION ALL SELECT 1 FROM registry WHERE partition_key = ?"
)


def ensure_dagster_home() -> Path:
    """Point DAGSTER_HOME at ``settings.dagster_home()``, creating it (with a default dagster.yaml) if missing.

    Returns:
        The absolute Dagster home, also set in ``os.environ["DAGSTER_HOME"]`` for this process and its children.
    """
    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DEFAULT_INSTANCE_YAML, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def dagster_executable() -> str:
    """The ``dagster`` executable: the one beside this Python interpreter, else the first on PATH.

    Raises:
        click.ClickException: neither exists.
    """
    beside = Path(sys.executable).parent / "dagster"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("dagster")
    if found is None:
        raise click.ClickException("no dagster executable beside the Python interpreter or on PATH")
    return found


def dev_command(host: str, port: int) -> list[str]:
    """Prepare the Dagster home and data directory, and build the ``dagster dev`` command line.

    Args:
        host: Interface the webserver listens on.
        port: Port the webserver listens on.

    Returns:
        The argv to exec; DAGSTER_HOME is set in ``os.environ``, which the exec inherits.
    """
    ensure_dagster_home()
    settings.data_dir().mkdir(parents=True, exist_ok=True)
    return [dagster_executable(), "dev", "-m", "mining_assets.definitions", "-h", host, "-p", str(port)]


def _cell(value: Any, width: int | None = CELL_WIDTH) -> str:
    """Printable text for a value: control and format characters become spaces, long text is cut to width."""
    text = "" if value is None else str(value)
    text = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as aligned columns; columns holding only integers are right-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    numeric = [all(isinstance(row[i], int) for row in rows) for i in range(len(headers))]
    widths = [max([len(header)] + [len(row[i]) for row in cells]) for i, header in enumerate(headers)]
    align = [(str.rjust if right else str.ljust, width) for right, width in zip(numeric, widths, strict=True)]
    lines = [
        "  ".join(pad(text, width) for text, (pad, width) in zip(row, align, strict=True)) for row in [headers, *cells]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _warehouse(create: bool) -> Warehouse:
    """The environment's warehouse; reading commands refuse an embedded lake that does not exist yet."""
    warehouse = warehouse_from_env()
    try:
        kind = warehouse.kind
    except WarehouseUnavailable as error:  # a catalog setting of no known kind: a message, not a traceback
        raise click.ClickException(str(error)) from error
    if not create and kind == "sqlite" and not Path(warehouse.catalog.split(":", 1)[1]).is_file():
        raise click.ClickException(
            f"no warehouse yet ({warehouse.describe()}): add a keyword and materialize media_registry"
        )
    return warehouse


def _with_warehouse(work: Callable[[Warehouse], T], create: bool = False) -> T:
    """Run ``work`` on the environment's warehouse; its errors become messages, never tracebacks."""
    import duckdb

    from mining_assets.warehouse import LegacyLake

    warehouse = _warehouse(create)
    try:
        return work(warehouse)
    except (WarehouseUnavailable, LegacyLake, duckdb.Error) as error:
        raise click.ClickException(warehouse.scrub(str(error))) from error


def _in_warehouse(work: Callable[[duckdb.DuckDBPyConnection], T], create: bool = False) -> T:
    """Run ``work`` in one retried warehouse transaction; errors become messages, never tracebacks."""

    def transaction(warehouse: Warehouse) -> T:
        for attempt in warehouse.retrying():
            with attempt as conn:
                result = work(conn)
        return result

    return _with_warehouse(transaction, create)


def _partition_key(conn: duckdb.DuckDBPyConnection, value: str | None) -> str | None:
    """The partition key for ``--keyword``: the value itself if it is a known key, else the slug of its text."""
    if value is None or conn.execute(KNOWN_KEY_SQL, [value, value]).fetchone():
        return value
    try:
        return keyword_slug(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--keyword") from error


def _where(clauses: dict[str, str | None]) -> tuple[str, list[str]]:
    """A WHERE clause matching each column to its value (None values are skipped), and its parameters."""
    used = {column: value for column, value in clauses.items() if value is not None}
    if not used:
        return "", []
    return "WHERE " + " AND ".join(f"{column} = ?" for column in used), list(used.values())


keyword_option = click.option("--keyword", help="Keyword text or partition key.")


@click.group()
def main() -> None:
    """Mine visual datasets: run the local Dagster UI, add keywords, inspect the video registry."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface for the webserver.")
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True, help="Webserver port.")
def dev(host: str, port: int) -> None:
    """Start `dagster dev` on the embedded instance (this process is replaced)."""
    argv = dev_command(host, port)
    click.echo(f"DAGSTER_HOME={os.environ['DAGSTER_HOME']}\n$ {shlex.join(argv)}", err=True)
    os.execvp(argv[0], argv)


@main.group()
def keywords() -> None:
    """Keyword partitions."""


@keywords.command("add")
@click.argument("texts", nargs=-1, required=True)
def keywords_add(texts: tuple[str, ...]) -> None:
    """Add a keyword partition for each TEXT, keeping its exact text in the warehouse."""
    pairs, rejected = _with_warehouse(lambda warehouse: register_keywords(warehouse, texts), create=True)
    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        new = set(add_keyword_partitions(instance, [key for key, _ in pairs]))
    for key, keyword in pairs:
        click.echo(f"{'added' if key in new else 'known'} {key}  {_cell(keyword, None)}")
    for text, reason in rejected:
        click.echo(f"refused {text!r}: {reason}", err=True)
    if rejected and not pairs:
        raise click.exceptions.Exit(1)


@keywords.command("preset")
@click.argument("name", type=click.Choice(sorted(PRESETS)))
def keywords_preset(name: str) -> None:
    """Add every keyword of a preset (actions: 8 robot actions x 5 search queries), tagged with its category."""
    added, rejected = _with_warehouse(lambda warehouse: register_preset(warehouse, name), create=True)
    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        new = set(add_keyword_partitions(instance, [key for key, _, _ in added]))
    for key, keyword, category in added:
        click.echo(f"{'added' if key in new else 'known'} {key}  {category}: {_cell(keyword, None)}")
    for text, reason in rejected:
        click.echo(f"refused {text!r}: {reason}", err=True)
    click.echo(f"{len(added)} keywords of preset {name!r}, {len(new)} new partitions")


@keywords.command("list")
def keywords_list() -> None:
    """Keyword partitions and their text, tab-separated; a third column lists the settings a keyword keeps."""
    keys = _keyword_partitions()
    texts: dict[str, str] = {}
    stored: dict[str, dict] = {}

    def read(conn: duckdb.DuckDBPyConnection) -> tuple[dict[str, str], dict[str, dict]]:
        texts = dict(conn.execute("SELECT partition_key, keyword FROM keywords").fetchall())
        return texts, keyword_settings.settings_by_keyword(conn)

    if keys:
        texts, stored = _in_warehouse(read)
    if not keys:
        click.echo("no keyword partitions yet", err=True)
    for key in keys:
        settings = "; ".join(keyword_settings.assignments(stored.get(key, {})))
        shown = f"\t{_cell(settings, 2 * CELL_WIDTH)}" if settings else ""  # keywords without settings: two columns
        click.echo(f"{key}\t{_cell(texts.get(key, key), None)}{shown}")


def _keyword_partitions() -> list[str]:
    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        return instance.get_dynamic_partitions(keyword_partitions.name)


def _settings_key(value: str) -> str:
    """The keyword partition KEY names (a partition key, or keyword text), or a usage error."""
    key = keyword_settings.resolve_partition_key(value, _keyword_partitions())
    if key is None:
        raise click.BadParameter(
            f"no keyword partition {value!r} (add it with `mining keywords add`)", param_hint="KEY"
        )
    return key


def _echo_settings(key: str, by_asset: dict[str, dict]) -> None:
    lines = keyword_settings.assignments(by_asset)
    for line in lines:
        click.echo(_cell(line, None))
    if not lines:
        click.echo(f"no settings stored for {key}: every stage uses its defaults", err=True)


@keywords.command("configure")
@click.argument("key")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="STAGE.FIELD=VALUE",
    help="A setting (VALUE as JSON when it parses, else text), e.g. video_frames.every_s=0.5.",
)
@click.option("--unset", multiple=True, metavar="STAGE.FIELD", help="Drop one stored setting.")
@click.option("--clear", multiple=True, metavar="STAGE", help="Drop every stored setting of a stage.")
@click.option("--replace", is_flag=True, help="Each stage --set names keeps only the settings given here.")
def keywords_configure(key: str, assignments: tuple[str, ...], unset: tuple[str, ...], clear: tuple[str, ...],
                       replace: bool) -> None:  # fmt: skip
    """Store KEY's own settings of its stages (KEY: a partition key or keyword text); prints what is stored."""
    partition = _settings_key(key)
    try:
        changes, drops = keyword_settings.parse_assignments(assignments), keyword_settings.parse_fields(unset)
        for asset in dict.fromkeys([*clear, *changes, *drops]):  # all checked before anything is written
            keyword_settings.check_fields(asset, drops.get(asset, []))
            keyword_settings.validated(asset, changes.get(asset, {}), partition)
    except keyword_settings.SettingsError as error:
        raise click.UsageError(str(error)) from error
    if not (changes or drops or clear):
        raise click.UsageError("nothing to change: give --set, --unset or --clear")

    def write(warehouse: Warehouse) -> dict[str, dict]:
        for asset in clear:
            keyword_settings.configure(warehouse, partition, asset, {}, replace=True)
        for asset in dict.fromkeys([*changes, *drops]):
            keyword_settings.configure(
                warehouse, partition, asset, changes.get(asset, {}), replace, drops.get(asset, [])
            )
        return keyword_settings.settings_by_keyword(warehouse, partition).get(partition, {})

    _echo_settings(partition, _with_warehouse(write, create=True))


@keywords.command("show")
@click.argument("key")
def keywords_show(key: str) -> None:
    """The settings KEY keeps (KEY: a partition key or keyword text), one STAGE.FIELD=VALUE a line."""
    partition = keyword_settings.resolve_partition_key(key, _keyword_partitions()) or key
    stored = _in_warehouse(lambda conn: keyword_settings.settings_by_keyword(conn, partition)).get(partition, {})
    _echo_settings(partition, stored)


@main.group()
def registry() -> None:
    """What each keyword's sources found, with each item's status (the media_status view)."""


@registry.command("status")
@keyword_option
def registry_status(keyword: str | None) -> None:
    """Media items per partition and status, and frames per partition."""

    def read(conn: duckdb.DuckDBPyConnection) -> tuple[list, dict]:
        where, params = _where({"partition_key": _partition_key(conn, keyword)})
        # each result is fetched before the next execute: both run on the block's one cursor
        counts = conn.execute(f"SELECT partition_key, status, count(*) FROM media_status {where} GROUP BY ALL", params)
        rows = counts.fetchall()
        frames = conn.execute(f"SELECT partition_key, count(*) FROM frames {where} GROUP BY ALL", params)
        return rows, dict(frames.fetchall())

    counts, frames = _in_warehouse(read)
    statuses = [*MEDIA_STATUSES, *sorted({status for _, status, _ in counts} - set(MEDIA_STATUSES))]
    table = {key: dict.fromkeys(statuses, 0) for key in sorted({key for key, _, _ in counts} | set(frames))}
    for key, status, count in counts:
        table[key][status] = count
    if not table:
        click.echo("no media yet")
        return
    rows = [[key, *by_status.values(), sum(by_status.values()), frames.get(key, 0)] for key, by_status in table.items()]
    click.echo(_table(["partition", *statuses, "total", "frames"], rows))


@registry.command("list")
@keyword_option
@click.option("--status", type=click.Choice(MEDIA_STATUSES), help="Only items in this status.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Most rows to show.")
def registry_list(keyword: str | None, status: str | None, limit: int) -> None:
    """Media items ordered by partition and item, long cells cut short."""

    def read(conn: duckdb.DuckDBPyConnection) -> tuple[list[str], int, list]:
        key = _partition_key(conn, keyword)
        where, params = _where({"partition_key": key, "status": status})
        columns = list(LIST_COLUMNS) if key else ["partition_key", *LIST_COLUMNS]
        total = conn.execute(f"SELECT count(*) FROM media_status {where}", params).fetchone()[0]
        rows = conn.execute(
            f"SELECT {', '.join(columns)} FROM media_status {where} ORDER BY partition_key, item LIMIT ?",
            [*params, limit],
        ).fetchall()
        return columns, total, rows

    columns, total, rows = _in_warehouse(read)
    if not rows:
        click.echo("no matching media")
        return
    click.echo(_table(columns, rows))
    if total > len(rows):
        click.echo(f"({len(rows)} of {total} shown; raise --limit for more)", err=True)


@registry.command("export")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path), help="File to write.")
@click.option("--format", "fmt", type=click.Choice(sorted(COPY_OPTIONS)), help="Default: from the output suffix.")
@keyword_option
def registry_export(output: Path, fmt: str | None, keyword: str | None) -> None:
    """Write the media items with their status (all columns) to a CSV, JSON (one object per line) or Parquet file."""
    fmt = fmt or EXPORT_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise click.UsageError(f"cannot tell the format of {output.name!r}: pass --format csv, json or parquet")
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)

    def export(conn: duckdb.DuckDBPyConnection) -> tuple | None:
        where, params = _where({"partition_key": _partition_key(conn, keyword)})
        # COPY ... TO ? is unreliable, so the path is a quoted literal.
        target = str(output).replace("'", "''")
        select = f"SELECT * FROM media_status {where} ORDER BY partition_key, item"
        return conn.execute(f"COPY ({select}) TO '{target}' ({COPY_OPTIONS[fmt]})", params).fetchone()

    row = _in_warehouse(export)
    click.echo(f"wrote {row[0] if row else 0} rows to {output} ({fmt})")


def _print_result(cursor: duckdb.DuckDBPyConnection, limit: int | None) -> None:
    """A statement's rows as a table (all of them, or the first ``limit``), or the statement's count."""
    if cursor.description is None:
        click.echo("ok")
        return
    headers = [column[0] for column in cursor.description]
    rows = cursor.fetchmany(limit) if limit else cursor.fetchall()
    click.echo(_table(headers, rows) if rows else f"(no rows; columns {', '.join(headers)})")


@main.command()
@click.argument("statement", required=False)
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True, help="Most rows to print.")
def sql(statement: str | None, limit: int) -> None:
    """Run STATEMENT on the warehouse (the lake attached as `lake`, its tables by name); without one, a shell
    reading statements that end with `;` (`.quit` or Ctrl-D leaves)."""
    import duckdb

    if statement is not None:
        _in_warehouse(lambda conn: _print_result(conn.execute(statement), limit), create=True)
        return
    warehouse = _warehouse(create=True)
    cursor = _with_warehouse(lambda lake: lake.cursor(), create=True)
    interactive = sys.stdin.isatty()
    if interactive:
        click.echo(f"{warehouse.describe()}\nstatements end with ';', .quit leaves", err=True)

    def run(text: str) -> None:  # the shell goes on after an error
        try:
            _print_result(cursor.execute(text), limit)
        except duckdb.Error as error:
            click.echo(f"error: {warehouse.scrub(str(error))}", err=True)

    pending: list[str] = []
    while True:
        try:
            line = input("lake> " if not pending else "   > ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        if not interactive and line == "":
            break
        if not pending and line.strip() in (".quit", ".exit", "\\q"):
            break
        pending.append(line.rstrip("\n"))
        if line.rstrip().endswith(";"):
            run("\n".join(pending))
            pending = []
    if "".join(pending).strip():
        run("\n".join(pending))
    cursor.close()


@main.group("warehouse")
def warehouse_group() -> None:
    """The warehouse itself."""


@warehouse_group.command("import")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Empty the tables the export holds before loading them.")
def warehouse_import(folder: Path, replace: bool) -> None:
    """Load an `EXPORT DATABASE ... (FORMAT parquet)` of an older warehouse file into the lake, by column name."""
    try:
        report = _with_warehouse(lambda warehouse: import_export(warehouse, folder, replace), create=True)
    except ValueError as error:  # an export of the earlier data model into a lake that already has rows
        raise click.ClickException(str(error)) from error
    for table, outcome in report.items():
        click.echo(f"{table}: {outcome}")


@warehouse_group.command("migrate")
def warehouse_migrate() -> None:
    """Convert a lake of the earlier data model (videos, photos, uploads tables) to the current one, in one
    transaction. Stop every run first."""
    from mining_assets.migrate import migrate_lake

    try:
        report = _with_warehouse(migrate_lake)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    if not report["migrated"]:
        click.echo("the lake is of the current data model already: nothing changed")
        return
    click.echo(f"converted in one transaction: earlier tables {', '.join(report['legacy_tables'])}; "
               f"rebuilt {', '.join(report['rebuilt'])}; dropped {', '.join(report['dropped'])}")  # fmt: skip
    for table, count in report["rows"].items():
        click.echo(f"{table}: {count} rows")
    for table, count in report["rows_left_out"].items():
        click.echo(f"{table}: {count} rows left out (their frame is in no frames row)")


def _add_groups() -> None:
    """Command groups kept in modules of their own (this one is long enough)."""
    from mining_assets.cli_datasets import datasets

    main.add_command(datasets)


_add_groups()
