"""Production, proven: a backfill of four keyword partitions of upload_pipeline under the daemon on Dagster's Postgres
instance, the lake's catalog in a second PostgreSQL database, the lake's data and the blobs in S3 (moto), each run's
steps in processes of their own (the multiprocess executor) and four runs at once. Its rows equal those of the same
four partitions on the embedded default; a second backfill (of three) adds nothing; the lake's database gone mid-way
fails the writing runs naming that database, and their re-execution loses nothing and doubles nothing.

A backfill here is four ``dagster job launch`` submissions to the run queue at once, one per partition: each keyword
reads its own folder (run config), which ``dagster job backfill`` cannot give per partition."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml
from PIL import Image, ImageOps

from mining_assets.video.synthetic import make_video

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEYWORDS = ["door", "window", "stairs", "bridge"]
BACKFILL_TAG = "test/backfill"
# the rows that must match between the two deployments: named columns, no URIs, paths or timestamps
COMPARED = {
    "registry": "SELECT partition_key, source, title FROM registry",
    "keyword_media": "SELECT partition_key, media_id FROM keyword_media",
    "media": "SELECT media_id, media_type, sha256, size_bytes, width, height FROM media",
    "frames": "SELECT partition_key, frame_id, media_id, media_type, frame_index, width, height, sha256 FROM frames",
    "errors": "SELECT partition_key, reason FROM media_errors UNION ALL "
    "SELECT partition_key, reason FROM media_registry_errors",
}
# each table's key: a re-executed or repeated partition must leave exactly one row per key
KEYS = {
    "registry": "partition_key, item",
    "keyword_media": "partition_key, item",
    "media": "media_id",
    "frames": "partition_key, frame_id",
}


def make_uploads(root: Path) -> Path:
    """One folder per keyword: a synthetic video of its own length, a real photo every keyword shares (one media
    item written by four partitions at once) and a mirrored crop of it that only this keyword has."""
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        photo = Image.open(handle).convert("RGB")
    for number, keyword in enumerate(KEYWORDS):
        folder = root / keyword
        folder.mkdir(parents=True)
        make_video(folder / "clip.mp4", frames=20 + 5 * number, fps=10, size=(160, 120), gop=10)
        photo.save(folder / "grace_hopper.jpg", quality=90)
        ImageOps.mirror(photo).crop((number, 0, 400, 400)).save(folder / "grace_mirrored.jpg", quality=90)
    return root


def launch_backfill(uploads: Path, label: str, keywords=KEYWORDS, multiprocess: bool = False) -> None:
    """Submit one run of upload_pipeline per keyword to the queue, all at once (they are queued, not run); with
    ``multiprocess``, each run's steps in processes of their own (the job's executor, on request)."""
    processes = []
    for keyword in keywords:
        tags = json.dumps({"dagster/partition": keyword, BACKFILL_TAG: label})
        config = {"ops": {"media_registry": {"config": {"local_dir": str(uploads / keyword)}}}}
        if multiprocess:
            config["execution"] = {"config": {"multiprocess": True}}
        argv = [str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", "upload_pipeline",
                "--tags", tags, "--config-json", json.dumps(config)]  # fmt: skip
        processes.append(subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for process in processes:
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 0, output


def start_daemon(home: Path) -> subprocess.Popen:
    log = open(home / "daemon.log", "w")  # noqa: SIM115 - the daemon writes it for as long as it runs
    return subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def stop_daemon(daemon: subprocess.Popen) -> None:
    os.killpg(daemon.pid, signal.SIGTERM)
    daemon.wait(timeout=60)


def backfill_runs(instance: dg.DagsterInstance, label: str) -> list:
    return instance.get_run_records(filters=dg.RunsFilter(tags={BACKFILL_TAG: label}))


def wait_for(instance: dg.DagsterInstance, label: str, count: int, timeout_s: float = 300) -> list:
    """The run records of a backfill once all ``count`` runs have finished."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = backfill_runs(instance, label)
        if len(records) == count and all(record.dagster_run.is_finished for record in records):
            return records
        assert time.monotonic() < deadline, [
            (r.dagster_run.tags["dagster/partition"], r.dagster_run.status) for r in records
        ]
        time.sleep(1)


def most_at_once(instance: dg.DagsterInstance, records, queue_view: bool = True) -> int:
    """The largest number of runs in progress at one moment: from the daemon's launch of a run (``RUN_STARTING``,
    what the queue counts against max_concurrent_runs), or with ``queue_view=False`` from the worker's start of the
    steps, to the run's end."""
    moments = []
    for record in records:
        begun = record.start_time
        if queue_view:
            starting = instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_STARTING)
            begun = min([entry.timestamp for entry in starting] + [begun])
        moments += [(begun, 1), (record.end_time, -1)]
    running = most = 0
    for _, change in sorted(moments):  # an end sorts before a start at the same instant
        running += change
        most = max(most, running)
    return most


def failed_checks(instance: dg.DagsterInstance, records) -> list:
    """The asset check evaluations (unique_key and the others) that did not pass, over the given runs."""
    failed = []
    for record in records:
        for entry in instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = entry.dagster_event.event_specific_data
            if not evaluation.passed:
                failed.append((record.dagster_run.tags["dagster/partition"], evaluation.check_name))
    return failed


def failure_messages(instance: dg.DagsterInstance, run_id: str) -> str:
    """The error texts of a run's failed steps and of the run's failure, together."""
    texts = []
    for kind in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE):
        for entry in instance.all_logs(run_id, of_type=kind):
            data = entry.dagster_event.event_specific_data
            error = getattr(data, "error", None)
            texts.append(entry.message or "")
            while error is not None:
                texts.append(error.message)
                error = error.cause
    return "\n".join(texts)


def lake_rows() -> dict:
    """The compared rows of every table of the lake the environment describes, sorted."""
    from resources.warehouse import warehouse_from_env

    warehouse = warehouse_from_env()
    rows = {}
    for table, sql in COMPARED.items():
        found = warehouse.query_dicts(sql)
        rows[table] = sorted(found, key=lambda row: json.dumps(row, sort_keys=True, default=str))
    return rows


def doubled_keys() -> dict:
    """Per table, how many rows repeat a key (0 everywhere when nothing is doubled)."""
    from resources.warehouse import warehouse_from_env

    warehouse = warehouse_from_env()
    doubled = {}
    for table, key in KEYS.items():
        [row] = warehouse.query_dicts(
            f"SELECT count(*) AS n, (SELECT count(*) FROM (SELECT DISTINCT {key} FROM {table})) AS distinct_n "
            f"FROM {table}"
        )
        doubled[table] = row["n"] - row["distinct_n"]
    return doubled


EMBEDDED_RUNS = """
import json, sys
import dagster as dg
from mining_assets.definitions import defs

job = defs.resolve_job_def("upload_pipeline")
with dg.DagsterInstance.get() as instance:
    for keyword, folder in json.loads(sys.argv[1]).items():
        config = {"ops": {"media_registry": {"config": {"local_dir": folder}}}}
        result = job.execute_in_process(partition_key=keyword, run_config=config, instance=instance)
        assert result.success, keyword
"""


def embedded_backfill(tmp_path: Path, uploads: Path, monkeypatch) -> dict:
    """The four partitions on the embedded default (SQLite instance, SQLite catalog, local files), run one after the
    other in a process of their own (the daemon and the queue are the production side's to prove): the rows."""
    home = tmp_path / "embedded_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MINING_DATA_DIR", str(tmp_path / "embedded_data"))
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("keyword", KEYWORDS)
    folders = json.dumps({keyword: str(uploads / keyword) for keyword in KEYWORDS})
    done = subprocess.run([sys.executable, "-c", EMBEDDED_RUNS, folders], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return lake_rows()


def production_instance(home: Path, server: dict) -> None:
    """deploy/dagster.production.yaml as committed, but for what a test machine lacks or must control."""
    config = yaml.safe_load((ROOT / "deploy" / "dagster.production.yaml").read_text())
    config["storage"]["postgres"]["postgres_db"]["port"] = server["port"]
    # compute logs: a local folder (the production file's S3ComputeLogManager has no endpoint setting for moto)
    config["compute_logs"] = {
        "module": "dagster.core.storage.local_compute_log_manager",
        "class": "LocalComputeLogManager",
        "config": {"base_dir": str(home / "logs")},
    }
    config["concurrency"]["runs"]["max_concurrent_runs"] = max(4, config["concurrency"]["runs"]["max_concurrent_runs"])
    # the test re-executes the runs the outage failed itself, so which runs failed is what it sees
    config["run_retries"] = {"enabled": False}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.slow
def test_production_backfill_matches_embedded_and_survives_a_lake_outage(
    tmp_path, monkeypatch, postgres_server, run_psql, s3_endpoint
):
    uploads = make_uploads(tmp_path / "uploads")
    started = time.monotonic()
    embedded = embedded_backfill(tmp_path, uploads, monkeypatch)
    embedded_s = time.monotonic() - started
    assert len(embedded["frames"]) > 2 * len(KEYWORDS) and not embedded["errors"], embedded

    # production: Dagster's instance in one database, the lake's catalog in another, lake data and blobs in S3
    suffix = uuid.uuid4().hex[:8]
    dagster_db, lake_db, bucket = f"dagster_{suffix}", f"lake_{suffix}", f"mining-{suffix}"
    run_psql(f"CREATE DATABASE {dagster_db}")
    run_psql(f"CREATE DATABASE {lake_db}")
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=bucket)  # fmt: skip
    home = tmp_path / "production_home"
    home.mkdir()
    production_instance(home, postgres_server)
    server = postgres_server
    environment = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": server["host"],
        "DAGSTER_PG_USER": server["user"],
        "DAGSTER_PG_PASSWORD": "unused",  # the test server trusts its superuser on loopback
        "DAGSTER_PG_DB": dagster_db,
        "MINING_DATA_DIR": str(tmp_path / "production_data"),  # nothing may land here: checked below
        "MINING_LAKE_CATALOG": f"postgres:dbname={lake_db} host={server['host']} port={server['port']} "
        f"user={server['user']}",
        "MINING_S3_BUCKET": bucket,
        "MINING_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("keyword", KEYWORDS)

    started = time.monotonic()
    daemon = start_daemon(home)
    try:
        launch_backfill(uploads, "first", multiprocess=True)
        with dg.DagsterInstance.get() as instance:
            first = wait_for(instance, "first", len(KEYWORDS))
            production_s = time.monotonic() - started
            statuses = {r.dagster_run.tags["dagster/partition"]: r.dagster_run.status for r in first}
            assert statuses == dict.fromkeys(KEYWORDS, dg.DagsterRunStatus.SUCCESS), [
                failure_messages(instance, r.dagster_run.run_id)
                for r in first
                if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS
            ]
            for record in first:  # each step in a process of its own
                engine = instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                assert any("using multiprocess executor" in (entry.message or "") for entry in engine)
            at_once = most_at_once(instance, first), most_at_once(instance, first, queue_view=False)
            assert at_once[0] >= 4, at_once
            assert failed_checks(instance, first) == []
            assert lake_rows() == embedded
            assert not (tmp_path / "production_data").exists()  # lake and blobs went to PostgreSQL and S3 only

            # a second backfill of three of the partitions (one wave of runs at once, in-process), during which the
            # lake's database goes away: the runs that finish before add nothing, the others fail; their
            # re-execution below must leave the same rows (nothing added, lost or doubled: checked at the end)
            second = KEYWORDS[:3]
            phase = time.monotonic()
            launch_backfill(uploads, "outage", keywords=second)
            timings = {"second backfill submitted": time.monotonic() - phase}
            deadline = time.monotonic() + 180
            while not any(
                instance.all_logs(r.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
                for r in backfill_runs(instance, "outage")
            ):
                assert time.monotonic() < deadline, "no run of the second backfill got to write"
                time.sleep(0.5)
            timings["first write of the second backfill"] = time.monotonic() - phase
            run_psql(f"ALTER DATABASE {lake_db} ALLOW_CONNECTIONS false")
            run_psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{lake_db}'")
            try:
                outage = wait_for(instance, "outage", len(second))
            finally:
                run_psql(f"ALTER DATABASE {lake_db} ALLOW_CONNECTIONS true")
            timings["every run of the second backfill ended"] = time.monotonic() - phase
            failed = [r for r in outage if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]
            assert failed, [r.dagster_run.status for r in outage]
            messages = {r.dagster_run.tags["dagster/partition"]: failure_messages(instance, r.dagster_run.run_id)
                        for r in failed}  # fmt: skip
            for keyword, message in messages.items():
                assert "warehouse unavailable" in message and f"dbname={lake_db}" in message, (keyword, message)
                assert "MINING_LAKE_CATALOG" in message, (keyword, message)
            print(f"outage: {len(failed)} of {len(outage)} runs failed; first error:\n{next(iter(messages.values()))}")

            # once it is back, the failed partitions are launched again: they complete, nothing lost or doubled
            again = sorted(messages)
            launch_backfill(uploads, "reexecution", keywords=again)
            reexecution = wait_for(instance, "reexecution", len(again))
            timings["their re-execution ended"] = time.monotonic() - phase
            assert {r.dagster_run.status for r in reexecution} == {dg.DagsterRunStatus.SUCCESS}
            assert failed_checks(instance, reexecution) == []
    finally:
        stop_daemon(daemon)
    assert lake_rows() == embedded
    assert doubled_keys() == dict.fromkeys(KEYS, 0)
    print(
        f"embedded backfill {embedded_s:.0f} s, production backfill {production_s:.0f} s, at once {at_once}; "
        f"outage (s since the second backfill began): { {name: round(t) for name, t in timings.items()} }"
    )
