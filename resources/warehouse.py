"""The warehouse: DuckDB SQL over a DuckLake catalog with Parquet data files.

Embedded default: the catalog in a SQLite file and the data files in a local folder, nothing to start. Production:
the catalog in PostgreSQL and the data files in S3. Many processes and machines write at once in short
transactions; a conflict, a lock or a lost catalog connection is retried with backoff (re-attaching after a lost
connection), so callers write every warehouse call as a retried block:

    for attempt in warehouse.retrying():
        with attempt as conn:  # one transaction, committed when the block ends
            conn.execute(...)

Each process keeps one attached DuckDB instance per lake (attaching costs a few hundred milliseconds) and hands
out cursors on it. The extensions come from the ``duckdb-ext-*`` wheels; nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from resources.faults import InfrastructureError
from resources.leases import PostgresLeases, SqliteLeases, commit_turn, leases_file

if TYPE_CHECKING:
    import duckdb

LAKE = "lake"  # the attached catalog's name in SQL: lake.main.frames, or just frames after USE lake
CATALOG_SETTING = "MINING_LAKE_CATALOG"
DATA_PATH_SETTING = "MINING_LAKE_DATA_PATH"
EXTENSIONS = {"sqlite": "sqlite_scanner", "postgres": "postgres_scanner"}
# Messages of errors that a later attempt can clear: optimistic-concurrency conflicts, SQLite's lock, PostgreSQL
# serialization failures and lost or refused connections.
TRANSIENT = re.compile(
    r"conflict|database is locked|database table is locked|busy|could not serialize|deadlock|"
    r"connection|server closed|terminating|timeout|timed out|ALLOW_CONNECTIONS|does not allow connections|"
    r"Failed to commit|too many clients|retry",
    re.IGNORECASE,
)
# Errors no retry can clear: wrong credentials, a missing database or bucket, a refused permission.
PERMANENT = re.compile(
    r"password authentication failed|no password supplied|authentication|does not exist|permission denied|"
    r"InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|Forbidden|\b403\b|NoSuchBucket",
    re.IGNORECASE,
)
# Errors after which the attached instance is dropped and the lake attached again.
REATTACH = re.compile(
    r"connection|server closed|terminating|ALLOW_CONNECTIONS|does not allow connections|Unable to", re.I
)


class WarehouseUnavailable(InfrastructureError):
    """The lake could not be opened or written after every attempt; the message names the setting to check."""


class LeaseTimeout(WarehouseUnavailable):
    """Another writer held a partition's lease for longer than this writer was willing to wait."""


def extension_directory() -> str:
    """Where the ``duckdb-ext-*`` wheels put DuckDB's signed extension binaries."""
    import duckdb_ext

    return str(Path(next(iter(duckdb_ext.__path__))) / "extensions")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def is_transient(error: BaseException) -> bool:
    """Whether an error of DuckDB (or of the catalog behind it) may clear on a later attempt."""
    import duckdb

    if PERMANENT.search(str(error)):
        return False
    if isinstance(error, duckdb.TransactionException):
        return True
    if isinstance(error, duckdb.Error | OSError):
        return bool(TRANSIENT.search(str(error)))
    return False


class _Lake:
    """One DuckDB instance with the lake attached; cursors on it share the attachment."""

    def __init__(self, conn: duckdb.DuckDBPyConnection):
        self.conn = conn
        self.schema_ready = False
        self.lock = threading.Lock()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self.lock:
            cursor = self.conn.cursor()
        cursor.execute(f"USE {LAKE}")
        return cursor


_LAKES: dict[str, _Lake] = {}
_LEASE_STORES: dict[str, SqliteLeases | PostgresLeases] = {}
_LAKES_LOCK = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child must not use its parent's DuckDB instance (or the catalog connection inside it)."""
    global _LAKES_LOCK
    _LAKES.clear()
    _LAKES_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def close_all() -> None:
    """Close every lake this process attached (tests, and processes that fork)."""
    with _LAKES_LOCK:
        lakes = list(_LAKES.values())
        _LAKES.clear()
    for lake in lakes:
        lake.conn.close()


class Attempt:
    """One try of a retried block: a cursor in an open transaction, committed when the block ends."""

    def __init__(self, warehouse: Warehouse, cursor: duckdb.DuckDBPyConnection, last: bool, turn_held: bool):
        self.warehouse = warehouse
        self.cursor = cursor
        self.last = last
        self.turn_held = turn_held  # the block holds the catalog's turn already (taking it again would deadlock)
        self.error: BaseException | None = None
        self.done = False

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        return self.cursor

    def __exit__(self, kind, error, traceback) -> bool:
        cursor = self.cursor
        try:
            if error is None:
                try:
                    with nullcontext() if self.turn_held else self.warehouse.commit_turn():
                        cursor.execute("COMMIT")
                    self.done = True
                    return False
                except Exception as commit_error:
                    error = commit_error
            with suppress(Exception):
                cursor.execute("ROLLBACK")
            if not isinstance(error, Exception) or not is_transient(error) or self.last:
                if isinstance(error, Exception):
                    replacement = self.warehouse.unavailable(error)
                    if replacement is not error or kind is None:
                        raise replacement from error
                return False
            self.error = error
            self.warehouse.forget(error)
            return True
        finally:
            cursor.close()


class Warehouse(dg.ConfigurableResource):
    """The DuckLake warehouse: catalog (SQLite file or PostgreSQL) plus Parquet data files (local or S3).

    Attributes:
        catalog: DuckLake's catalog location after ``ducklake:``: ``sqlite:/path/catalog.sqlite`` or
            ``postgres:dbname=lake host=... user=...`` (no password here: use ``catalog_password``).
        data_path: Folder or ``s3://bucket/prefix/`` for the Parquet files.
        catalog_password: PostgreSQL password, from an ``EnvVar``; passed through a DuckDB secret, never in text.
        s3_*: Endpoint, region and credentials for an ``s3://`` data path (credentials from ``EnvVar``).
        lease_seconds: How long a partition's write lease lasts if its holder dies without releasing it.
        max_attempts: Tries of each block before the step fails naming the setting.
    """

    catalog: str
    data_path: str
    catalog_password: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_session_token: str | None = None
    lease_seconds: float = 120.0
    max_attempts: int = 10
    retry_backoff_seconds: float = 0.05

    # ------------------------------------------------------------------ opening
    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Attach now, so an unreachable catalog fails the step before any work, naming the setting."""
        self.execute("SELECT 1")

    @property
    def fingerprint(self) -> str:
        parts = [self.catalog, self.data_path, self.s3_endpoint_url, self.s3_region, self.s3_access_key_id,
                 self.s3_secret_access_key, self.s3_session_token, self.catalog_password]  # fmt: skip
        return hashlib.sha256(repr(parts).encode()).hexdigest()

    @property
    def kind(self) -> str:
        """``sqlite`` or ``postgres``: the catalog database."""
        kind = self.catalog.split(":", 1)[0]
        if kind not in EXTENSIONS:
            raise WarehouseUnavailable(
                f"{CATALOG_SETTING} must start with sqlite: or postgres: (got {kind!r}); see the README"
            )
        return kind

    @property
    def catalog_location(self) -> str:
        """The catalog without its kind: the SQLite file, or the PostgreSQL conninfo."""
        return self.catalog.split(":", 1)[1]

    def describe(self) -> str:
        """Where the lake is, for messages: the catalog without credentials and the data path."""
        catalog = re.sub(r"password\s*=\s*\S+", "password=***", self.catalog, flags=re.I)
        return f"catalog {catalog} ({CATALOG_SETTING}), data {self.data_path} ({DATA_PATH_SETTING})"

    def scrub(self, text: str) -> str:
        """Text with every configured secret replaced by ***."""
        for secret in (self.catalog_password, self.s3_secret_access_key, self.s3_session_token):
            if secret:
                text = text.replace(secret, "***")
        return re.sub(r"password\s*=\s*\S+", "password=***", text, flags=re.I)

    def unavailable(self, error: BaseException) -> BaseException:
        """The error to raise in the caller's place: SQL errors stay as they are, secrets scrubbed either way."""
        import duckdb

        sql_mistake = (duckdb.CatalogException, duckdb.BinderException, duckdb.ParserException,
                       duckdb.ConstraintException, duckdb.ConversionException)  # fmt: skip
        if not isinstance(error, sql_mistake) and (
            PERMANENT.search(str(error)) or (isinstance(error, OSError) and not is_transient(error))
        ):
            return WarehouseUnavailable(f"warehouse refused ({self.describe()}): {self.scrub(str(error))}")
        if not is_transient(error):
            message = self.scrub(str(error))
            if message == str(error):
                return error
            return type(error)(message) if isinstance(error, Exception) else error
        return WarehouseUnavailable(f"warehouse unavailable ({self.describe()}): {self.scrub(str(error))}")

    def _attach(self) -> _Lake:
        import duckdb

        kind = self.kind
        conn = duckdb.connect(
            config={
                "extension_directory": extension_directory(),
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
            }
        )
        try:
            conn.execute(f"LOAD ducklake; LOAD {EXTENSIONS[kind]}")
            options = [f"DATA_PATH {_quote(self.data_path)}"]
            if self.data_path.startswith("s3://"):
                conn.execute("LOAD httpfs")
                conn.execute(self._s3_secret())
            elif "://" not in self.data_path:
                Path(self.data_path).mkdir(parents=True, exist_ok=True)
            if kind == "sqlite":
                prepare_sqlite_catalog(self.catalog_location)
            if kind == "postgres" and self.catalog_password:
                conn.execute(
                    f"CREATE OR REPLACE SECRET lake_catalog (TYPE postgres, PASSWORD {_quote(self.catalog_password)})"
                )
                options.append("METADATA_PARAMETERS MAP {'SECRET': 'lake_catalog'}")
            conn.execute(f"ATTACH {_quote('ducklake:' + self.catalog)} AS {LAKE} ({', '.join(options)})")
            if kind == "postgres":
                PostgresLeases.attach(conn, self.catalog_location, "lake_catalog" if self.catalog_password else None)
            # commits that collide are retried by this module with its own backoff; DuckLake's own retries stay short
            conn.execute("SET ducklake_max_retry_count = 5")
            conn.execute("SET ducklake_retry_wait_ms = 10")  # not 100: a commit takes a few milliseconds here
        except Exception:
            conn.close()
            raise
        return _Lake(conn)

    def _s3_secret(self) -> str:
        fields = {"KEY_ID": self.s3_access_key_id, "SECRET": self.s3_secret_access_key,
                  "SESSION_TOKEN": self.s3_session_token, "REGION": self.s3_region or "us-east-1"}  # fmt: skip
        settings = [f"{name} {_quote(value)}" for name, value in fields.items() if value]
        if self.s3_endpoint_url:
            endpoint = re.sub(r"^https?://", "", self.s3_endpoint_url).rstrip("/")
            use_ssl = "false" if self.s3_endpoint_url.startswith("http://") else "true"
            settings += [f"ENDPOINT {_quote(endpoint)}", "URL_STYLE 'path'", f"USE_SSL {use_ssl}"]
        scope = _quote(self.data_path)
        return f"CREATE OR REPLACE SECRET lake_data (TYPE s3, {', '.join(settings)}, SCOPE {scope})"

    def _lake(self) -> _Lake:
        key = self.fingerprint
        lake = _LAKES.get(key)
        if lake is None:
            with _LAKES_LOCK:
                lake = _LAKES.get(key)
                if lake is None:
                    lake = _LAKES[key] = self._attach()
        if not lake.schema_ready:
            from mining_assets.warehouse import ensure_schema

            with lake.lock:
                if not lake.schema_ready:
                    cursor = lake.conn.cursor()
                    try:
                        cursor.execute(f"USE {LAKE}")
                        ensure_schema(cursor)
                    finally:
                        cursor.close()
                    lake.schema_ready = True
        return lake

    def commit_turn(self) -> AbstractContextManager[None]:
        """Held around each COMMIT: the embedded catalog's turn (``resources.leases.commit_turn``); PostgreSQL
        takes concurrent commits by itself."""
        return commit_turn(self.catalog_location) if self.kind == "sqlite" else nullcontext()

    def forget(self, error: BaseException) -> None:
        """Drop this process's attachment after a lost connection, so the next attempt attaches again."""
        if not REATTACH.search(str(error)):
            return
        with _LAKES_LOCK:
            lake = _LAKES.pop(self.fingerprint, None)
        if lake is not None:
            with suppress(Exception):
                lake.conn.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor on this process's attached lake, with the lake as the default catalog. Close it after use."""
        return self._lake().cursor()

    # ------------------------------------------------------------------ retried work
    def retrying(self, lease: str | Sequence[str] | None = None) -> Iterator[Attempt]:
        """Attempts of one transaction, each a fresh cursor; stops after the first that commits.

        Args:
            lease: Take this write lease (a partition, a shared table), or all of these, for the whole block (see
                ``lease``), so that two writers of one partition never both commit into it.
        """
        with self.lease(lease or ()):
            yield from self._attempts(writing=bool(lease))

    def _attempts(self, writing: bool) -> Iterator[Attempt]:
        """Tries of one transaction. A writing block on the embedded catalog holds the catalog's turn for the whole
        transaction: DuckLake reads the SQLite catalog when the transaction starts and writes it at the commit, and
        SQLite refuses that commit at once if another process committed in between; in turn, the transaction runs
        once. Other blocks (reads, mostly) take the turn for their commit only."""
        delay = self.retry_backoff_seconds
        attempts = max(1, self.max_attempts)
        for number in range(1, attempts + 1):
            last = number == attempts
            with self.commit_turn() if writing else nullcontext():
                try:
                    cursor = self.cursor()
                    cursor.execute("BEGIN TRANSACTION")
                except Exception as error:
                    if last or not is_transient(error):
                        raise self.unavailable(error) from error
                    self.forget(error)
                else:
                    attempt = Attempt(self, cursor, last, turn_held=writing)
                    yield attempt
                    if attempt.error is None:
                        return
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    def query_dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of one query as dicts by column name, retried."""
        for attempt in self.retrying():
            with attempt as conn:
                rows = query_dicts(conn, sql, params)
        return rows

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """One statement in its own retried transaction; its rows, if any."""
        for attempt in self.retrying():
            with attempt as conn:
                cursor = conn.execute(sql, list(params))
                rows = cursor.fetchall() if cursor.description else []
        return rows

    # ------------------------------------------------------------------ leases
    @property
    def leases(self) -> SqliteLeases | PostgresLeases:
        """Where this lake's write leases are kept (``resources.leases``)."""
        store = _LEASE_STORES.get(self.fingerprint)
        if store is None:
            store = SqliteLeases(self.catalog_location) if self.kind == "sqlite" else PostgresLeases(self)
            _LEASE_STORES[self.fingerprint] = store
        return store

    @contextmanager
    def lease(self, names: str | Sequence[str], wait_seconds: float | None = None) -> Iterator[None]:
        """Hold the write lease ``names`` (a partition, a shared table, a shared row), or all of several at once,
        until the block ends; wait while another holder has any of them, at most ``lease_seconds`` and a half
        minute (a dead holder's lease expires in that time). Several are taken together or not at all, so two
        holders never each keep one while waiting for the other."""
        wanted = sorted({names} if isinstance(names, str) else set(names))
        if not wanted:
            yield
            return
        holder = uuid.uuid4().hex
        deadline = time.monotonic() + (self.lease_seconds + 30 if wait_seconds is None else wait_seconds)
        delay = 0.01
        while True:
            with self._leases_reachable():
                if self.leases.take(wanted, holder, self.lease_seconds):
                    break
            if time.monotonic() > deadline:
                shown = ", ".join(repr(name) for name in wanted[:5]) + (" ..." if len(wanted) > 5 else "")
                raise LeaseTimeout(f"the write lease of {shown} stayed taken by another run ({self.describe()})")
            # holders keep a lease for one short transaction, and a try costs a few milliseconds at most: poll
            # often, so a waiter is not still asleep long after the lease came free
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 1.5, 0.05)
        try:
            yield
        finally:
            with self._leases_reachable():
                self.leases.release(wanted, holder)

    def held_leases(self) -> list[str]:
        """The names of the leases held now (live rows), for inspection and tests."""
        with self._leases_reachable():
            return self.leases.held()

    @contextmanager
    def _leases_reachable(self) -> Iterator[None]:
        """The embedded leases' file failing (a full disk, a lock held past the busy timeout) is the warehouse's
        infrastructure failing; PostgreSQL's leases go through retried blocks, which say so themselves."""
        import sqlite3

        try:
            yield
        except sqlite3.Error as error:
            where = leases_file(self.catalog_location)
            raise WarehouseUnavailable(f"write leases unavailable ({where}): {error}") from error


def query_dicts(conn: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Rows of a query as dicts by column name (lists stay Python lists, NULL stays None)."""
    cursor = conn.execute(sql, list(params))
    columns = [column[0] for column in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def prepare_sqlite_catalog(path: str) -> None:
    """Create the SQLite catalog's folder, and put a new catalog in WAL mode so readers never block a committer."""
    import sqlite3

    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    if file.exists():
        return
    with sqlite3.connect(file) as db:
        db.execute("PRAGMA journal_mode=WAL")


def warehouse_from_env() -> Warehouse:
    """The warehouse the environment describes.

    ``MINING_LAKE_CATALOG``: ``sqlite:FILE`` (default ``<data dir>/lake/catalog.sqlite``) or ``postgres:CONNINFO``
    (password in ``MINING_LAKE_PASSWORD``). ``MINING_LAKE_DATA_PATH``: default ``<data dir>/lake/data/``, or
    ``s3://$MINING_S3_BUCKET/$MINING_S3_PREFIX/lake/`` when the blob store is on S3; S3 endpoint, region and
    credentials as for the blob store (``MINING_S3_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID`` ...).
    """
    from resources.settings import data_dir

    lake_dir = data_dir() / "lake"
    bucket = os.environ.get("MINING_S3_BUCKET")
    if os.environ.get(DATA_PATH_SETTING):
        data_path = os.environ[DATA_PATH_SETTING]
    elif bucket:
        prefix = os.environ.get("MINING_S3_PREFIX", "mining").strip("/")
        data_path = f"s3://{bucket}/{prefix + '/' if prefix else ''}lake/"
    else:
        data_path = f"{lake_dir / 'data'}/"
    secrets = {
        "catalog_password": "MINING_LAKE_PASSWORD",
        "s3_access_key_id": "AWS_ACCESS_KEY_ID",
        "s3_secret_access_key": "AWS_SECRET_ACCESS_KEY",
        "s3_session_token": "AWS_SESSION_TOKEN",
    }
    return Warehouse(
        catalog=os.environ.get(CATALOG_SETTING) or f"sqlite:{lake_dir / 'catalog.sqlite'}",
        data_path=data_path,
        s3_endpoint_url=os.environ.get("MINING_S3_ENDPOINT_URL") or None,
        s3_region=os.environ.get("AWS_REGION") or None,
        **{field: dg.EnvVar(name) for field, name in secrets.items() if os.environ.get(name)},
    )
