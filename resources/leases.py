"""Write leases: who may write a partition (or a table every keyword shares) right now.

A lease is a row of ``mining_leases``, a table with a primary key outside the lake, so that one holder gets in and
taking a lease writes no Parquet file: embedded, a SQLite file beside the catalog's (``catalog.leases.sqlite``),
used through Python's ``sqlite3`` (a take costs well under a millisecond that way, several through DuckDB's SQLite
scanner, and its busy timeout waits for another taker's lock); production, a table in the catalog's PostgreSQL
database, through the warehouse's DuckDB attachment. Taking is one short transaction (drop the row if it has
expired, add ours unless a live one is left), releasing another. A holder that dies leaves a row that expires by
itself. Expiry compares the machines' clocks, so they must agree within seconds (as NTP keeps them).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resources.warehouse import Warehouse

LEASES = "lake_leases"  # the PostgreSQL catalog database attached a second time, for the leases
LEASE_TABLE = "mining_leases"


def lease_table_ddl(table: str = LEASE_TABLE) -> str:
    """The lease table's DDL, under the name the connection knows it by."""
    columns = "name VARCHAR PRIMARY KEY, holder VARCHAR NOT NULL, expires_at DOUBLE NOT NULL"
    return f"CREATE TABLE IF NOT EXISTS {table} ({columns})"


_LISTED = "(SELECT value FROM json_each(?))"  # the names, passed as one JSON list
# A lease's row inserted by another taker first (primary key): the lease is held, not the store broken.
TAKEN = re.compile(r"duplicate key|UNIQUE constraint failed|PRIMARY KEY or UNIQUE constraint", re.IGNORECASE)


@contextmanager
def commit_turn(catalog_file: str) -> Iterator[None]:
    """This machine's turn to write an embedded lake's SQLite catalog: an exclusive ``flock`` on a file beside it,
    held by a writing block for its whole transaction and by any other block for its commit
    (``Warehouse.retrying``). DuckLake reads the catalog when a transaction begins and writes it at the commit, and
    SQLite refuses that commit at once ("database is locked") if another process committed in between, which would
    cost the transaction a retry and a backoff sleep; in turn, it waits only for the writer ahead of it. The kernel
    drops the lock of a process that dies."""
    import fcntl

    with open(f"{catalog_file}.commit-lock", "a") as handle:  # an open file of its own: threads take turns too
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def leases_file(catalog_file: str) -> str:
    """The SQLite file of an embedded lake's write leases: ``catalog.sqlite`` -> ``catalog.leases.sqlite``."""
    path = Path(catalog_file)
    return str(path.with_name(f"{path.stem}.leases{path.suffix or '.sqlite'}"))


class SqliteLeases:
    """The embedded lake's leases, in their own SQLite file (WAL mode, so readers never wait)."""

    def __init__(self, catalog_file: str, busy_timeout_s: float = 30.0):
        self.path = leases_file(catalog_file)
        self.busy_timeout_s = busy_timeout_s
        self.local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection (kept open: closing the last one checkpoints the WAL, a disk flush per call);
        a forked child opens its own."""
        db, pid = getattr(self.local, "db", None), getattr(self.local, "pid", None)
        if db is None or pid != os.getpid():
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
            deadline = time.monotonic() + self.busy_timeout_s
            while True:  # a journal-mode change refuses at once, not after the busy timeout, while another sets it
                try:
                    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                        db.execute("PRAGMA journal_mode=WAL")
                    db.execute(lease_table_ddl())
                    break
                except sqlite3.OperationalError as error:
                    if "locked" not in str(error) or time.monotonic() > deadline:
                        db.close()
                        raise
                    time.sleep(0.01)
            db.execute("PRAGMA synchronous=NORMAL")  # a lease outlives no crash of the machine anyway
            self.local.db, self.local.pid = db, os.getpid()
        return db

    def take(self, names: Sequence[str], holder: str, seconds: float) -> bool:
        """All of ``names`` for ``holder``, or none of them (some are held)."""
        now, listed = time.time(), json.dumps(list(names))
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(f"DELETE FROM {LEASE_TABLE} WHERE expires_at <= ? AND name IN {_LISTED}", [now, listed])
            (held,) = db.execute(f"SELECT count(*) FROM {LEASE_TABLE} WHERE name IN {_LISTED}", [listed]).fetchone()
            if not held:
                rows = [(name, holder, now + seconds) for name in names]
                db.executemany(f"INSERT INTO {LEASE_TABLE} VALUES (?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return not held

    def release(self, names: Sequence[str], holder: str) -> None:
        self._connect().execute(
            f"DELETE FROM {LEASE_TABLE} WHERE holder = ? AND name IN {_LISTED}", [holder, json.dumps(list(names))]
        )

    def plant(self, name: str, holder: str, expires_at: float) -> None:
        """Write a lease row as a holder would have (a holder that died, in tests and drills)."""
        self._connect().execute(f"INSERT INTO {LEASE_TABLE} VALUES (?, ?, ?)", [name, holder, expires_at])

    def held(self) -> list[str]:
        rows = self._connect().execute(
            f"SELECT name FROM {LEASE_TABLE} WHERE expires_at > ? ORDER BY name", [time.time()]
        )
        return [name for (name,) in rows.fetchall()]


class PostgresLeases:
    """The production lake's leases, in its catalog's PostgreSQL database (row locks: takers of different leases
    never wait on each other), through the warehouse's attachment of that database (``attach``)."""

    def __init__(self, warehouse: Warehouse):
        self.warehouse = warehouse

    @staticmethod
    def attach(conn, conninfo: str, secret: str | None) -> None:
        """Attach the catalog's database as ``lake_leases`` on a new DuckDB instance and create the table."""
        from resources.warehouse import _quote

        option = f", SECRET {secret}" if secret else ""
        conn.execute(f"ATTACH {_quote(conninfo)} AS {LEASES} (TYPE postgres{option})")
        conn.execute(lease_table_ddl(f"{LEASES}.{LEASE_TABLE}"))

    def take(self, names: Sequence[str], holder: str, seconds: float) -> bool:
        """All of ``names`` for ``holder``, or none of them (some are held, or another taker's rows committed
        between our check and our insert: the primary key refuses ours)."""
        table = f"{LEASES}.{LEASE_TABLE}"
        now, listed = time.time(), list(names)
        try:
            for attempt in self.warehouse.retrying():
                with attempt as conn:
                    conn.execute(
                        f"DELETE FROM {table} WHERE expires_at <= ? AND name IN (SELECT unnest(?::VARCHAR[]))",
                        [now, listed],
                    )
                    (held,) = conn.execute(
                        f"SELECT count(*) FROM {table} WHERE name IN (SELECT unnest(?::VARCHAR[]))", [listed]
                    ).fetchone()
                    if not held:
                        conn.execute(
                            f"INSERT INTO {table} SELECT unnest(?::VARCHAR[]), ?, ?", [listed, holder, now + seconds]
                        )
        except Exception as error:
            if TAKEN.search(str(error)):
                return False
            raise
        return not held

    def release(self, names: Sequence[str], holder: str) -> None:
        for attempt in self.warehouse.retrying():
            with attempt as conn:
                conn.execute(
                    f"DELETE FROM {LEASES}.{LEASE_TABLE} WHERE holder = ? AND name IN (SELECT unnest(?::VARCHAR[]))",
                    [holder, list(names)],
                )

    def plant(self, name: str, holder: str, expires_at: float) -> None:
        self.warehouse.execute(f"INSERT INTO {LEASES}.{LEASE_TABLE} VALUES (?, ?, ?)", [name, holder, expires_at])

    def held(self) -> list[str]:
        rows = self.warehouse.execute(
            f"SELECT name FROM {LEASES}.{LEASE_TABLE} WHERE expires_at > ? ORDER BY name", [time.time()]
        )
        return [name for (name,) in rows]
