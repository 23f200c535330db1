import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from mining_assets.definitions import defs
from sensors.keywords import keyword_file_sensor


def test_keyword_file_adds_partitions_and_requests_runs(tmp_path, instance):
    warehouse = DuckDBResource(database=str(tmp_path / "wh.duckdb"))
    keywords = tmp_path / "keywords.txt"
    keywords.write_text("# robot actions\nglass door\n\n  ../etc/passwd  \n<b>door</b>\nglass door\n")

    context = dg.build_sensor_context(instance=instance, resources={"warehouse": warehouse})
    result = keyword_file_sensor(context)
    added = result.dynamic_partitions_requests[0].partition_keys
    assert added[0] == "glass-door" and len(added) == 3
    assert sorted(r.partition_key for r in result.run_requests) == sorted(added)
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as conn:
        texts = {row[0] for row in conn.execute("SELECT keyword FROM keywords").fetchall()}
    assert texts == {"glass door", "../etc/passwd", "<b>door</b>"}

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


def test_missing_keyword_file_is_skipped(tmp_path, instance):
    context = dg.build_sensor_context(
        instance=instance, resources={"warehouse": DuckDBResource(database=str(tmp_path / "wh.duckdb"))}
    )
    assert "no keyword file" in keyword_file_sensor(context).skip_message


def test_add_keywords_job_from_the_launchpad(tmp_path, instance):
    job = defs.resolve_job_def("add_keywords")
    warehouse = DuckDBResource(database=str(tmp_path / "wh.duckdb"))
    result = job.execute_in_process(
        run_config={"ops": {"register_keyword_partitions": {"config": {"keywords": ["glass door", "Glass Door", ""]}}}},
        instance=instance,
        resources={"warehouse": warehouse},
    )
    assert result.success
    keys = instance.get_dynamic_partitions("keyword")
    assert keys[0] == "glass-door" and keys[1].startswith("glass-door_") and len(keys) == 2
