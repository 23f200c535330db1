"""Crashed runs block nothing: under the daemon and the committed instance, a run whose worker is killed with
SIGKILL in the middle of a step is marked failed, retried from the failed step without anyone's help, and the retry
completes the partition exactly once; no pool slot stays claimed. Both committed instance files load and say so."""

import os
import shutil
import signal
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from harness import (
    BIN,
    EMBEDDED_INSTANCE,
    ROOT,
    embedded_home,
    finished,
    frame_counts,
    in_own_session,
    launch,
    make_photos,
    wait_for,
)

DAEMON = [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]  # the queue, monitoring and run retries
PRODUCTION = ROOT / "deploy" / "dagster.production.yaml"
MODEL_POOLS = ("vision_models", "pose_models")
PHOTOS = 240  # enough for the media step to take a few seconds, so the kill lands inside it
KILLED_STEP = "media"


def _check(config: dict, folder: Path) -> None:
    """Dagster loads the file (its schema and the concurrency settings are checked on load). A production file's
    Postgres storage and S3 compute logs are swapped for local ones, which need no server: the rest is as written
    (tests/test_production_backfill.py loads its storage against a real PostgreSQL)."""
    local = {**config, "storage": {"sqlite": {"base_dir": str(folder)}}}
    local.pop("compute_logs", None)
    (folder / "dagster.yaml").write_text(yaml.safe_dump(local))
    with dg.DagsterInstance.from_config(str(folder)):
        pass


@pytest.mark.parametrize("path", [EMBEDDED_INSTANCE, PRODUCTION], ids=["embedded", "production"])
def test_instance_files_monitor_runs_retry_crashes_and_limit_model_pools(path, monkeypatch, tmp_path):
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB", "MINING_S3_BUCKET"):
        monkeypatch.setenv(name, "x")  # the production file's `env:` values, which the schema resolves
    config = yaml.safe_load(path.read_text())
    _check(config, tmp_path)
    monitoring, retries = config["run_monitoring"], config["run_retries"]
    assert monitoring["enabled"] is True
    assert 0 < monitoring["poll_interval_seconds"] <= 30  # seconds, not the default two minutes
    assert 0 < monitoring["free_slots_after_run_end_seconds"] <= 60  # 0 would never free a crashed run's slots
    assert retries == {"enabled": True, "max_retries": retries["max_retries"], "retry_on_asset_or_op_failure": False}
    assert retries["max_retries"] >= 1  # Dagster's default, 0, never retries
    assert config["concurrency"]["pools"]["default_limit"] >= 1
    waits = config["run_coordinator"]["config"]  # queued runs wait out a code location that fails to load
    assert waits["max_user_code_failure_retries"] * waits["user_code_failure_retry_delay"] >= 120
    assert config["concurrency"]["runs"]["tag_concurrency_limits"] == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]


def test_the_embedded_instance_gives_each_model_pool_one_slot(tmp_path):
    shutil.copy(EMBEDDED_INSTANCE, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        assert instance.run_monitoring_poll_interval_seconds <= 10
        assert instance.run_retries_max_retries >= 1 and not instance.run_retries_retry_on_asset_or_op_failure
        for pool in MODEL_POOLS:
            assert instance.event_log_storage.get_concurrency_info(pool).limit == 1


def events(instance, run_id: str, event_type: dg.DagsterEventType) -> list:
    return [entry for entry in instance.all_logs(run_id, of_type=event_type) if entry.dagster_event]


def worker_pid(instance, run_id: str) -> int | None:
    """The pid of the run's worker, as its code server reported it: "Started process for run (pid: N)."."""
    for entry in events(instance, run_id, dg.DagsterEventType.ENGINE_EVENT):
        if entry.message.startswith("Started process for run"):
            return int(entry.dagster_event.event_specific_data.metadata["pid"].value)
    return None


def step_started(instance, run_id: str, step_key: str) -> bool:
    return any(e.step_key == step_key for e in events(instance, run_id, dg.DagsterEventType.STEP_START))


def step_ended(instance, run_id: str, step_key: str) -> bool:
    ends = events(instance, run_id, dg.DagsterEventType.STEP_SUCCESS)
    ends += events(instance, run_id, dg.DagsterEventType.STEP_FAILURE)
    return any(e.step_key == step_key for e in ends)


def kill_worker_in_step(instance, run_id: str, step_key: str) -> float:
    """SIGKILL the run's worker as soon as ``step_key`` has started; the moment of the kill."""
    pid = wait_for("run worker", lambda: worker_pid(instance, run_id), 120)
    wait_for(f"start of {step_key}", lambda: step_started(instance, run_id, step_key), 120, 0.05)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "multiprocessing" in cmdline, cmdline  # the code server's run subprocess, not some other process
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def status_of(instance, run_id: str, *statuses: dg.DagsterRunStatus):
    run = instance.get_run_by_id(run_id)
    return run if run.status in statuses else None


def retry_of(instance, run_id: str):
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
    return runs[0] if runs else None


def no_slot_claimed(instance) -> bool:
    infos = [instance.event_log_storage.get_concurrency_info(pool) for pool in MODEL_POOLS]
    return not instance.event_log_storage.get_concurrency_run_ids() and all(
        not info.claimed_slots and not info.pending_steps for info in infos
    )


@pytest.mark.slow
def test_a_run_killed_in_a_step_is_failed_and_retried_to_completion(tmp_path):
    embedded_home("door")
    photos = make_photos(tmp_path / "photos", PHOTOS)
    launch("door", {"ops": {"media_registry": {"config": {"local_dir": str(photos)}}}})
    timings = {}
    with in_own_session(DAEMON), dg.DagsterInstance.get() as instance:
        (first,) = instance.get_runs()
        killed = kill_worker_in_step(instance, first.run_id, KILLED_STEP)
        wait_for("failure of the killed run", lambda: status_of(instance, first.run_id, FAILURE), 30)
        timings["kill to FAILURE"] = time.monotonic() - killed
        assert not step_ended(instance, first.run_id, KILLED_STEP)  # the kill landed inside the step
        second = wait_for("automatic retry", lambda: retry_of(instance, first.run_id), 60)
        timings["kill to retry launched"] = time.monotonic() - killed
        second = wait_for("end of the retry", lambda: finished(instance, second.run_id), 120)
        timings["kill to retry finished"] = time.monotonic() - killed
        assert second.status == dg.DagsterRunStatus.SUCCESS
        assert second.tags["dagster/partition"] == "door"
        assert second.tags.get("dagster/root_run_id") == first.run_id
        assert step_started(instance, second.run_id, KILLED_STEP)  # from the failed step on
        assert not step_started(instance, second.run_id, "media_registry")  # which had succeeded
        assert len(instance.get_runs()) == 2  # one retry, nothing stacked on it
        wait_for("free pool slots", lambda: no_slot_claimed(instance), 30)
    print("timings:", {name: round(seconds, 1) for name, seconds in timings.items()})
    assert frame_counts("door") == [{"frames": PHOTOS, "distinct_frames": PHOTOS}]


@pytest.mark.slow
def test_the_pool_slot_of_a_killed_model_step_is_freed_for_its_retry(tmp_path, tiny_models, monkeypatch):
    """A run killed in a model step keeps its vision_models slot; run monitoring frees it, and the retry (blocked
    on that slot until then) gets it and succeeds."""
    settings = {"MINING_FILTER_BACKEND": "siglip", "MINING_FILTER_MODEL": tiny_models["siglip"],
                "MINING_EMBEDDER_MODEL": tiny_models["dinov2"], "MINING_DETECTOR_MODEL": tiny_models["grounding-dino"],
                "MINING_MODEL_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    for name, value in settings.items():
        monkeypatch.setenv(name, value)  # before the daemon starts: its code server and run workers inherit them
    embedded_home("door")
    photos = make_photos(tmp_path / "photos", 8)
    launch("door", {"ops": {"media_registry": {"config": {"local_dir": str(photos)}}}})
    timings = {}
    with in_own_session(DAEMON), dg.DagsterInstance.get() as instance:
        (upload,) = instance.get_runs()
        upload = wait_for("end of the upload", lambda: finished(instance, upload.run_id), 120)
        assert upload.status == dg.DagsterRunStatus.SUCCESS
        launch("door", {}, job="vision_pipeline")
        first = next(run for run in instance.get_runs() if run.job_name == "vision_pipeline")
        killed = kill_worker_in_step(instance, first.run_id, "filtered_frames")
        assert claimed_by(instance, "vision_models") == {first.run_id}
        wait_for("failure of the killed run", lambda: status_of(instance, first.run_id, FAILURE), 30)
        timings["kill to FAILURE"] = time.monotonic() - killed
        assert not step_ended(instance, first.run_id, "filtered_frames")
        assert claimed_by(instance, "vision_models") == {first.run_id}  # failed, and still holding its slot
        second = wait_for("automatic retry", lambda: retry_of(instance, first.run_id), 60)
        wait_for("the slot freed", lambda: first.run_id not in claimed_by(instance, "vision_models"), 30)
        timings["kill to slot freed"] = time.monotonic() - killed
        second = wait_for("end of the retry", lambda: finished(instance, second.run_id), 120)
        timings["kill to retry finished"] = time.monotonic() - killed
        assert second.status == dg.DagsterRunStatus.SUCCESS
        assert step_started(instance, second.run_id, "filtered_frames")
        wait_for("free pool slots", lambda: no_slot_claimed(instance), 30)
    print("timings:", {name: round(seconds, 1) for name, seconds in timings.items()})


FAILURE = dg.DagsterRunStatus.FAILURE


def claimed_by(instance, pool: str) -> set[str]:
    return {slot.run_id for slot in instance.event_log_storage.get_concurrency_info(pool).claimed_slots}
