"""Benchmark a backfill of the video path, one run at a time against several at once, and Dagster's overhead.

Backfill: ``--keywords`` keywords x ``--videos`` videos of ``--mb`` MB each, served by a loopback HTTP server that
throttles every download to ``--rate-mb`` MB/s, fetched and sampled at 1 frame a second through ``frames``
(``media_registry`` -> ``media`` -> ``video_frames`` -> ``frames``, the source job's in-process executor). The
runs go one at a time, then ``--parallel`` at once (in as many worker processes, started and warmed up before the
clock starts, as a run worker has its imports done before its first step), each time on a new lake. Printed: wall
times and the speed-up (goal: 3x or more with 4 runs), and the share of the steps' time spent inside warehouse
transactions (goal: under 5%). The physical limit is the download: with every video throttled, a run cannot be
faster than its largest file at the throttled rate.

Overhead: a one-keyword upload run (``upload_pipeline`` through ``execute_in_process``) of 5 and of 100 photos:
the time from the run's creation to its success against the sum of its steps' own time (goal: under 20% at 100),
on an existing lake that the run attaches as a new run process does (loading DuckDB's extensions, about 0.3 s, is
most of the overhead). Process start and the run queue (a launched run) come on top of this and are not measured
here.

Run from the repository root:

    .venv/bin/python bench/backfill.py [--keywords 8] [--videos 2] [--mb 8] [--rate-mb 2] [--parallel 4]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import multiprocessing
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

SPEEDUP_GOAL = 3.0
TRANSACTION_GOAL = 0.05
OVERHEAD_GOAL = 0.20
QUIET = {"console": {"config": {"log_level": "WARNING"}}}  # the runs' event log stays whole; only the console is quiet


class ThrottledHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files at ``rate`` bytes/s per download (a video site's pace, not the loopback's)."""

    rate = 2 * 1024 * 1024

    def log_message(self, *args) -> None:
        pass

    def copyfile(self, source, outputfile) -> None:
        chunk = 64 * 1024
        started = time.monotonic()
        sent = 0
        while block := source.read(chunk):
            try:
                outputfile.write(block)
            except (BrokenPipeError, ConnectionResetError):  # the client had read what it wanted (a probe)
                return
            sent += len(block)
            ahead = sent / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


def padded_videos(folder: Path, names: list[str], megabytes: float) -> Path:
    """One 10 s synthetic video written under every name, each grown to ``megabytes`` with a trailing MP4 ``free``
    box (legal anywhere) that holds the file's name: every file has bytes of its own, so each is a media item of its
    own, downloaded, stored and sampled once."""
    from mining_assets.video.synthetic import make_video

    folder.mkdir(parents=True, exist_ok=True)
    base = make_video(folder / "base.mp4", frames=300, fps=30, size=(320, 240)).read_bytes()
    size = max(int(megabytes * 1024 * 1024) - len(base), 8 + 64)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        body = name.encode().ljust(64, b" ") + bytes(size - 8 - 64)
        path.write_bytes(base + struct.pack(">I4s", size, b"free") + body)
    (folder / "base.mp4").unlink()
    return folder / names[0]


def serve(folder: Path, rate: float) -> tuple[str, http.server.ThreadingHTTPServer]:
    handler = type("Handler", (ThrottledHandler,), {"rate": rate})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def step_seconds(instance, run_id: str) -> float:
    """The sum of the run's steps' own time (step start to step success), from its event log."""
    started: dict[str, float] = {}
    total = 0.0
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type_value == "STEP_START":
            started[event.step_key] = entry.timestamp
        elif event.event_type_value == "STEP_SUCCESS" and event.step_key in started:
            total += entry.timestamp - started.pop(event.step_key)
    return total


_INSIDE = [0.0]  # seconds inside warehouse blocks in this process, since the last reset


def time_warehouse_blocks(warehouse_class) -> list[float]:
    """Count the time of every outermost retried block (a lease's own blocks are inside it, and lease waits are
    counted) into ``_INSIDE``; patched once per process."""
    if getattr(warehouse_class.retrying, "timed", False):
        return _INSIDE
    depth = threading.local()
    original = warehouse_class.retrying

    def timed(self, lease=None):
        outer = not getattr(depth, "n", 0)
        depth.n = getattr(depth, "n", 0) + 1
        started = time.perf_counter()
        try:
            yield from original(self, lease)
        finally:
            depth.n -= 1
            if outer:
                _INSIDE[0] += time.perf_counter() - started

    timed.timed = True
    warehouse_class.retrying = timed
    return _INSIDE


def one_run(root: str, key: str, urls: list[str]) -> dict:
    """One keyword's run in this process: its wall time, its steps' time and the time inside warehouse blocks."""
    import dagster as dg

    from mining_assets.frames import frames
    from mining_assets.sources.media import media
    from mining_assets.sources.media_registry import media_registry
    from mining_assets.video.frames import video_frames
    from resources import warehouse as warehouse_module
    from resources.blob_store import LocalBlobStore
    from resources.stock_photos import PexelsSource, PixabayPhotoSource, UnsplashSource
    from resources.uploads import UploadBucket
    from resources.youtube import YouTubeResource

    inside = time_warehouse_blocks(warehouse_module.Warehouse)
    inside[0] = 0.0
    lake = lake_at(root)
    resources = {"warehouse": lake, "blob_store": LocalBlobStore(root=f"{root}/blobs"), "youtube": YouTubeResource(),
                 "uploads": UploadBucket.unconfigured(), "pexels": PexelsSource(), "unsplash": UnsplashSource(),
                 "pixabay": PixabayPhotoSource()}  # fmt: skip
    config = {"media_registry": {"config": {"youtube_search": False, "uploads": False, "stock_sources": [],
                                            "urls": urls}},
              "video_frames": {"config": {"strategy": "time", "every_s": 1.0}}}  # fmt: skip
    lake.execute("SELECT 1")  # attached, as the warehouse resource does before the run's first step
    inside[0] = 0.0
    started = time.perf_counter()
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("keyword", [key])
        result = dg.materialize([media_registry, media, video_frames, frames], partition_key=key,
                                resources=resources, instance=instance,
                                run_config={"ops": config, "loggers": QUIET})  # fmt: skip
        steps = step_seconds(instance, result.run_id)
    wall, spent = time.perf_counter() - started, inside[0]
    rows = lake.execute("SELECT count(*) FROM frames WHERE partition_key = ?", [key])[0][0]
    return {"key": key, "wall": wall, "steps": steps, "warehouse": spent, "frames": rows,
            "ok": result.success}  # fmt: skip


def backfill(root: Path, base: str, keywords: int, videos: int, parallel: int) -> tuple[float, list[dict]]:
    """All keywords' runs, ``parallel`` at a time in as many warm worker processes; wall time and each run's
    figures."""
    if root.exists():
        shutil.rmtree(root)
    (root / "lake").mkdir(parents=True)
    jobs = [(str(root), f"kw-{k}", [f"{base}/kw{k}/v{v}.mp4" for v in range(videos)]) for k in range(keywords)]
    context = multiprocessing.get_context("spawn")
    # the lake's schema once, before the runs (every later attach finds it)
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        pool.submit(prepare_lake, str(root)).result()
    with ProcessPoolExecutor(parallel, mp_context=context, initializer=warm_up, initargs=(str(root), base)) as pool:
        list(pool.map(wait_a_moment, range(parallel)))  # every worker started and warmed up
        started = time.perf_counter()
        runs = list(pool.map(one_run, *zip(*jobs, strict=True)))
    return time.perf_counter() - started, runs


def warm_up(root: str, base: str) -> None:
    """A worker's first run, on a lake of its own and a small video: what a run worker has imported and cached
    once it has run once (Dagster's first run in a process, yt-dlp's extractors, PyAV), out of the figures."""
    scratch = Path(root).parent / f"warm-up-{os.getpid()}"
    (scratch / "lake").mkdir(parents=True)
    one_run(str(scratch), "warm-up", [f"{base}/warm-up.mp4"])
    prepare_lake(root)  # and the backfill's lake attached, as a run's resources are before its first step


def wait_a_moment(_: int) -> None:
    time.sleep(0.5)  # long enough that each worker, once warm, takes one of these


def lake_at(root: str):
    """The embedded lake of a backfill (or a worker's warm-up) under ``root``."""
    from resources.warehouse import Warehouse

    return Warehouse(catalog=f"sqlite:{root}/lake/catalog.sqlite", data_path=f"{root}/lake/data/")


def prepare_lake(root: str) -> None:
    lake_at(root).execute("SELECT 1")


def upload_overhead(root: Path, photos: int) -> dict:
    """A one-keyword upload run of ``photos`` photos: run creation to success against its steps' time."""
    import dagster as dg
    import numpy as np
    from PIL import Image

    folder = root / f"photos-{photos}"
    folder.mkdir(parents=True)
    generator = np.random.default_rng(photos)
    for index in range(photos):
        pixels = generator.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"p{index:03d}.jpg", quality=85)
    os.environ["MINING_DATA_DIR"] = str(root / f"data-{photos}")
    import importlib

    import mining_assets.definitions as definitions

    defs = importlib.reload(definitions).defs
    job = defs.resolve_job_def("upload_pipeline")
    from resources.warehouse import close_all, warehouse_from_env

    # the lake exists, as it does before any run but the first; the run attaches it, as a new run process does
    warehouse_from_env().execute("SELECT 1")
    close_all()
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("keyword", ["uploads"])
        result = job.execute_in_process(
            instance=instance, partition_key="uploads",
            run_config={"ops": {"media_registry": {"config": {"local_dir": str(folder)}}}, "loggers": QUIET},
        )  # fmt: skip
        record = instance.get_run_record_by_id(result.run_id)
        total = record.end_time - record.create_timestamp.timestamp()
        steps = step_seconds(instance, result.run_id)
    return {"photos": photos, "total": total, "steps": steps, "overhead": (total - steps) / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keywords", type=int, default=8)
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--mb", type=float, default=8.0)
    parser.add_argument("--rate-mb", type=float, default=2.0)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--photos", default="5,100")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    try:
        served = work / "served"
        names = [f"kw{k}/v{v}.mp4" for k in range(args.keywords) for v in range(args.videos)]
        source = padded_videos(served, names, args.mb)
        padded_videos(served, ["warm-up.mp4"], 0.1)
        base, server = serve(served, args.rate_mb * 1024 * 1024)
        print(f"{os.cpu_count()} cores; {args.keywords} keywords x {args.videos} videos of "
              f"{source.stat().st_size / 2**20:.1f} MB at {args.rate_mb} MB/s each, 1 frame a second")  # fmt: skip
        download_floor = source.stat().st_size / (args.rate_mb * 1024 * 1024)
        results = {}
        for parallel in (1, args.parallel):
            wall, runs = backfill(work / f"runs-{parallel}", base, args.keywords, args.videos, parallel)
            assert all(run["ok"] for run in runs), runs
            steps = sum(run["steps"] for run in runs)
            inside = sum(run["warehouse"] for run in runs)
            results[parallel] = wall
            frames = sum(run["frames"] for run in runs)
            print(f"  {parallel} run(s) at a time: {wall:6.1f} s wall, {frames} frames; per run "
                  f"{min(r['wall'] for r in runs):.1f}-{max(r['wall'] for r in runs):.1f} s (floor: one video's "
                  f"download, {download_floor:.1f} s); inside warehouse transactions {inside:.1f} s of {steps:.1f} s "
                  f"of steps = {inside / steps:.1%} (goal < {TRANSACTION_GOAL:.0%})")  # fmt: skip
        speedup = results[1] / results[args.parallel]
        print(f"  speed-up {args.parallel} at a time / 1: {speedup:.2f}x (goal >= {SPEEDUP_GOAL:.0f}x)")
        server.shutdown()
        for photos in (int(n) for n in args.photos.split(",")):
            figures = upload_overhead(work, photos)
            print(f"  upload run of {photos} photos: {figures['total']:.2f} s from creation to success, steps "
                  f"{figures['steps']:.2f} s: overhead {figures['overhead']:.1%}"
                  + (f" (goal < {OVERHEAD_GOAL:.0%})" if photos >= 100 else ""))  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
