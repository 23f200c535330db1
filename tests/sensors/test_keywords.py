import threading
import time
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
from harness import query, query_dicts

from mining_assets.definitions import defs
from mining_assets.keywords import KEYWORDS_LEASE, record_keywords
from sensors.keywords import keyword_file_sensor


def test_keyword_file_adds_partitions_and_requests_runs(tmp_path, instance, resources):
    warehouse = resources["warehouse"]
    keywords = tmp_path / "keywords.txt"
    keywords.write_text("# robot actions\nglass door\n\n  ../etc/passwd  \n<b>door</b>\nglass door\n")

    context = dg.build_sensor_context(instance=instance, resources={"warehouse": warehouse})
    result = keyword_file_sensor(context)
    added = result.dynamic_partitions_requests[0].partition_keys
    assert added[0] == "glass-door" and len(added) == 3
    assert sorted(r.partition_key for r in result.run_requests) == sorted(added)
    rows = query_dicts(resources, "SELECT partition_key, keyword, added_at FROM keywords")
    assert {row["keyword"] for row in rows} == {"glass door", "../etc/passwd", "<b>door</b>"}
    assert all(row["added_at"] is not None for row in rows)  # set by the writer: DuckLake has no default for it

    # an unchanged file is skipped; a new line adds just that keyword
    instance.add_dynamic_partitions("keyword", added)
    unchanged = keyword_file_sensor(
        dg.build_sensor_context(instance=instance, cursor=result.cursor, resources={"warehouse": warehouse})
    )
    assert isinstance(unchanged, dg.SkipReason)
    keywords.write_text(keywords.read_text() + "window\n")
    later = keyword_file_sensor(
        dg.build_sensor_context(instance=instance, cursor=result.cursor, resources={"warehouse": warehouse})
    )
    assert later.dynamic_partitions_requests[0].partition_keys == ["window"]
    assert [r.partition_key for r in later.run_requests] == ["window"]
    # each keyword recorded once, however often the sensor read the file
    assert query(resources, "SELECT count(*), count(DISTINCT partition_key) FROM keywords") == [(4, 4)]


def test_missing_keyword_file_is_skipped(tmp_path, instance, resources):
    context = dg.build_sensor_context(instance=instance, resources={"warehouse": resources["warehouse"]})
    assert "no keyword file" in keyword_file_sensor(context).skip_message


def test_add_keywords_job_from_the_launchpad(tmp_path, instance, resources):
    job = defs.resolve_job_def("add_keywords")
    warehouse = resources["warehouse"]
    result = job.execute_in_process(
        run_config={"ops": {"register_keyword_partitions": {"config": {"keywords": ["glass door", "Glass Door", ""]}}}},
        instance=instance,
        resources={"warehouse": warehouse},
    )
    assert result.success
    keys = instance.get_dynamic_partitions("keyword")
    assert keys[0] == "glass-door" and keys[1].startswith("glass-door_") and len(keys) == 2
    texts = {row["partition_key"]: row["keyword"] for row in query_dicts(resources, "SELECT * FROM keywords")}
    assert texts == {keys[0]: "glass door", keys[1]: "Glass Door"}


def register_concurrently(lake, lease: str | None, writers: int = 4) -> int:
    """``writers`` threads record "glass door" at once, each in its own retried block; the rows of its key."""
    lake.execute("SELECT 1")  # attach (and create the tables) before the writers start
    start = threading.Barrier(writers)

    def add(text: str) -> None:
        start.wait()
        for attempt in lake.retrying(lease=lease):
            with attempt as conn:
                record_keywords(conn, [text])
                time.sleep(0.2)  # the window in which another writer sees no row yet

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(add, ["glass door"] * writers))
    return lake.execute("SELECT count(*) FROM keywords WHERE partition_key = 'glass-door'")[0][0]


def test_concurrent_writers_record_a_keyword_once(lake):
    assert register_concurrently(lake, KEYWORDS_LEASE) == 1


def test_without_the_lease_a_postgres_catalog_records_a_key_twice(production_lake):
    """Why writers hold KEYWORDS_LEASE: DuckLake does not see two inserts of one key as a conflict. Should this
    fail, DuckLake started refusing the second commit and the lease may go."""
    assert register_concurrently(production_lake, None) > 1
