"""Declarative automation and freshness policies: which stages follow their upstream per keyword, as the settings
say, and the freshness windows of the five watched assets."""

from datetime import timedelta

import dagster as dg
import pytest

import mining_assets.definitions as definitions
from mining_assets.automation import (
    FRESHNESS_ASSETS,
    MEDIAPIPE_STAGES,
    MODEL_STAGES,
    SENSOR_NAME,
    TORCH_STAGES,
    apply_policies,
    automated_model_stages,
    automation_sensor,
    freshness_policies,
    has_nvidia_gpu,
)
from mining_assets.jobs import upload_pipeline

defs = definitions.defs
KEYWORD, OTHER = "glass-door", "robot-arm"
VISION_DOWNSTREAM = {"filtered_frames", "frame_embeddings", "unique_frames", "detections", "coco_annotations",
                     "detection_visualizations"}  # fmt: skip
POSE_DOWNSTREAM = {"quality_scores", "poses", "pose_datasets"}
SOURCE_ASSETS = {"media_registry", "media", "video_frames", "frames"}


def window(fail_hours: float, warn_hours: float | None) -> dg.FreshnessPolicy:
    warn = None if warn_hours is None else timedelta(hours=warn_hours)
    return dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=fail_hours), warn_window=warn)


class Ticks:
    """Successive evaluations of the automation conditions of some assets against one instance, as the sensor's
    ticks."""

    def __init__(self, assets: list[dg.AssetsDefinition], instance: dg.DagsterInstance):
        self.defs = dg.Definitions(assets=assets, resources=defs.resources)  # none is used to evaluate
        self.instance, self.cursor = instance, None
        self.keys = [assets_def.key for assets_def in assets]

    def tick(self) -> dict[str, set[str]]:
        """What this tick requests: asset name -> keyword partitions."""
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        requested = {key.to_user_string(): set(result.get_requested_partitions(key)) for key in self.keys}
        return {name: partitions for name, partitions in requested.items() if partitions}

    def materialized(self, *assets: str, partition: str = KEYWORD) -> None:
        for asset in assets:
            self.instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=partition))


def ticks_for(instance, setting: str, gpu: bool = False) -> Ticks:
    """Ticks over the loaded assets given MINING_AUTOMATE_MODEL_STAGES=setting; the first tick, which only
    starts the conditions' memory, is taken, then the two keywords are added."""
    ticks = Ticks(apply_policies(defs.assets, env={"MINING_AUTOMATE_MODEL_STAGES": setting}, gpu=gpu), instance)
    assert ticks.tick() == {}
    instance.add_dynamic_partitions("keyword", [KEYWORD, OTHER])
    assert ticks.tick() == {}  # new keywords: every stage is missing, and so are its parents
    return ticks


@pytest.mark.parametrize(
    ("setting", "gpu", "expected"),
    [
        ("auto", False, POSE_DOWNSTREAM),  # the MediaPipe stages, and the HDF5 writer after them
        ("auto", True, VISION_DOWNSTREAM | POSE_DOWNSTREAM),
        ("all", False, VISION_DOWNSTREAM | POSE_DOWNSTREAM),
        ("none", True, set()),  # quality_scores waits for a click, so everything after it does
        ("filtered_frames, frame_embeddings", False, {"filtered_frames", "frame_embeddings", "unique_frames"}),
        ("quality_scores,detections", False, {"quality_scores"}),  # poses is manual: the chain stops there
    ],
)
def test_new_frames_of_a_keyword_bring_exactly_the_automated_stages_of_that_keyword(instance, setting, gpu, expected):
    ticks = ticks_for(instance, setting, gpu)
    ticks.materialized("frames")
    assert ticks.tick() == {asset: {KEYWORD} for asset in expected}  # one run's worth, OTHER untouched
    assert ticks.tick() == {}  # nothing new since: nothing requested


def test_each_model_stage_follows_its_parent_when_the_setting_names_it(instance):
    ticks = ticks_for(instance, "poses,detections")
    ticks.materialized("quality_scores")
    assert ticks.tick() == {"poses": {KEYWORD}, "pose_datasets": {KEYWORD}}
    ticks.materialized("unique_frames", partition=OTHER)
    assert ticks.tick() == {name: {OTHER} for name in ("detections", "coco_annotations", "detection_visualizations")}
    assert ticks.tick() == {}


def test_frames_waits_for_both_of_its_parents(instance):
    ticks = ticks_for(instance, "auto")
    ticks.materialized("media")  # video_frames of the keyword still missing: frames can't be catalogued
    assert ticks.tick() == {}
    ticks.materialized("video_frames")
    assert ticks.tick() == {asset: {KEYWORD} for asset in {"frames"} | POSE_DOWNSTREAM}


def test_mongo_export_is_never_requested(instance):
    ticks = ticks_for(instance, "all", gpu=True)
    ticks.materialized("pose_datasets")
    assert ticks.tick() == {}
    ticks.materialized("frames", partition=OTHER)
    assert ticks.tick() == {asset: {OTHER} for asset in VISION_DOWNSTREAM | POSE_DOWNSTREAM}  # up to pose_datasets


def test_a_source_run_is_not_followed_by_its_own_assets_and_what_follows_runs_green(instance, resources):
    """`make dev` with nothing configured: a source run of a keyword, then what automation asks for it (auto, no
    GPU) runs green on the embedded defaults, and asks for nothing more."""
    applied = apply_policies(defs.assets, env={"MINING_AUTOMATE_MODEL_STAGES": "auto"}, gpu=False)
    resources = {**defs.resources, **resources}  # the models' resources as configured: none is loaded for no frames
    local = dg.Definitions(assets=applied, jobs=[upload_pipeline], resources=resources)
    ticks = Ticks(applied, instance)
    instance.add_dynamic_partitions("keyword", [KEYWORD])
    assert ticks.tick() == {}

    run = local.resolve_job_def("upload_pipeline").execute_in_process(instance=instance, partition_key=KEYWORD)
    assert {event.asset_key.to_user_string() for event in run.get_asset_materialization_events()} == SOURCE_ASSETS
    requested = ticks.tick()
    assert requested == {asset: {KEYWORD} for asset in POSE_DOWNSTREAM}  # no source asset again

    followed = dg.materialize(
        applied,
        selection=sorted(requested),
        partition_key=KEYWORD,
        instance=instance,
        resources=resources,
    )
    assert followed.success
    assert ticks.tick() == {}


@pytest.mark.parametrize(
    ("env", "driver", "expected"),
    [
        ({}, True, True),
        ({}, False, False),
        ({"MINING_MODEL_DEVICE": "auto"}, True, True),
        ({"MINING_MODEL_DEVICE": "cuda:1"}, False, True),  # cuda chosen: the machine is not asked
        ({"MINING_MODEL_DEVICE": "cpu"}, True, False),  # a GPU the models are told not to use
        ({"MINING_MODEL_DEVICE": "mps"}, False, False),
        ({"MINING_K8S_GPUS_PER_RUN": "1"}, False, True),  # the runs get their GPUs on Kubernetes nodes
        ({"MINING_K8S_GPUS_PER_RUN": "0"}, False, False),
    ],
)
def test_the_gpu_is_found_without_torch(tmp_path, env, driver, expected):
    (tmp_path / "nvidiactl").touch()  # the driver's control node: there without a GPU given to this machine
    if driver:
        (tmp_path / "nvidia3").touch()  # a container sees its GPU's own number
    assert has_nvidia_gpu(env, paths=[f"{tmp_path}/nvidia[0-9]*", f"{tmp_path}/absent/*"]) is expected


def test_the_model_stage_setting(monkeypatch):
    assert automated_model_stages({}, gpu=False) == set(MEDIAPIPE_STAGES)
    assert automated_model_stages({"MINING_AUTOMATE_MODEL_STAGES": " "}, gpu=True) == set(MODEL_STAGES)
    assert automated_model_stages({"MINING_AUTOMATE_MODEL_STAGES": "AUTO", "MINING_MODEL_DEVICE": "cuda"}) == set(
        MODEL_STAGES
    )
    assert automated_model_stages({"MINING_AUTOMATE_MODEL_STAGES": "all"}, gpu=False) == set(MODEL_STAGES)
    assert automated_model_stages({"MINING_AUTOMATE_MODEL_STAGES": "none"}, gpu=True) == set()
    assert automated_model_stages({"MINING_AUTOMATE_MODEL_STAGES": "poses,,detections "}) == {"poses", "detections"}
    monkeypatch.setenv("MINING_AUTOMATE_MODEL_STAGES", "frame_embeddings")
    assert automated_model_stages() == {"frame_embeddings"}  # the process's environment by default


@pytest.mark.parametrize("setting", ["poses,frames", "pose", "everything", "mongo_export"])
def test_a_name_that_is_not_a_model_stage_is_refused(setting):
    with pytest.raises(ValueError) as refused:
        apply_policies(defs.assets, env={"MINING_AUTOMATE_MODEL_STAGES": setting})
    message = str(refused.value)
    assert "MINING_AUTOMATE_MODEL_STAGES" in message and setting in message
    assert all(stage in message for stage in MODEL_STAGES) and "auto, all, none" in message


def test_the_loaded_definitions_automate_the_following_stages_and_run_their_sensor():
    graph = defs.resolve_asset_graph()
    conditions = {key.to_user_string(): graph.get(key).automation_condition for key in graph.get_all_asset_keys()}
    torch = set(TORCH_STAGES) if has_nvidia_gpu() else set()  # this machine's own answer (auto)
    assert {name for name, condition in conditions.items() if condition} == {
        "frames", "unique_frames", "coco_annotations", "detection_visualizations", "pose_datasets", "quality_scores",
        "poses", "unique_categories", *torch,
    }  # fmt: skip
    assert all(c == dg.AutomationCondition.eager() for c in conditions.values() if c)
    sensors = {sensor.name: sensor for sensor in defs.get_repository_def().sensor_defs}
    assert "default_automation_condition_sensor" not in sensors  # ours covers every asset: Dagster adds none
    sensor = sensors[SENSOR_NAME]
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED  # tests/conftest.py: MINING_AUTOMATION_SENSOR
    assert automation_sensor({}).default_status == dg.DefaultSensorStatus.RUNNING  # nothing set: it runs
    assert sensor.asset_selection.resolve(graph) == graph.get_all_asset_keys()
    assert sensor.emit_backfills is False


def test_policies_keep_checks_partitions_retries_and_pools():
    applied = apply_policies(defs.assets, env={"MINING_AUTOMATE_MODEL_STAGES": "all"}, gpu=False)
    for assets_def in applied:
        name = assets_def.key.to_user_string()
        original = getattr(definitions, name)  # the asset as its module defines it
        assert assets_def.check_keys == original.check_keys, name
        assert assets_def.partitions_def == original.partitions_def, name
        assert (assets_def.op.retry_policy, assets_def.op.pool) == (original.op.retry_policy, original.op.pool), name
        assert [spec.automation_condition for spec in original.specs] == [None], name
    dg.Definitions.validate_loadable(dg.Definitions(assets=applied, resources=defs.resources))


def test_the_sensor_setting():
    assert automation_sensor({}).default_status == dg.DefaultSensorStatus.RUNNING
    stopped = automation_sensor({"MINING_AUTOMATION_SENSOR": "Stopped"}, run_tags={"team": "vision"})
    assert stopped.default_status == dg.DefaultSensorStatus.STOPPED and stopped.run_tags == {"team": "vision"}
    with pytest.raises(ValueError, match="MINING_AUTOMATION_SENSOR='off': expected running or stopped"):
        automation_sensor({"MINING_AUTOMATION_SENSOR": "off"})


def test_each_watched_asset_carries_its_freshness_policy_in_the_loaded_definitions():
    graph = defs.resolve_asset_graph()
    policies = {key.to_user_string(): graph.get(key).freshness_policy for key in graph.get_all_asset_keys()}
    assert {name: policy for name, policy in policies.items() if policy} == {
        name: window(48, 24) for name in ("media_registry", "frames", "coco_annotations", "pose_datasets",
                                          "mongo_export")
    }  # fmt: skip


def test_freshness_windows_follow_the_environment():
    assert freshness_policies({}) == {name: window(48, 24) for name in FRESHNESS_ASSETS}
    env = {
        "MINING_FRESHNESS_HOURS": "12",  # every asset; warn at half unless told
        "MINING_FRESHNESS_FRAMES_HOURS": "6",
        "MINING_FRESHNESS_FRAMES_WARN_HOURS": "0.5",
        "MINING_FRESHNESS_COCO_ANNOTATIONS_WARN_HOURS": "off",
        "MINING_FRESHNESS_MONGO_EXPORT_HOURS": "off",
        "MINING_FRESHNESS_POSE_DATASETS_HOURS": " 168 ",
    }
    assert freshness_policies(env) == {
        "media_registry": window(12, 6),
        "frames": window(6, 0.5),
        "coco_annotations": window(12, None),
        "pose_datasets": window(168, 84),
    }
    warn_for_all = {"MINING_FRESHNESS_WARN_HOURS": "20", "MINING_FRESHNESS_MEDIA_REGISTRY_HOURS": "72"}
    assert freshness_policies(warn_for_all)["media_registry"] == window(72, 20)
    assert freshness_policies(warn_for_all)["frames"] == window(48, 20)
    assert freshness_policies({"MINING_FRESHNESS_HOURS": "off"}) == {}
    applied = apply_policies(defs.assets, env={"MINING_FRESHNESS_HOURS": "off", "MINING_FRESHNESS_FRAMES_HOURS": "2"})
    assert {
        spec.key.to_user_string(): spec.freshness_policy for a in applied for spec in a.specs if spec.freshness_policy
    } == {"frames": window(2, 1)}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MINING_FRESHNESS_HOURS": "two days"}, "MINING_FRESHNESS_HOURS='two days': expected a number of hours"),
        ({"MINING_FRESHNESS_HOURS": "0"}, "MINING_FRESHNESS_HOURS='0': a window is at least 1 minute"),
        ({"MINING_FRESHNESS_FRAMES_HOURS": "-3"}, "MINING_FRESHNESS_FRAMES_HOURS='-3': a window is at least 1 minute"),
        ({"MINING_FRESHNESS_HOURS": "nan"}, "MINING_FRESHNESS_HOURS='nan': a window is at least 1 minute"),
        ({"MINING_FRESHNESS_HOURS": "inf"}, "MINING_FRESHNESS_HOURS='inf': a window is at least 1 minute"),
        ({"MINING_FRESHNESS_WARN_HOURS": "48"}, "MINING_FRESHNESS_WARN_HOURS='48': the warn window must be shorter"),
        (
            {"MINING_FRESHNESS_POSE_DATASETS_HOURS": "4", "MINING_FRESHNESS_POSE_DATASETS_WARN_HOURS": "5"},
            "fail window of pose_datasets (4 hours, from MINING_FRESHNESS_POSE_DATASETS_HOURS)",
        ),
        ({"MINING_FRESHNESS_FRAME_HOURS": "4"}, "unknown freshness setting MINING_FRESHNESS_FRAME_HOURS"),
        ({"MINING_FRESHNESS_POSES_WARN_HOURS": "4"}, "the assets with a freshness policy are media_registry, frames"),
    ],
)
def test_invalid_freshness_windows_are_refused(env, message):
    with pytest.raises(ValueError) as refused:
        freshness_policies(env)
    assert message in str(refused.value)
