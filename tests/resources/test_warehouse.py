"""The DuckLake warehouse on both catalogs: the embedded lake (SQLite catalog, local files) and production
(PostgreSQL catalog, data in S3 on a moto server): schema, retries, many writers, leases, bad settings."""

import multiprocessing
import threading
import time

import dagster as dg
import pandas as pd
import pytest
from harness import free_port

from mining_assets.warehouse import KEYS, insert_rows, replace_partition_rows, tables, unique_key_check
from resources.warehouse import (
    LeaseTimeout,
    Warehouse,
    WarehouseUnavailable,
    close_all,
    is_transient,
)


def embedded_lake(folder) -> Warehouse:
    return Warehouse(catalog=f"sqlite:{folder}/lake/catalog.sqlite", data_path=f"{folder}/lake/data/")


def error_rows(key: str, tag: str, n: int = 50) -> pd.DataFrame:
    return pd.DataFrame({"partition_key": key, "item": [f"{tag}-{i}" for i in range(n)], "reason": tag})


def replace(warehouse: Warehouse, key: str, tag: str, n: int = 50, lease: bool = True) -> None:
    for attempt in warehouse.retrying(lease=key if lease else None):
        with attempt as conn:
            replace_partition_rows(conn, "media_errors", key, error_rows(key, tag, n))


def test_schema_has_every_table_partitioned_by_partition_key(lake):
    names = {
        row[0] for row in lake.execute("SELECT table_name FROM information_schema.tables WHERE table_catalog = 'lake'")
    }
    assert set(tables()) <= names
    assert "partition_leases" not in names  # the leases live in the catalog's database, not in the lake
    partitioned = {
        row[0]
        for row in lake.execute(
            "SELECT t.table_name FROM __ducklake_metadata_lake.ducklake_partition_column c "
            "JOIN __ducklake_metadata_lake.ducklake_table t USING (table_id) WHERE t.end_snapshot IS NULL"
        )
    }
    assert partitioned == {name for name, spec in tables().items() if "partition_key" in spec["columns"]}
    assert set(KEYS) <= set(tables())


def test_a_block_is_one_transaction_and_an_sql_error_is_not_retried(lake):
    runs = []
    with pytest.raises(Exception, match="no_such_table"):
        for attempt in lake.retrying():
            with attempt as conn:
                runs.append(1)
                replace_partition_rows(conn, "media_errors", "k", error_rows("k", "first"))
                conn.execute("SELECT * FROM no_such_table")
    assert runs == [1]
    assert lake.execute("SELECT count(*) FROM media_errors")[0][0] == 0  # rolled back together


def test_a_conflicting_commit_is_retried_until_it_lands(lake):
    """Two threads replace the same rows at once: one commit conflicts, its block runs again and lands."""
    replace(lake, "k", "seed", lease=False)
    inside = threading.Barrier(2)
    runs = {"a": 0, "b": 0}

    def write(tag: str) -> None:
        for attempt in lake.retrying():
            with attempt as conn:
                runs[tag] += 1
                replace_partition_rows(conn, "media_errors", "k", error_rows("k", tag))
                if runs[tag] == 1:
                    inside.wait(timeout=10)  # both deleted the same rows before either commits

    threads = [threading.Thread(target=write, args=(tag,)) for tag in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(runs.values())[1] >= 2  # the loser ran again
    assert lake.execute("SELECT count(*), count(DISTINCT reason) FROM media_errors")[0] == (50, 1)


def settings_of(warehouse: Warehouse) -> dict:
    """A warehouse's settings, to rebuild it in another process (resources don't pickle)."""
    return {name: getattr(warehouse, name) for name in Warehouse.model_fields}


def _writer(settings: dict, key: str, rounds: int, queue) -> None:
    warehouse = Warehouse(**settings)
    try:
        for round_ in range(rounds):
            replace(warehouse, key, f"{key}-{round_}")
        queue.put(("ok", key))
    except Exception as error:  # reported to the parent, which fails the test with it
        queue.put(("error", f"{type(error).__name__}: {error}"))


def four_writers(lake: Warehouse, rounds: int) -> list[tuple[str, str]]:
    """Four processes, each replacing its own partition (k0 ... k3) ``rounds`` times at once: their outcomes."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_writer, args=(settings_of(lake), f"k{i}", rounds, queue)) for i in range(4)]
    for worker in workers:
        worker.start()
    outcomes = [queue.get(timeout=240) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    return sorted(outcomes)


def test_four_processes_write_their_partitions_at_once(lake):
    lake.execute("SELECT 1")  # schema made before the writers start
    assert four_writers(lake, rounds=5) == [("ok", f"k{i}") for i in range(4)]
    rows = lake.execute("SELECT partition_key, count(*), min(reason) FROM media_errors GROUP BY ALL ORDER BY 1")
    assert rows == [(f"k{i}", 50, f"k{i}-4") for i in range(4)]


def test_on_the_embedded_catalog_concurrent_writers_take_turns_instead_of_retrying(tmp_path):
    """SQLite refuses a DuckLake commit at once when another process committed since the transaction began; a
    writing block holds the catalog's turn for its whole transaction, so with a single attempt allowed (no retry)
    four processes' leased replaces all land."""
    lake = embedded_lake(tmp_path).model_copy(update={"max_attempts": 1})
    lake.execute("SELECT 1")
    assert four_writers(lake, rounds=8) == [("ok", f"k{i}") for i in range(4)]


def test_without_a_lease_two_replaces_of_an_empty_partition_both_commit(lake):
    """Why the lease exists: deleting nothing conflicts with nothing, so both inserts land."""
    lake.execute("SELECT 1")
    first, second = lake.cursor(), lake.cursor()
    for cursor, tag in ((first, "a"), (second, "b")):
        cursor.execute("BEGIN TRANSACTION")
        replace_partition_rows(cursor, "media_errors", "empty", error_rows("empty", tag))
    first.execute("COMMIT")
    if lake.kind == "sqlite":  # SQLite's lock refuses a commit that overlapped another: it is retried, then sees it
        with pytest.raises(Exception) as refused:
            second.execute("COMMIT")
        assert is_transient(refused.value)
        assert lake.execute("SELECT count(*) FROM media_errors WHERE partition_key = 'empty'")[0][0] == 50
        return
    second.execute("COMMIT")  # PostgreSQL: both commit, and the partition holds both writers' rows
    assert lake.execute("SELECT count(*) FROM media_errors WHERE partition_key = 'empty'")[0][0] == 100


def test_the_lease_keeps_two_writers_of_one_partition_apart(lake):
    lake.execute("SELECT 1")
    holding = threading.Event()
    order = []

    def slow() -> None:
        for attempt in lake.retrying(lease="empty"):
            with attempt as conn:
                replace_partition_rows(conn, "media_errors", "empty", error_rows("empty", "slow"))
                holding.set()
                time.sleep(1.0)
        order.append("slow")

    thread = threading.Thread(target=slow)
    thread.start()
    assert holding.wait(timeout=30)
    replace(lake, "empty", "fast")  # waits for the lease, then replaces what the first wrote
    order.append("fast")
    thread.join(timeout=30)
    assert order == ["slow", "fast"]
    assert lake.execute("SELECT count(*), min(reason) FROM media_errors WHERE partition_key = 'empty'")[0] == (
        50,
        "fast",
    )
    assert lake.held_leases() == []  # both released


def test_several_leases_are_taken_together_or_not_at_all(lake):
    with lake.lease(["a", "b"]):
        with pytest.raises(LeaseTimeout, match="'b', 'c'"), lake.lease(["c", "b"], wait_seconds=0.3):
            pass
        assert lake.held_leases() == ["a", "b"]  # the refused taker kept none (not c) while waiting for b
        with lake.lease("c"):  # a lease nobody holds is taken at once
            assert lake.held_leases() == ["a", "b", "c"]
    with lake.lease(["b", "c"]):
        assert lake.held_leases() == ["b", "c"]
    assert lake.held_leases() == []


def test_a_dead_holders_lease_expires_by_itself(tmp_path):
    short = embedded_lake(tmp_path).model_copy(update={"lease_seconds": 1.0})
    short.leases.plant("k", "a run that was killed", time.time() + 1)
    assert short.held_leases() == ["k"]
    with pytest.raises(LeaseTimeout, match="'k'"), short.lease("k", wait_seconds=0.2):
        pass
    started = time.monotonic()
    replace(short, "k", "after")
    assert time.monotonic() - started < 10
    assert short.execute("SELECT count(*) FROM media_errors")[0][0] == 50


def test_unique_key_check_fails_on_a_planted_duplicate(lake):
    for attempt in lake.retrying():
        with attempt as conn:
            row = pd.DataFrame({"partition_key": ["k"], "keyword": ["k"], "item": ["m"], "source": ["local"],
                                "url": ["file:///m"], "page_url": ["file:///m"]})  # fmt: skip
            replace_partition_rows(conn, "registry", "k", row)
            assert unique_key_check(conn, "k", ["registry"]).passed
            replace_partition_rows(conn, "registry", "other", row.assign(partition_key="other"))
            conn.execute("INSERT INTO registry SELECT * FROM registry WHERE partition_key = 'k'")
            result = unique_key_check(conn, "k", ["registry"])
    assert not result.passed
    assert result.metadata["duplicated_keys"].value == {"registry": 1}


def test_a_column_added_to_the_schema_later_is_added_to_an_existing_lake(tmp_path):
    old = embedded_lake(tmp_path)
    old.execute("ALTER TABLE registry DROP COLUMN channel")
    old.execute("INSERT INTO registry (partition_key, keyword, item, source, url, page_url) "
                "VALUES ('k', 'k', 'm', 'local', 'file:///m', 'file:///m')")  # fmt: skip
    close_all()  # a new process opens the lake with the current schema
    rows = embedded_lake(tmp_path).query_dicts("SELECT item, channel FROM registry")
    assert rows == [{"item": "m", "channel": None}]


def test_an_unreachable_catalog_fails_at_start_naming_the_setting(tmp_path):
    warehouse = Warehouse(
        catalog=f"postgres:dbname=lake host=127.0.0.1 port={free_port()} user=mining connect_timeout=2",
        data_path=f"{tmp_path}/data/",
        catalog_password="s3cr3t-pass",
        max_attempts=2,
    )
    ran = []

    @dg.asset
    def needs_the_warehouse(warehouse: Warehouse) -> None:
        ran.append(1)

    result = dg.materialize([needs_the_warehouse], resources={"warehouse": warehouse}, raise_on_error=False)
    assert not result.success and not ran
    failure = next(e for e in result.all_events if e.is_failure)
    text = str(failure.event_specific_data.error.to_string())
    assert "MINING_LAKE_CATALOG" in text
    assert "s3cr3t-pass" not in text


def test_a_wrong_catalog_password_never_shows(postgres_server, run_psql, tmp_path):
    run_psql("DO $$ BEGIN CREATE ROLE lake_user LOGIN PASSWORD 'right-one'; "
                          "EXCEPTION WHEN duplicate_object THEN NULL; END $$")  # fmt: skip
    database = f"lake_pw_{abs(hash(str(tmp_path))) % 10**8}"
    run_psql(f"CREATE DATABASE {database} OWNER lake_user")
    warehouse = Warehouse(
        catalog=f"postgres:dbname={database} host=127.0.0.1 port={postgres_server['port']} user=lake_user",
        data_path=f"{tmp_path}/data/",
        catalog_password="wrong-password-123",
        max_attempts=1,
    )
    with pytest.raises(WarehouseUnavailable, match="MINING_LAKE_CATALOG") as raised:
        warehouse.execute("SELECT 1")
    assert "password authentication failed" in str(raised.value)
    assert "wrong-password-123" not in str(raised.value)
    right = warehouse.model_copy(update={"catalog_password": "right-one"})
    assert right.execute("SELECT 1") == [(1,)]  # the password reaches the catalog through a secret


def test_bad_s3_credentials_for_the_data_path_fail_clearly(postgres_server, run_psql, tmp_path):
    """A moto server that checks credentials refuses unknown keys; the error says so and never shows the secret."""
    import os
    import subprocess
    import sys

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(2)
        name = f"lake_badcreds_{port}"
        run_psql(f"CREATE DATABASE {name}")
        warehouse = Warehouse(
            catalog=f"postgres:dbname={name} host=127.0.0.1 port={postgres_server['port']} user=postgres",
            data_path="s3://no-such-access/lake/",
            s3_endpoint_url=f"http://127.0.0.1:{port}",
            s3_access_key_id="AKIAUNKNOWN",
            s3_secret_access_key="very-secret-key-xyz",
            max_attempts=2,
        )
        with pytest.raises(Exception) as raised:
            replace(warehouse, "k", "x", lease=False)
        text = str(raised.value)
        assert "very-secret-key-xyz" not in text
        assert "403" in text or "Forbidden" in text or "AccessDenied" in text or "InvalidAccessKeyId" in text, text
    finally:
        server.terminate()
        server.wait(timeout=10)


def _materialize_frames(settings: dict, partition_key: str, barrier) -> None:
    """A run of `frames` outside the run queue, its commits slowed so that a second run's write overlaps it."""
    from mining_assets.frames import frames
    from resources.warehouse import Attempt

    original = Attempt.__exit__

    def slow_commit(self, kind, error, traceback):
        if kind is None:
            time.sleep(0.5)  # the transaction stays open: the other run's write would commit beside it
        return original(self, kind, error, traceback)

    Attempt.__exit__ = slow_commit
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("keyword", [partition_key])
        barrier.wait(timeout=120)
        dg.materialize([frames], partition_key=partition_key, instance=instance,
                       resources={"warehouse": Warehouse(**settings)})  # fmt: skip


def test_two_runs_of_one_empty_partition_around_the_queue_leave_the_rows_of_one(lake):
    frames_sql = "SELECT count(*), count(DISTINCT frame_id) FROM frames WHERE partition_key = 'door'"
    for attempt in lake.retrying():
        with attempt as conn:
            conn.execute(
                "INSERT INTO registry (partition_key, keyword, item, source, media_id, url, page_url) "
                "VALUES ('door', 'door', 'v1', 'local', 'v1', 'file:///v1.mp4', 'file:///v1.mp4')"
            )
            conn.execute("INSERT INTO keyword_media (partition_key, item, media_id) VALUES ('door', 'v1', 'v1')")
            conn.execute(
                "INSERT INTO media (media_id, media_type, source, blob_key, uri, sha256, size_bytes, width, "
                "height) VALUES ('v1', 'video', 'local', 'videos/v1.mp4', 'u', 's', 1, 64, 48)"
            )
            conn.execute("INSERT INTO keyword_samples (partition_key, media_id, sampling) VALUES ('door', 'v1', 's1')")
            frame_rows = pd.DataFrame(
                {
                    "media_id": "v1",
                    "sampling": "s1",
                    "frame_index": range(20),
                    "frame_id": [f"v1_{i:07d}" for i in range(20)],
                    "timestamp_s": 0.0,
                    "width": 64,
                    "height": 48,
                    "blob_key": "b",
                    "uri": "u",
                    "sha256": "s",
                }
            )
            insert_rows(conn, "video_frames", frame_rows)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    runs = [context.Process(target=_materialize_frames, args=(settings_of(lake), "door", barrier)) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=240)
    assert [run.exitcode for run in runs] == [0, 0]
    assert lake.execute(frames_sql)[0] == (20, 20)


def test_both_instances_start_one_run_per_partition_at_a_time():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    limit = {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    embedded = dg.DagsterInstance.from_config(str(root / "dagster_home"))
    try:
        assert limit in embedded.get_concurrency_config().run_queue_config.tag_concurrency_limits
    finally:
        embedded.dispose()
    production = yaml.safe_load((root / "deploy" / "dagster.production.yaml").read_text())
    assert limit in production["concurrency"]["runs"]["tag_concurrency_limits"]


def test_lake_maintenance_merges_small_files_and_keeps_every_row(lake):
    from mining_assets.lake_maintenance import lake_maintenance

    for round_ in range(6):
        replace(lake, "k", f"round-{round_}", lease=False)
        replace(lake, "other", f"round-{round_}", n=5, lease=False)
    before = lake.execute("SELECT partition_key, count(*), min(reason) FROM media_errors GROUP BY ALL ORDER BY 1")
    config = {"snapshot_retention_days": 0.0, "file_grace_hours": 0.0}
    result = dg.materialize([lake_maintenance], resources={"warehouse": lake},
                            run_config={"ops": {"lake_maintenance": {"config": config}}})  # fmt: skip
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("lake_maintenance")[0].metadata.items()}
    assert metadata["snapshots_after"] < metadata["snapshots_before"]
    assert metadata["data_files_after"] <= metadata["data_files_before"]
    assert metadata["cleaned"] > 0  # files of expired snapshots are gone
    after = lake.execute("SELECT partition_key, count(*), min(reason) FROM media_errors GROUP BY ALL ORDER BY 1")
    assert after == before == [("k", 50, "round-5"), ("other", 5, "round-5")]


def test_a_lost_catalog_connection_is_attached_again(production_lake, run_psql):
    """The catalog server drops every connection (a restart, a failover): the next call re-attaches and works."""
    replace(production_lake, "k", "before", lease=False)
    database = production_lake.catalog.split("dbname=", 1)[1].split()[0]
    run_psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")
    replace(production_lake, "k", "after", lease=False)
    assert production_lake.execute("SELECT count(*), min(reason) FROM media_errors")[0] == (50, "after")
