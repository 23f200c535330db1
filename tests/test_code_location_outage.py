"""A code location that fails to load while runs are queued: under the daemon and the committed embedded instance,
the queued run waits (the queue tries it again instead of failing it) and runs once, to completion, when the
location loads again.

The daemon gets the location the way `mining dev` (`dagster dev`) and a deployment give it: a code server of its
own (`dagster code-server start`, which `dagster dev` starts per location) named in a `grpc_server` workspace entry.
The outage is a redeploy with a wrong environment: a batch size that is not a number, so importing
mining_assets.definitions raises (pydantic refuses the value) and the server serves that load error. The fix is
another redeploy: a server with the right environment on the same port. The daemon watches its code servers every
second and reloads a location whose server changed; it does not wait for its 60 s workspace refresh (the only
reload of a location the daemon starts itself from a `python_module` entry, and not configurable)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import dagster as dg
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EMBEDDED = ROOT / "dagster_home" / "dagster.yaml"
LOCATION = "mining_assets.definitions"  # the location name `dagster job launch -w workspace.yaml` gives the run
PHOTOS = 6
BROKEN = {"MINING_FILTER_BATCH_SIZE": "sixteen"}  # definitions.py builds TextImageFilter(batch_size=...) on import
IMPORT_ERROR = "unable to parse string as an integer"  # pydantic's words for it, in the server's load error
RETRYING = "Run dequeue failed to reach the user code server, re-submitting the run into the queue"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, probe, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(step)


@contextmanager
def started(argv: list[str], env: dict | None = None):
    """A process in its own session, stopped by signalling its process group (with the children it started)."""
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def code_server(port: int, env: dict):
    """`dagster code-server start` for the project's module on ``port``: it stays up when the import fails and
    serves the error to whoever asks it for the location."""
    return started([str(BIN / "dagster"), "code-server", "start", "-m", LOCATION, "-p", str(port)], env)


def launch(config: dict) -> None:
    """`dagster job launch` of upload_pipeline for the partition "door": the run goes to the queue."""
    argv = [str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", "upload_pipeline",
            "--tags", json.dumps({"dagster/partition": "door"}), "--config-json", json.dumps(config)]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


def dequeue_errors(instance, run_id: str) -> list[tuple[str, str]]:
    """The daemon's failed tries to start the run: (the engine event's message, the error it carries)."""
    found = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        error = getattr(entry.dagster_event.event_specific_data, "error", None)
        if error is not None:
            found.append((entry.message, error.to_string()))
    return found


def tried_and_met_the_import_error(instance, run_id: str):
    """The run, once the daemon has tried to start it, met the import error and put it back in the queue (the
    event is written before the run is queued again), or once it has ended."""
    run = instance.get_run_by_id(run_id)
    met = any(IMPORT_ERROR in error for _, error in dequeue_errors(instance, run_id))
    return run if (met and run.status == dg.DagsterRunStatus.QUEUED) or run.is_finished else None


def finished(instance, run_id: str):
    run = instance.get_run_by_id(run_id)
    return run if run.is_finished else None


def frame_counts(partition_key: str) -> list[dict]:
    from resources.warehouse import warehouse_from_env

    return warehouse_from_env().query_dicts(
        "SELECT count(*) AS frames, count(DISTINCT frame_id) AS distinct_frames FROM frames WHERE partition_key = ?",
        [partition_key],
    )


@pytest.mark.slow
def test_a_run_queued_while_its_code_location_fails_to_load_waits_and_runs_once_it_loads(tmp_path):
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(EMBEDDED, home / "dagster.yaml")
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("keyword", ["door"])
    photos = tmp_path / "photos"
    photos.mkdir()
    for number in range(PHOTOS):
        Image.effect_noise((320, 240), 20 + number).convert("RGB").save(photos / f"p{number}.jpg", quality=90)
    port = free_port()
    workspace = tmp_path / "workspace.yaml"
    entry = {"grpc_server": {"host": "localhost", "port": port, "location_name": LOCATION}}
    workspace.write_text(yaml.safe_dump({"load_from": [entry]}))
    timings = {}
    with ExitStack() as stack, ExitStack() as broken:
        instance = stack.enter_context(dg.DagsterInstance.get())
        broken.enter_context(code_server(port, {**os.environ, **BROKEN}))
        launch({"ops": {"media_registry": {"config": {"local_dir": str(photos)}}}})
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.QUEUED
        stack.enter_context(started([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)]))
        start = time.monotonic()
        run = wait_for("try of the daemon's", lambda: tried_and_met_the_import_error(instance, run.run_id), 60)
        timings["daemon start to a try that met the import error"] = time.monotonic() - start
        tries = dequeue_errors(instance, run.run_id)
        assert run.status == dg.DagsterRunStatus.QUEUED, [message for message, _ in tries]  # back in the queue
        assert all(message.startswith(RETRYING) for message, _ in tries), tries[-1]
        broken.close()  # the redeploy: the broken server goes, a server with the right environment takes its port
        redeployed = time.time()
        stack.enter_context(code_server(port, dict(os.environ)))
        run = wait_for("end of the run", lambda: finished(instance, run.run_id), 90)
        timings["redeploy to the run's end"] = time.time() - redeployed
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert len(instance.get_runs()) == 1  # the run itself, not a retry of a failed one
        starts = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
        assert len(starts) == 1 and starts[0].timestamp > redeployed  # started once, by the fixed server
        assert all(message.startswith(RETRYING) for message, _ in dequeue_errors(instance, run.run_id))
    print("timings:", {name: round(seconds, 1) for name, seconds in timings.items()})
    assert frame_counts("door") == [{"frames": PHOTOS, "distinct_frames": PHOTOS}]
