"""The Dagster side of the tests: materialize assets for one keyword partition, read their metadata and checks,
and query the warehouse they wrote; for the tests under the daemon, the committed instance in the test's
DAGSTER_HOME, launched runs, processes in sessions of their own, and waiting for what they do."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from resources.blob_store import LocalBlobStore
from resources.faults import StoreUnavailable

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EMBEDDED_INSTANCE = ROOT / "dagster_home" / "dagster.yaml"


def materialize_partition(resources: dict, instance, partition_key: str, assets: list, **config):
    """Materialize ``assets`` for a partition (added if new) with ``config`` per op; returns (result, checks)."""
    instance.add_dynamic_partitions("keyword", [partition_key])
    run_config = {"ops": {name: {"config": value} for name, value in config.items()}}
    result = dg.materialize(assets, partition_key=partition_key, resources=resources, instance=instance,
                            run_config=run_config, raise_on_error=True)  # fmt: skip
    checks: dict[str, bool] = {}
    for evaluation in result.get_asset_check_evaluations():  # a name several assets share passes only if all do
        checks[evaluation.check_name] = checks.get(evaluation.check_name, True) and evaluation.passed
    return result, checks


def meta(result, asset: str) -> dict:
    """The metadata values of an asset's (first) materialization in a run."""
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def query(resources: dict, sql: str, *params):
    """Rows of a query against the warehouse the resources write."""
    return resources["warehouse"].execute(sql, params)


def query_dicts(resources: dict, sql: str, *params) -> list[dict]:
    """Rows of a query against the warehouse the resources write, as dicts by column name."""
    return resources["warehouse"].query_dicts(sql, params)


def checks_by_asset(result) -> dict[tuple[str, str], bool]:
    """A run's check results by (asset, check): several assets have a check named `unique_key`."""
    return {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def embedded_home(*partitions: str) -> Path:
    """The committed embedded instance in the test's DAGSTER_HOME (conftest gives each test its own), with these
    keyword partitions."""
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(EMBEDDED_INSTANCE, home / "dagster.yaml")
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("keyword", list(partitions))
    return home


def make_photos(folder: Path, count: int) -> Path:
    """``count`` distinct noise photos (320x240 JPEG) in a new folder."""
    from PIL import Image

    folder.mkdir()
    for number in range(count):
        Image.effect_noise((320, 240), 20 + number % 60).convert("RGB").save(folder / f"p{number:03}.jpg", quality=90)
    return folder


def launch(partition_key: str, config: dict, job: str = "upload_pipeline") -> None:
    """`dagster job launch` of a job for one partition: the run goes to the queue, the daemon starts it."""
    tags = json.dumps({"dagster/partition": partition_key})
    argv = [str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", job,
            "--tags", tags, "--config-json", json.dumps(config)]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


@contextmanager
def in_own_session(argv: list[str], env: dict | None = None):
    """A process (the daemon, a code server) in its own session, stopped by signalling its process group, with the
    children it started."""
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def wait_for(what: str, probe, timeout: float, step: float = 0.2):
    """``probe()``'s first truthy answer, asked every ``step`` seconds; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(step)


def finished(instance, run_id: str):
    """The run once it has ended, else None."""
    run = instance.get_run_by_id(run_id)
    return run if run.is_finished else None


def frame_counts(partition_key: str) -> list[dict]:
    """The partition's frames and distinct frame ids, in the lake the environment describes."""
    from resources.warehouse import warehouse_from_env

    return warehouse_from_env().query_dicts(
        "SELECT count(*) AS frames, count(DISTINCT frame_id) AS distinct_frames FROM frames WHERE partition_key = ?",
        [partition_key],
    )


class FailingStore(LocalBlobStore):
    """A local blob store that fails like a remote one in an outage while ``outage_file`` exists.

    The file says which calls fail (``all``, or ``reads``: reads and look-ups, while writes succeed, like an S3
    GET that answers 503) and, on a second line, how many calls fail before the store recovers (none: until the
    file is removed)."""

    outage_file: str

    def _outage(self, call: str) -> None:
        path = Path(self.outage_file)
        with _OUTAGE_LOCK:
            if not path.is_file():
                return
            kind, _, left = path.read_text().partition("\n")
            if kind == "reads" and call == "write":
                return
            if left.strip():
                if int(left) <= 0:
                    return
                path.write_text(f"{kind}\n{int(left) - 1}")
        raise StoreUnavailable(f"blob store: {call} failed: 503 SlowDown (an outage of the test's store)")

    def put_bytes(self, key, data):
        self._outage("write")
        return super().put_bytes(key, data)

    def put_file(self, key, path):
        self._outage("write")
        return super().put_file(key, path)

    def get_bytes(self, key):
        self._outage("read")
        return super().get_bytes(key)

    def exists(self, key):
        self._outage("read")
        return super().exists(key)

    def list_entries(self, prefix):
        self._outage("read")
        return super().list_entries(prefix)

    def delete(self, keys):
        self._outage("write")
        return super().delete(keys)

    def local_path(self, key):
        self._outage("read")
        return super().local_path(key)


_OUTAGE_LOCK = threading.Lock()


def store_files(root: Path) -> dict[str, str]:
    """Every file under a store root: the sha256 of its bytes by relative path."""
    import hashlib

    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file()}  # fmt: skip


def warehouse_rows(warehouse) -> dict[str, list]:
    """Every row of every table the stages own, sorted, by table."""
    from mining_assets.warehouse import tables

    return {name: warehouse.execute(f"SELECT * FROM {name} ORDER BY ALL") for name in sorted(tables())}


@contextmanager
def nothing_written_beside(folder: Path):
    """Asserts that the block writes nothing in the folders beside ``folder`` (a test's own tmp_path): the parent
    is compared before and after, so a path that escaped the test's folder is seen wherever it landed."""

    def beside() -> dict[str, tuple[int, int]]:
        found = {}
        for path in folder.parent.rglob("*"):
            if path.is_file() and not path.is_relative_to(folder):
                found[path.relative_to(folder.parent).as_posix()] = (path.stat().st_size, path.stat().st_mtime_ns)
        return found

    before = beside()
    yield
    after = beside()
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"written outside the test's folder: {changed[:10]}"
