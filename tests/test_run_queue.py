"""Two runs of one keyword partition submitted at once go through the committed instance's run queue under the
daemon: they run one after the other, and the partition holds the rows of exactly one."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def launch(partition_key: str, config: dict) -> subprocess.Popen:
    """`dagster job launch` of upload_pipeline for one partition: the run is submitted to the queue, not run."""
    tags = json.dumps({"dagster/partition": partition_key})
    argv = [str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", "upload_pipeline",
            "--tags", tags, "--config-json", json.dumps(config)]  # fmt: skip
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_queued_runs_of_one_partition_run_one_at_a_time(tmp_path):
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.effect_noise((160, 120), 40).convert("RGB").save(photos / "door.jpg", quality=90)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("keyword", ["door"])
    config = {"ops": {"media_registry": {"config": {"local_dir": str(photos)}}}}
    launches = [launch("door", config) for _ in range(2)]
    for process in launches:
        output, _ = process.communicate(timeout=180)
        assert process.returncode == 0, output
    daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        with dg.DagsterInstance.get() as instance:
            while True:
                records = instance.get_run_records()
                if len(records) == 2 and all(r.dagster_run.is_finished for r in records):
                    break
                assert time.monotonic() < deadline, [r.dagster_run.status for r in records]
                time.sleep(1)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)
    assert [r.dagster_run.status for r in records] == [dg.DagsterRunStatus.SUCCESS] * 2
    first, second = sorted(records, key=lambda r: r.start_time)
    assert first.end_time <= second.start_time  # the queue held the second run until the first had ended

    from resources.warehouse import warehouse_from_env

    rows = warehouse_from_env().query_dicts(
        "SELECT count(*) AS frames, count(DISTINCT frame_id) AS distinct_frames FROM frames WHERE partition_key = ?",
        ["door"],
    )
    assert rows == [{"frames": 1, "distinct_frames": 1}]
