"""Warehouse write latency with 4 writer processes, and `mining registry status` meanwhile, on both catalogs.

Each writer plays one keyword's run at the platform's real rate: a transaction per stage and partition (a few
hundred rows, the stage's partition replaced under its lease), with a pause between stages standing in for the
stage's own work. A fifth process runs the queries of `mining registry status` over and over. Printed per
catalog: write latency p50/p95 with 4 writers against the same transactions by one writer alone (the limit of
that catalog and storage), and against a plain local DuckDB file (the old single-file warehouse, which could
take only one writer process at a time); status latency p50/p95 and errors.

    python bench/warehouse.py [--stages 12] [--rows 300] [--pause 0.2] [--catalogs embedded,production]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGE_TABLES = ["frames", "filtered_frames", "unique_frames", "quality_scores"]
STATUS_SQL = [
    "SELECT partition_key, status, count(*) FROM media_status GROUP BY ALL",
    "SELECT partition_key, count(*) FROM frames GROUP BY ALL",
]


def rows_for(table: str, key: str, n: int, tag: int):
    import pandas as pd

    frame_ids = [f"{key}-{tag}-{i}" for i in range(n)]
    base = {"partition_key": key, "frame_id": frame_ids}
    if table == "frames":
        return pd.DataFrame({**base, "keyword": key, "media_id": "m", "source": "local", "media_type": "photo",
                             "width": 64, "height": 48, "blob_key": "b", "uri": "u", "sha256": "s",
                             "source_url": "file:///m"})  # fmt: skip
    base["frame_sha256"] = "s"  # the outputs are keyed by the frame's content too
    if table == "filtered_frames":
        return pd.DataFrame({**base, "best_prompt": "p", "best_score": 0.5, "passed": True, "threshold": 0.2,
                             "model": "m"})  # fmt: skip
    if table == "unique_frames":
        return pd.DataFrame({**base, "kept": True, "representative_id": frame_ids, "similarity": 1.0,
                             "threshold": 0.9})  # fmt: skip
    return pd.DataFrame({**base, "media_id": "m", "score": 70.0, "rating": "good", "accepted": True, "threshold": 70.0,
                         "pose_points": 40.0, "hand_points": 10.0, "lighting_points": 10.0, "sharpness_points": 5.0,
                         "resolution_points": 5.0, "hands_found": 1, "brightness": 120.0, "contrast": 40.0,
                         "sharpness": 100.0, "megapixels": 1.0, "image_width": 64, "image_height": 48,
                         "pose_found": True, "models": "m"})  # fmt: skip


def writer(settings: dict | str, key: str, stages: int, rows: int, pause: float, queue) -> None:
    """One keyword's run: ``stages`` leased partition replaces; puts the latency of each on the queue."""
    from mining_assets.warehouse import replace_partition_rows

    latencies = []
    try:
        if isinstance(settings, str):  # a plain DuckDB file: open, write, close (one writer process at a time)
            import duckdb

            for stage in range(stages):
                table = STAGE_TABLES[stage % len(STAGE_TABLES)]
                frame = rows_for(table, key, rows, stage)
                started = time.perf_counter()
                while True:
                    try:
                        with duckdb.connect(settings) as conn:
                            conn.execute("BEGIN TRANSACTION")
                            replace_partition_rows(conn, table, key, frame)
                            conn.execute("COMMIT")
                        break
                    except duckdb.IOException:  # the file is locked by another process: wait, as the pool did
                        time.sleep(0.01)
                latencies.append(time.perf_counter() - started)
                time.sleep(pause)
        else:
            from resources.warehouse import Warehouse

            warehouse = Warehouse(**settings)
            warehouse.execute("SELECT 1")  # attach before timing, as a step does in setup
            for stage in range(stages):
                table = STAGE_TABLES[stage % len(STAGE_TABLES)]
                frame = rows_for(table, key, rows, stage)
                started = time.perf_counter()
                for attempt in warehouse.retrying(lease=key):
                    with attempt as conn:
                        replace_partition_rows(conn, table, key, frame)
                latencies.append(time.perf_counter() - started)
                time.sleep(pause)
        queue.put(("ok", latencies))
    except Exception as error:
        queue.put(("error", f"{type(error).__name__}: {error}"))


def status_reader(settings: dict, stop, queue) -> None:
    """`mining registry status`'s queries, each a retried read, until told to stop."""
    from resources.warehouse import Warehouse

    warehouse = Warehouse(**settings)
    warehouse.execute("SELECT 1")
    latencies, errors = [], []
    while not stop.is_set():
        started = time.perf_counter()
        try:
            for attempt in warehouse.retrying():
                with attempt as conn:
                    for sql in STATUS_SQL:
                        conn.execute(sql).fetchall()
            latencies.append(time.perf_counter() - started)
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")
        time.sleep(0.05)
    queue.put((latencies, errors))


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def create_plain_tables(path: str) -> None:
    """The stage tables in a plain DuckDB file, made before any writer is timed."""
    import duckdb

    from mining_assets.warehouse import table_ddl

    with duckdb.connect(path) as conn:
        for name in STAGE_TABLES:
            conn.execute(table_ddl(name))


def run_writers(settings, processes: int, stages: int, rows: int, pause: float, with_status: bool):
    if isinstance(settings, str):
        create_plain_tables(settings)
    context = multiprocessing.get_context("spawn")
    queue, status_queue, stop = context.Queue(), context.Queue(), context.Event()
    reader = None
    if with_status:
        reader = context.Process(target=status_reader, args=(settings, stop, status_queue))
        reader.start()
        time.sleep(1.0)
    started = time.perf_counter()
    workers = [
        context.Process(target=writer, args=(settings, f"kw-{i}-{uuid.uuid4().hex[:6]}", stages, rows, pause, queue))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes = [queue.get(timeout=900) for _ in workers]
    wall = time.perf_counter() - started
    for worker in workers:
        worker.join()
    status = ([], [])
    if reader is not None:
        stop.set()
        status = status_queue.get(timeout=120)
        reader.join()
    failures = [detail for kind, detail in outcomes if kind == "error"]
    latencies = [value for kind, detail in outcomes if kind == "ok" for value in detail]
    return latencies, failures, status, wall


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_production(folder: Path) -> tuple[dict, list]:
    """PostgreSQL (Debian's package, initdb into ``folder``) and a moto S3 server on loopback."""
    import glob

    import boto3

    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries:
        raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)")
    bin_dir = os.path.dirname(binaries[-1])
    pg_port, s3_port = free_port(), free_port()
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(folder, "postgres")

    def run(command: str) -> None:
        subprocess.run(["su", "postgres", "-c", command] if as_root else ["sh", "-c", command], check=True,
                       capture_output=True)  # fmt: skip

    run(f"{bin_dir}/initdb -D {folder}/data -A trust -U postgres")
    run(f"{bin_dir}/pg_ctl -D {folder}/data -o '-p {pg_port} -k {folder} -c listen_addresses=127.0.0.1' "
        f"-l {folder}/log -w start")  # fmt: skip
    run(f"{bin_dir}/psql -h 127.0.0.1 -p {pg_port} -U postgres -c 'CREATE DATABASE lake'")
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    endpoint = f"http://127.0.0.1:{s3_port}"
    for _ in range(100):
        try:
            boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench",
                         region_name="us-east-1").create_bucket(Bucket="lake")  # fmt: skip
            break
        except Exception:
            time.sleep(0.1)
    settings = {
        "catalog": f"postgres:dbname=lake host=127.0.0.1 port={pg_port} user=postgres",
        "data_path": "s3://lake/data/",
        "s3_endpoint_url": endpoint,
        "s3_access_key_id": "bench",
        "s3_secret_access_key": "bench",
    }

    def stop() -> None:
        moto.terminate()
        run(f"{bin_dir}/pg_ctl -D {folder}/data -m immediate stop")

    return settings, [stop]


def report(name: str, alone: list[float], together: list[float], failures, status, wall: float, plain) -> None:
    p50, p95 = percentile(together, 0.5), percentile(together, 0.95)
    alone_p50 = percentile(alone, 0.5)
    print(f"\n{name}")
    print(f"  write, 1 writer alone     p50 {alone_p50 * 1000:7.1f} ms  p95 {percentile(alone, 0.95) * 1000:7.1f} ms")
    print(f"  write, 4 writers at once  p50 {p50 * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  "
          f"({len(together)} transactions, {len(failures)} failed, {wall:.1f} s)")  # fmt: skip
    print(f"  ratio p50 (4 writers / alone): {p50 / alone_p50:.2f}x")
    if plain:
        plain_p50 = percentile(plain, 0.5)
        print(f"  plain DuckDB file, 4 writer processes (one at a time by its lock): p50 {plain_p50 * 1000:.1f} ms, "
              f"p95 {percentile(plain, 0.95) * 1000:.1f} ms; lake p50 / file p50: {p50 / plain_p50:.2f}x")  # fmt: skip
    latencies, errors = status
    if latencies:
        print(f"  registry status meanwhile p50 {percentile(latencies, 0.5) * 1000:7.1f} ms  "
              f"p95 {percentile(latencies, 0.95) * 1000:7.1f} ms  max {max(latencies) * 1000:.1f} ms  "
              f"({len(latencies)} reads, {len(errors)} errors; goal p95 < 1000 ms, no error)")  # fmt: skip
    for failure in (failures + errors)[:5]:
        print(f"  ! {failure[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=int, default=12)
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds of a stage's own work between writes")
    parser.add_argument("--catalogs", default="embedded,production")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; 4 writers x {args.stages} transactions of {args.rows} rows, {args.pause} s apart")
    root = Path(tempfile.mkdtemp(prefix="bench-warehouse-"))
    stops = []
    try:
        for name in args.catalogs.split(","):
            if name == "embedded":
                settings = {"catalog": f"sqlite:{root}/embedded/catalog.sqlite", "data_path": f"{root}/embedded/data/"}
                label = "embedded: SQLite catalog, local Parquet files"
            else:
                folder = Path(tempfile.mkdtemp(prefix="bench-warehouse-pg-"))  # its own: the server's user owns it
                try:
                    settings, more = start_production(folder)
                except (RuntimeError, subprocess.CalledProcessError) as error:
                    print(f"\nproduction: skipped ({error})")
                    continue
                stops += more
                label = "production: PostgreSQL catalog, Parquet files in S3 (moto server on loopback)"
            alone, _, _, _ = run_writers(settings, 1, args.stages, args.rows, args.pause, with_status=False)
            together, failures, status, wall = run_writers(settings, 4, args.stages, args.rows, args.pause, True)
            plain = None
            if name == "embedded":
                plain, _, _, _ = run_writers(str(root / "plain.duckdb"), 4, args.stages, args.rows, args.pause, False)
            report(label, alone, together, failures, status, wall, plain)
    finally:
        for stop in stops:
            stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
