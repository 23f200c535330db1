"""Settings stored per keyword: validated against each stage's config, merged or replaced, used by the stage's runs
of that keyword under the run's own config, shown by the CLI, the configure_keyword job and the stages' metadata."""

import json
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner
from harness import materialize_partition, meta, query_dicts

from mining_assets import cli, keyword_settings
from mining_assets.frames import frames
from mining_assets.jobs import configure_keyword
from mining_assets.keyword_settings import SettingsError, configure, stage_config, stored_settings
from mining_assets.partitions import keyword_partitions
from mining_assets.sources.media import media
from mining_assets.sources.media_registry import media_registry
from mining_assets.video.frames import video_frames
from mining_assets.video.synthetic import make_video
from mining_assets.vision.unique import DedupConfig
from resources.warehouse import Warehouse, warehouse_from_env

SOURCE_ASSETS = [media_registry, media, video_frames, frames]
NO_NETWORK_SOURCES = {"youtube_search": False, "uploads": False, "stock_sources": []}  # the run picks no source


@pytest.fixture
def lake(resources):
    return resources["warehouse"]


# ---------------------------------------------------------------------- configure
@pytest.mark.parametrize(
    ("asset", "settings", "reason"),
    [
        ("frames", {"every_s": 1}, "unknown stage 'frames'"),
        ("video_frames", {"every_sec": 0.5}, "video_frames has no setting 'every_sec'; its settings: strategy,"),
        ("video_frames", {"every_s": "often"}, "video_frames.every_s: Input should be a valid number"),
        ("video_frames", {"strategy": "random"}, "video_frames.strategy: Input should be 'interval', 'time' or"),
        ("filtered_frames", {"classes": "door handle"}, "filtered_frames.classes: Input should be a valid list"),
        ("media_registry", {"s3_keys": ["uploads/a.jpg"]}, "media_registry.s3_keys can't be stored per keyword: it"),
        ("media_registry", {"keyword": "glass door"}, "media_registry.keyword can't be stored per keyword"),
        ("filtered_frames", {"rescore": True}, "filtered_frames.rescore can't be stored per keyword"),
        ("media_registry", {"local_dir": "/photos/{keyword}"}, "unknown placeholder {keyword}"),
        ("media_registry", {"s3_prefixes": ["a/{partition_key"]}, "media_registry.s3_prefixes: template"),
    ],
)
def test_configure_refuses_with_the_reason_and_writes_nothing(lake, asset, settings, reason):
    configure(lake, "glass-door", "video_frames", {"every_s": 0.5})
    with pytest.raises(SettingsError) as refused:
        configure(lake, "glass-door", asset, settings)
    assert reason in str(refused.value)
    rows = query_dicts({"warehouse": lake}, "SELECT asset, settings FROM keyword_settings")
    assert rows == [{"asset": "video_frames", "settings": '{"every_s": 0.5}'}]


def test_configure_refuses_a_template_this_keyword_cannot_use(lake):
    with pytest.raises(SettingsError, match=r"gives '/photos/\.\./x', which is '/x': outside '/photos/'"):
        configure(lake, "../x", "media_registry", {"local_dir": "/photos/{partition_key}"})
    assert configure(lake, "glass-door", "media_registry", {"local_dir": "/photos/{partition_key}"}) == {
        "local_dir": "/photos/{partition_key}"
    }, "the template is stored as written, resolved when the stage runs"


def test_configure_merges_replaces_unsets_and_normalizes(lake):
    assert configure(lake, "glass-door", "video_frames", {"every_s": "0.5", "strategy": "time"}) == {
        "strategy": "time",
        "every_s": 0.5,
    }, "stored as the config reads them"
    assert configure(lake, "glass-door", "video_frames", {"max_frames_per_video": 20}) == {
        "strategy": "time", "every_s": 0.5, "max_frames_per_video": 20,
    }  # fmt: skip
    assert configure(lake, "glass-door", "video_frames", {}, unset=["strategy"]) == {
        "every_s": 0.5, "max_frames_per_video": 20,
    }  # fmt: skip
    assert configure(lake, "glass-door", "video_frames", {"every_n_frames": 5}, replace=True) == {"every_n_frames": 5}
    configure(lake, "robot-arm", "video_frames", {"every_s": 2.0})
    assert stored_settings(lake, "glass-door", "video_frames") == {"every_n_frames": 5}
    assert stored_settings(lake, "robot-arm", "video_frames") == {"every_s": 2.0}
    assert stored_settings(lake, "glass-door", "unique_frames") == {}
    assert configure(lake, "glass-door", "video_frames", {}, replace=True) == {}
    rows = query_dicts({"warehouse": lake}, "SELECT partition_key, asset FROM keyword_settings ORDER BY ALL")
    assert rows == [{"partition_key": "robot-arm", "asset": "video_frames"}], "an empty stage leaves no row"


def test_configure_writes_under_the_keywords_settings_lease(lake, monkeypatch):
    leases = []
    retrying = type(lake).retrying

    def spy(self, lease=None):
        leases.append(lease)
        return retrying(self, lease)

    monkeypatch.setattr(type(lake), "retrying", spy)
    configure(lake, "glass-door", "unique_frames", {"threshold": 0.8})
    assert leases == ["keyword_settings:glass-door"]


def test_every_stage_with_config_is_in_the_class_map():
    from mining_assets.definitions import defs

    partitioned = {
        key.to_user_string(): assets_def
        for assets_def in defs.assets
        for key in assets_def.keys
        if assets_def.partitions_def == keyword_partitions
    }
    fields = {name: getattr(a.op.config_schema.as_field().config_type, "fields", {}) for name, a in partitioned.items()}
    with_config = {name: list(names) for name, names in fields.items() if names}
    assert set(with_config) == set(keyword_settings.CONFIG_CLASSES)
    for name, fields in with_config.items():
        assert fields == list(keyword_settings.config_class(name).model_fields), name


def test_reading_the_class_map_loads_no_model_library():
    import subprocess
    import sys

    code = (
        "import sys; from mining_assets import keyword_settings as k; [k.config_class(a) for a in k.CONFIG_CLASSES];"
        " print(sorted({'torch', 'transformers', 'mediapipe', 'cv2', 'h5py', 'pymongo', 'av'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------- stage_config: keyword, then run, per field
@dg.asset(partitions_def=keyword_partitions, name="unique_frames")
def dedup_probe(context: dg.AssetExecutionContext, config: DedupConfig, warehouse: Warehouse) -> dg.MaterializeResult:
    """A stand-in of unique_frames that only reports the config it resolved."""
    config, _ = stage_config(context, config, warehouse)
    return dg.MaterializeResult(metadata={"threshold": config.threshold, "method": config.method})


def probe(lake, instance, key: str, **run_fields):
    instance.add_dynamic_partitions("keyword", [key])
    run_config = {"ops": {"unique_frames": {"config": run_fields}}} if run_fields else {}
    result = dg.materialize([dedup_probe], partition_key=key, resources={"warehouse": lake}, instance=instance,
                            run_config=run_config)  # fmt: skip
    return meta(result, "unique_frames")


def test_a_run_names_a_field_to_override_the_keyword_even_with_the_default_value(lake, instance):
    assert probe(lake, instance, "glass-door") == {"threshold": 0.90, "method": "auto", "settings_from": {}}
    configure(lake, "glass-door", "unique_frames", {"threshold": 0.5, "method": "exact"})
    assert probe(lake, instance, "glass-door") == {
        "threshold": 0.5, "method": "exact",
        "settings_from": {"threshold": {"value": 0.5, "from": "keyword"},
                          "method": {"value": "exact", "from": "keyword"}},
    }  # fmt: skip
    # the default value, named in the run config, is the run's choice; the other field stays the keyword's
    overridden = probe(lake, instance, "glass-door", threshold=0.90)
    assert (overridden["threshold"], overridden["method"]) == (0.90, "exact")
    assert overridden["settings_from"]["threshold"] == {"value": 0.9, "from": "run"}
    assert probe(lake, instance, "glass-door")["threshold"] == 0.5, "for that run only"
    assert probe(lake, instance, "robot-arm")["threshold"] == 0.90, "another keyword keeps the defaults"


def test_a_job_run_reads_its_launch_config_the_same_way(lake, instance):
    configure(lake, "glass-door", "unique_frames", {"threshold": 0.5, "method": "exact"})
    defs = dg.Definitions(assets=[dedup_probe], jobs=[dg.define_asset_job("dedup", selection=[dedup_probe])],
                          resources={"warehouse": lake})  # fmt: skip
    instance.add_dynamic_partitions("keyword", ["glass-door"])
    result = defs.resolve_job_def("dedup").execute_in_process(
        instance=instance,
        partition_key="glass-door",
        run_config={"ops": {"unique_frames": {"config": {"method": "ivf"}}}},
    )
    shown = meta(result, "unique_frames")
    assert (shown["threshold"], shown["method"]) == (0.5, "ivf")


def test_stored_settings_that_no_longer_fit_fail_the_step_naming_the_fix(lake, instance):
    for attempt in lake.retrying():
        with attempt as conn:  # as an older config class would have left them
            conn.execute(
                "INSERT INTO keyword_settings VALUES ('glass-door', 'unique_frames', '{\"radius\": 3}', now())"
            )
    with pytest.raises(dg.Failure) as failed:
        probe(lake, instance, "glass-door")
    assert "no longer fit its config: radius" in str(failed.value)
    assert "mining keywords configure glass-door --clear unique_frames" in str(failed.value)
    assert configure(lake, "glass-door", "unique_frames", {"threshold": 0.7}, replace=True) == {"threshold": 0.7}
    assert probe(lake, instance, "glass-door")["threshold"] == 0.7


# ---------------------------------------------------------------------- a real source chain, two keywords
@pytest.fixture
def collections(tmp_path) -> Path:
    """A 3 s video (90 frames at 30 fps) for glass-door and a 2 s one for robot-arm, in one folder per key."""
    root = tmp_path / "collections"
    for key in ("glass-door", "robot-arm"):
        (root / key).mkdir(parents=True)
    make_video(root / "glass-door" / "door.mp4", frames=90, fps=30)
    make_video(root / "robot-arm" / "arm.mp4", frames=60, fps=30, size=(256, 192))
    return root


def sample_of(resources, key: str) -> list[dict]:
    return query_dicts(
        resources,
        "SELECT s.strategy, s.every_n_frames, s.every_s, s.frames FROM keyword_samples k "
        "JOIN video_samples s USING (media_id, sampling) WHERE k.partition_key = ?",
        key,
    )


def test_each_keyword_of_a_backfill_runs_with_its_own_stored_settings(resources, instance, collections):
    lake = resources["warehouse"]
    template = str(collections / "{partition_key}")
    for key in ("glass-door", "robot-arm"):
        configure(lake, key, "media_registry", {"local_dir": template})
    configure(lake, "glass-door", "video_frames", {"every_s": 0.5})
    configure(lake, "robot-arm", "video_frames", {"strategy": "interval", "every_n_frames": 20})
    runs = {}
    for key in ("glass-door", "robot-arm"):  # one run config for every partition, as a backfill gives
        runs[key], checks = materialize_partition(resources, instance, key, SOURCE_ASSETS,
                                                  media_registry=NO_NETWORK_SOURCES)  # fmt: skip
        assert all(checks.values()), (key, checks)
    assert sample_of(resources, "glass-door") == [{"strategy": "time", "every_n_frames": 30, "every_s": 0.5,
                                                   "frames": 6}]  # fmt: skip
    assert sample_of(resources, "robot-arm") == [{"strategy": "interval", "every_n_frames": 20, "every_s": 1.0,
                                                  "frames": 3}]  # fmt: skip
    registry = query_dicts(resources, "SELECT partition_key, url FROM registry ORDER BY partition_key")
    assert [(r["partition_key"], r["url"].rsplit("/", 2)[-2:]) for r in registry] == [
        ("glass-door", ["glass-door", "door.mp4"]), ("robot-arm", ["robot-arm", "arm.mp4"])
    ]  # fmt: skip
    shown = meta(runs["glass-door"], "video_frames")["settings_from"]
    assert shown == {"every_s": {"value": 0.5, "from": "keyword"}}
    assert meta(runs["glass-door"], "media_registry")["settings_from"]["local_dir"] == {
        "value": template, "from": "keyword"
    }  # fmt: skip
    assert meta(runs["glass-door"], "media_registry")["settings_from"]["uploads"] == {"value": False, "from": "run"}
    assert meta(runs["glass-door"], "frames").get("settings_from") is None, "frames has no config"

    # a run that names every_s samples with it, for that run only
    once, _ = materialize_partition(resources, instance, "glass-door", [video_frames], video_frames={"every_s": 1.5})
    assert meta(once, "video_frames")["settings_from"] == {"every_s": {"value": 1.5, "from": "run"}}
    assert sample_of(resources, "glass-door")[0]["frames"] == 2
    materialize_partition(resources, instance, "glass-door", [video_frames])
    assert sample_of(resources, "glass-door")[0]["every_s"] == 0.5


# ---------------------------------------------------------------------- the command line and the UI job
def invoke(*args: str):
    return CliRunner().invoke(cli.main, list(args))


def test_cli_configures_shows_and_lists_a_keywords_settings():
    assert invoke("keywords", "add", "glass door", "robot arm").exit_code == 0
    result = invoke(
        "keywords", "configure", "glass door",
        "--set", 'filtered_frames.classes=["door handle"]',
        "--set", "video_frames.every_s=0.5",
        "--set", "media_registry.local_dir=/photos/{partition_key}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = ['filtered_frames.classes=["door handle"]', 'media_registry.local_dir="/photos/{partition_key}"',
                "video_frames.every_s=0.5"]  # fmt: skip
    assert result.stdout.splitlines() == expected
    shown = invoke("keywords", "show", "glass-door")
    assert shown.exit_code == 0 and shown.stdout.splitlines() == expected
    listed = invoke("keywords", "list")
    summary = "; ".join(expected)
    assert len(summary) > 80
    assert sorted(listed.stdout.splitlines()) == [
        "glass-door\tglass door\t" + summary[:79] + "…",
        "robot-arm\trobot arm",
    ]
    # what show prints, --set takes back
    again = invoke("keywords", "configure", "glass-door", "--replace", *[f"--set={line}" for line in expected[1:]])
    assert again.exit_code == 0, again.output
    assert invoke("keywords", "show", "glass-door").stdout.splitlines() == expected

    assert invoke("keywords", "configure", "glass-door", "--unset", "video_frames.every_s").exit_code == 0
    assert invoke("keywords", "configure", "glass-door", "--clear", "filtered_frames").exit_code == 0
    assert invoke("keywords", "show", "glass-door").stdout.splitlines() == [expected[1]]
    empty = invoke("keywords", "show", "robot arm")
    assert empty.exit_code == 0 and empty.stdout == ""
    assert "no settings stored for robot-arm: every stage uses its defaults" in empty.stderr


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--set", "video_frames.every_s=often"], "video_frames.every_s: Input should be a valid number"),
        (["--set", "video_frames=0.5"], "expected STAGE.FIELD (e.g. video_frames.every_s)"),
        (["--set", "video_frames.every_s"], "expected STAGE.FIELD=VALUE"),
        (["--set", "media_registry.s3_keys=[]"], "can't be stored per keyword"),
        (["--clear", "frames"], "unknown stage 'frames'"),
        (["--unset", "poses.radius"], "poses has no setting 'radius'"),
        (["--set", "media_registry.local_dir=/p/{partition_key}/../.."], "outside '/p/'"),
    ],
)
def test_cli_refuses_settings_and_writes_none(args, reason):
    assert invoke("keywords", "add", "glass door").exit_code == 0
    assert invoke("keywords", "configure", "glass-door", "--set", "unique_frames.threshold=0.8").exit_code == 0
    # a good setting beside the bad one is not written either
    result = invoke("keywords", "configure", "glass-door", "--set", "poses.min_side=100", *args)
    assert result.exit_code == 2, result.output
    assert reason in result.stderr and "Traceback" not in result.output
    assert invoke("keywords", "show", "glass-door").stdout.splitlines() == ["unique_frames.threshold=0.8"]


@pytest.mark.parametrize(
    ("args", "reason"),
    [(["glass-door"], "nothing to change"), (["window", "--set", "poses.min_side=2"], "no keyword partition 'window'")],
)
def test_cli_needs_a_keyword_partition_and_a_change(args, reason):
    assert invoke("keywords", "add", "glass door").exit_code == 0
    result = invoke("keywords", "configure", *args)
    assert result.exit_code == 2 and reason in result.stderr


def test_cli_configures_a_partition_added_by_hand_by_its_key():
    invoke("keywords", "list")  # makes the Dagster home
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(keyword_partitions.name, ["typed in the UI"])
    result = invoke("keywords", "configure", "typed in the UI", "--set", "quality_scores.threshold=50")
    assert result.exit_code == 0, result.output
    assert stored_settings(warehouse_from_env(), "typed in the UI", "quality_scores") == {"threshold": 50.0}


def run_configure_job(lake, instance, **config):
    return configure_keyword.execute_in_process(
        instance=instance, resources={"warehouse": lake}, raise_on_error=False,
        run_config={"ops": {"configure_keyword_settings": {"config": config}}},
    )  # fmt: skip


def test_configure_keyword_job_stores_and_shows_the_settings(lake, instance):
    instance.add_dynamic_partitions("keyword", ["glass-door"])
    result = run_configure_job(lake, instance, partition_key="glass door", asset="filtered_frames",
                               settings={"classes": ["door handle"], "threshold": 0.3})  # fmt: skip
    assert result.success
    output = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT").event_specific_data
    assert {k: v.value for k, v in output.metadata.items()} == {
        "partition_key": "glass-door", "asset": "filtered_frames",
        "settings": {"classes": ["door handle"], "threshold": 0.3},
    }  # fmt: skip
    as_text = run_configure_job(lake, instance, partition_key="glass-door", asset="filtered_frames",
                                settings=json.dumps({"threshold": 0.4}))  # fmt: skip
    assert as_text.success
    assert stored_settings(lake, "glass-door", "filtered_frames") == {"classes": ["door handle"], "threshold": 0.4}
    replaced = run_configure_job(lake, instance, partition_key="glass-door", asset="filtered_frames",
                                 settings={"captions": ["a door"]}, replace=True)  # fmt: skip
    assert replaced.success
    assert stored_settings(lake, "glass-door", "filtered_frames") == {"captions": ["a door"]}


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"partition_key": "glass-door", "asset": "detections", "settings": {"thresh": 1}}, "no setting 'thresh'"),
        ({"partition_key": "glass-door", "asset": "detections", "settings": "{not json"}, "settings are not JSON"),
        ({"partition_key": "glass-door", "asset": "detections", "settings": [1]}, "must be an object"),
        ({"partition_key": "window", "asset": "detections", "settings": {}}, "no keyword partition 'window'"),
    ],
)
def test_configure_keyword_job_fails_with_the_reason(lake, instance, config, reason):
    instance.add_dynamic_partitions("keyword", ["glass-door"])
    result = run_configure_job(lake, instance, **config)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert reason in failure.event_specific_data.error.message
    assert query_dicts({"warehouse": lake}, "SELECT * FROM keyword_settings") == []
