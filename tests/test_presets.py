"""The actions preset: 40 keyword partitions in one step, from the CLI and from the Launchpad job, tagged with their
action category; adding it twice adds nothing new."""

import dagster as dg
from click.testing import CliRunner

from mining_assets import cli
from mining_assets.partitions import is_slug, keyword_partitions
from mining_assets.presets import PRESETS, add_preset_keywords, preset_keywords, register_preset
from resources.warehouse import warehouse_from_env

ACTIONS = ["reaching", "grasping", "lifting", "pushing", "pulling", "waving", "pointing", "holding"]


def test_actions_preset_is_eight_categories_of_five_distinct_queries():
    assert list(PRESETS["actions"]) == ACTIONS
    assert all(len(queries) == 5 for queries in PRESETS["actions"].values())
    entries = preset_keywords("actions")
    assert len({keyword for _, keyword in entries}) == 40


def tags() -> dict[str, str]:
    """partition key -> category of the actions preset, in the environment's lake (tmp_path/data/lake here)."""
    rows = warehouse_from_env().query_dicts("SELECT partition_key, category FROM keyword_tags WHERE preset = 'actions'")
    categories = {row["partition_key"]: row["category"] for row in rows}
    assert len(categories) == len(rows), "a keyword tagged twice for one preset"
    return categories


def test_cli_adds_forty_readable_partitions_once():
    result = CliRunner().invoke(cli.main, ["keywords", "preset", "actions"])
    assert result.exit_code == 0, result.output
    assert "40 keywords of preset 'actions', 40 new partitions" in result.output
    with dg.DagsterInstance.get() as instance:
        keys = set(instance.get_dynamic_partitions(keyword_partitions.name))
    assert len(keys) == 40 and all(is_slug(key) and "_" not in key for key in keys)
    assert tags()["person-lifting-a-box"] == "lifting" and sorted(set(tags().values())) == sorted(ACTIONS)

    again = CliRunner().invoke(cli.main, ["keywords", "preset", "actions"])
    assert "40 keywords of preset 'actions', 0 new partitions" in again.output
    assert len(tags()) == 40


def test_cli_refuses_an_unknown_preset():
    result = CliRunner().invoke(cli.main, ["keywords", "preset", "dances"])
    assert result.exit_code == 2 and "dances" in result.output


def test_launchpad_job_adds_the_preset(tmp_path):
    with dg.DagsterInstance.ephemeral() as instance:
        result = add_preset_keywords.execute_in_process(
            instance=instance,
            resources={"warehouse": warehouse_from_env()},
            run_config={"ops": {"register_preset_partitions": {"config": {"preset": "actions"}}}},
        )
        assert result.success
        assert len(instance.get_dynamic_partitions(keyword_partitions.name)) == 40
    assert tags()["waving-goodbye"] == "waving"


def test_registering_a_preset_again_changes_nothing(tmp_path):
    warehouse = warehouse_from_env()
    for _ in range(2):
        added, rejected = register_preset(warehouse, "actions")
        assert len(added) == 40 and not rejected
    assert len(tags()) == 40
    counts = warehouse.query_dicts(
        "SELECT (SELECT count(*) FROM keywords) AS keywords, (SELECT count(*) FROM keyword_tags) AS tags, "
        "(SELECT count(*) FROM keywords WHERE added_at IS NULL) AS unstamped"
    )
    assert counts == [{"keywords": 40, "tags": 40, "unstamped": 0}]
