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

import os
import time
from contextlib import ExitStack

import dagster as dg
import pytest
import yaml
from harness import (
    BIN,
    embedded_home,
    finished,
    frame_counts,
    free_port,
    in_own_session,
    launch,
    make_photos,
    wait_for,
)

LOCATION = "mining_assets.definitions"  # the location name `dagster job launch -w workspace.yaml` gives the run
PHOTOS = 6
BROKEN = {"MINING_FILTER_BATCH_SIZE": "sixteen"}  # definitions.py builds TextImageFilter(batch_size=...) on import
IMPORT_ERROR = "unable to parse string as an integer"  # pydantic's words for it, in the server's load error
RETRYING = "Run dequeue failed to reach the user code server, re-submitting the run into the queue"


def code_server(port: int, env: dict):
    """`dagster code-server start` for the project's module on ``port``: it stays up when the import fails and
    serves the error to whoever asks it for the location."""
    return in_own_session([str(BIN / "dagster"), "code-server", "start", "-m", LOCATION, "-p", str(port)], env)


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


@pytest.mark.slow
def test_a_run_queued_while_its_code_location_fails_to_load_waits_and_runs_once_it_loads(tmp_path):
    embedded_home("door")
    photos = make_photos(tmp_path / "photos", PHOTOS)
    port = free_port()
    workspace = tmp_path / "workspace.yaml"
    entry = {"grpc_server": {"host": "localhost", "port": port, "location_name": LOCATION}}
    workspace.write_text(yaml.safe_dump({"load_from": [entry]}))
    timings = {}
    with ExitStack() as stack, ExitStack() as broken:
        instance = stack.enter_context(dg.DagsterInstance.get())
        broken.enter_context(code_server(port, {**os.environ, **BROKEN}))
        launch("door", {"ops": {"media_registry": {"config": {"local_dir": str(photos)}}}})
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.QUEUED
        stack.enter_context(in_own_session([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)]))
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
