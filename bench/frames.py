"""Benchmark the frame sampler (mining_assets.video.sampling.sample_frames): speed and memory.

Speed: for each strategy (interval every 30 frames, time every 1 s, keyframes) the sampler is timed against a
bare PyAV loop written here that decodes the same way and converts exactly the same frames to RGB. Runs
alternate sampler / bare in back-to-back pairs, are repeated ``--repeats`` times, and the ratio is the median of
the pairs' ratios (goal: ratio >= 0.9). The ratio of the best runs and of CPU time are printed beside it.

Memory: peak RSS of sampling a short and a 10x longer video (strategy ``time``, no cap) in fresh subprocesses,
next to the peak RSS of a subprocess that only does the imports (goal: long / short <= 1.2).

Run from the repository root:

    .venv/bin/python bench/frames.py [--repeats N] [--quick] [--keep DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

SIZE = (640, 480)
FPS = 30
GOP = 300
EVERY_N = 30
EVERY_S = 1.0
STRATEGIES = ("interval", "time", "keyframes")
SPEED_GOAL = 0.9
MIN_SAMPLE_S = 0.5
MEMORY_GOAL = 1.2

# Run in a fresh interpreter: imports only (argv[1] == "-") or sample a video, counting frames and dropping them.
# Prints: kept, ru_maxrss (KiB), VmHWM after the imports (KiB), VmHWM at the end (KiB). VmHWM is the peak RSS of
# this process's own address space; ru_maxrss is not reliable here, because Linux carries the peak of the memory
# image replaced by execve into it, and subprocess spawns with vfork: the child then reports the parent's peak.
_MEMORY_CHILD = """
import resource, sys
def hwm():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
import av, numpy
from mining_assets.video.sampling import sample_frames
after_imports = hwm()
kept = 0
if sys.argv[1] != "-":
    for _frame in sample_frames(sys.argv[1], strategy="time", every_s=float(sys.argv[2]), max_frames=None):
        kept += 1
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, after_imports, hwm())
"""


@dataclass
class SpeedResult:
    strategy: str
    video_frames: int
    kept: int
    indices_match: bool
    sampler_s: list[float]  # seconds per run (mean over `inner` back-to-back runs)
    bare_s: list[float]
    inner: int
    sampler_cpu_s: list[float]  # CPU seconds of this process (all decoder threads) per run
    bare_cpu_s: list[float]
    stage_s: list[float]  # sampler + JPEG encode + store, as the video_frames asset does it

    @property
    def stage_ratio(self) -> float:
        return statistics.median(bare / stage for bare, stage in zip(self.bare_s, self.stage_s, strict=True))

    @property
    def sampler_fps(self) -> float:
        return self.video_frames / min(self.sampler_s)

    @property
    def bare_fps(self) -> float:
        return self.video_frames / min(self.bare_s)

    @property
    def ratio(self) -> float:
        """Median over repeats of bare time / sampler time, each pair run back to back: other load on a shared
        machine drifts over seconds, so the two runs of a pair see nearly the same conditions."""
        return statistics.median(bare / sampler for bare, sampler in zip(self.bare_s, self.sampler_s, strict=True))

    @property
    def best_ratio(self) -> float:
        return self.sampler_fps / self.bare_fps

    @property
    def cpu_ratio(self) -> float:
        """Bare CPU time over sampler CPU time: less sensitive than wall time to other load on a shared machine."""
        return statistics.median(self.bare_cpu_s) / statistics.median(self.sampler_cpu_s)


@dataclass
class MemoryResult:
    label: str
    frames: int
    kept: int
    peak_kib: int  # VmHWM at the end: peak RSS of the child's own address space
    imports_kib: int  # VmHWM right after the imports
    ru_maxrss_kib: int  # what getrusage says (see _MEMORY_CHILD for why it is not used)


def _ensure_repo_on_path() -> None:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def _video(directory: Path, name: str, frames: int, preset: str, reuse: bool) -> Path:
    """Generate (or, with --keep, reuse) a 640x480 30 fps H.264 video with GOP 300."""
    from mining_assets.video.synthetic import make_video

    path = directory / name
    if reuse and path.exists() and path.stat().st_size > 0:
        print(f"  reusing {path} ({frames} frames)", flush=True)
        return path
    started = time.perf_counter()
    make_video(path, frames=frames, fps=FPS, size=SIZE, codec="h264", gop=GOP, preset=preset)
    elapsed = time.perf_counter() - started
    mib = path.stat().st_size / 2**20
    print(f"  generated {path.name}: {frames} frames, {mib:.1f} MiB, preset={preset}, in {elapsed:.1f} s", flush=True)
    return path


def _count_frames(path: Path) -> int:
    """Frames in the video (demuxed packets with data), independent of the decoder settings being timed."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)


def run_sampler(path: Path, strategy: str) -> list[int]:
    """The project's sampler, fully consumed; returns the kept frames' indices."""
    from mining_assets.video.sampling import sample_frames

    frames = list(sample_frames(path, strategy, every_n_frames=EVERY_N, every_s=EVERY_S, max_frames=None))
    return [frame.index for frame in frames]


def run_stage(path: Path, strategy: str) -> list[int]:
    """The whole video_frames work for one video: sample, JPEG-encode and store each kept frame (local store)."""
    from concurrent.futures import ThreadPoolExecutor

    from mining_assets.video.frames import FrameSamplingConfig, extract_video_frames
    from resources.blob_store import LocalBlobStore

    config = FrameSamplingConfig(strategy=strategy, every_n_frames=EVERY_N, every_s=EVERY_S, max_frames_per_video=0)
    video = {"partition_key": "bench", "keyword": "bench", "media_id": "bench-video", "source": "local"}
    with tempfile.TemporaryDirectory(prefix="bench_store_") as root, ThreadPoolExecutor(2) as pool:
        rows, _ = extract_video_frames(path, video, config, LocalBlobStore(root=root), pool)
    return [row["frame_index"] for row in rows]


def run_bare(path: Path, strategy: str) -> list[int]:
    """Bare PyAV: same decoder settings, same selection, RGB conversion of the kept frames only."""
    import av

    kept: list[int] = []
    images = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if strategy == "keyframes":
            stream.codec_context.skip_frame = "NONKEY"
        time_base = float(stream.time_base)
        start_pts = stream.start_time or 0
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate)
        next_second = 0.0
        for position, frame in enumerate(container.decode(stream)):
            if strategy == "interval":
                if position % EVERY_N:
                    continue
                index = position
            elif strategy == "time":
                timestamp = (frame.pts - start_pts) * time_base
                if timestamp + 1e-6 < next_second:
                    continue
                next_second = math.floor(timestamp + 1e-6) + 1.0
                index = position
            else:
                index = round((frame.pts - start_pts) * time_base * fps)
            images.append(frame.to_ndarray(format="rgb24"))
            kept.append(index)
    return kept


def bench_speed(path: Path, repeats: int) -> list[SpeedResult]:
    video_frames = _count_frames(path)
    print(f"  {path.name}: {video_frames} video frames", flush=True)
    results = []
    for strategy in STRATEGIES:
        # warm-up (page cache, imports, decoder init) for both, not timed
        sampler_indices = run_sampler(path, strategy)
        bare_indices = run_bare(path, strategy)
        assert len(sampler_indices) == len(bare_indices), (
            f"{strategy}: sampler kept {len(sampler_indices)} frames, bare loop kept {len(bare_indices)}"
        )
        # a very short run (keyframes: a few decodes) is repeated back to back so one sample lasts >= MIN_SAMPLE_S
        started = time.perf_counter()
        run_bare(path, strategy)
        inner = max(1, math.ceil(MIN_SAMPLE_S / max(time.perf_counter() - started, 1e-6)))
        sampler_times: list[float] = []
        bare_times: list[float] = []
        stage_times: list[float] = []
        cpu_times: dict[str, list[float]] = {"sampler": [], "bare": [], "stage": []}
        for repeat in range(repeats):
            order = (("sampler", run_sampler), ("bare", run_bare), ("stage", run_stage))
            if repeat % 2:
                order = order[::-1]
            for name, runner in order:
                started, cpu_started = time.perf_counter(), time.process_time()
                for _ in range(inner):
                    kept = runner(path, strategy)
                elapsed = (time.perf_counter() - started) / inner
                cpu_times[name].append((time.process_time() - cpu_started) / inner)
                assert len(kept) == len(sampler_indices), f"{strategy}/{name}: kept {len(kept)} frames this time"
                {"sampler": sampler_times, "bare": bare_times, "stage": stage_times}[name].append(elapsed)
        result = SpeedResult(
            strategy=strategy,
            video_frames=video_frames,
            kept=len(sampler_indices),
            indices_match=sampler_indices == bare_indices,
            sampler_s=sampler_times,
            bare_s=bare_times,
            inner=inner,
            sampler_cpu_s=cpu_times["sampler"],
            bare_cpu_s=cpu_times["bare"],
            stage_s=stage_times,
        )
        print(
            f"  {strategy:<9} kept={result.kept} (indices {'match' if result.indices_match else 'DIFFER'})"
            f" sampler s={[round(t, 4) for t in sampler_times]} bare s={[round(t, 4) for t in bare_times]}"
            f"{f' (each the mean of {inner} runs)' if inner > 1 else ''}",
            flush=True,
        )
        results.append(result)
    return results


def _child_peak(video: Path | None) -> tuple[int, int, int, int]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    argv = [sys.executable, "-c", _MEMORY_CHILD, str(video) if video else "-", str(EVERY_S)]
    completed = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, env=env, check=False)
    if completed.returncode:
        raise RuntimeError(f"memory subprocess failed ({completed.returncode}):\n{completed.stderr}")
    kept, ru_maxrss, imports, peak = (int(value) for value in completed.stdout.split()[-4:])
    return kept, ru_maxrss, imports, peak


def bench_memory(short: Path, short_frames: int, long: Path, long_frames: int) -> list[MemoryResult]:
    results = []
    for label, video, frames in (("imports", None, 0), ("short", short, short_frames), ("long", long, long_frames)):
        started = time.perf_counter()
        kept, ru_maxrss, imports, peak = _child_peak(video)
        elapsed = time.perf_counter() - started
        print(
            f"  {label:<8} kept={kept} peak RSS (VmHWM)={peak / 1024:.1f} MiB, after imports {imports / 1024:.1f} MiB"
            f" (ru_maxrss {ru_maxrss / 1024:.1f} MiB) in {elapsed:.1f} s",
            flush=True,
        )
        results.append(
            MemoryResult(
                label=label, frames=frames, kept=kept, peak_kib=peak, imports_kib=imports, ru_maxrss_kib=ru_maxrss
            )
        )
    expected = {"short": short_frames // (FPS * EVERY_S), "long": long_frames // (FPS * EVERY_S)}
    for result in results[1:]:
        assert result.kept == expected[result.label], f"{result.label}: kept {result.kept}, expected {expected}"
    return results


def _minutes(frames: int) -> str:
    seconds = frames / FPS
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def report(speed: list[SpeedResult], memory: list[MemoryResult], repeats: int) -> None:
    print()
    print(f"speed: {speed[0].video_frames} frames {SIZE[0]}x{SIZE[1]} @ {FPS} fps, H.264 veryfast GOP {GOP};")
    print(f"       f/s = video frames covered / wall s of the best of {repeats} runs; ratio = median of the")
    print(f"       {repeats} back-to-back pairs' bare/sampler time; best = ratio of the best runs; cpu = of CPU time;")
    print("       stage+jpeg = the video_frames work (sample, JPEG-encode, store) against the same bare decode")
    header = f"  {'strategy':<10} {'kept':>5}  {'sampler f/s':>11}  {'bare f/s':>9}  {'ratio':>5}  {'best':>6}"
    print(f"{header}  {'cpu':>5}  {'stage+jpeg':>10}  (goal: ratio >= {SPEED_GOAL:.2f})")
    for result in speed:
        verdict = "ok" if result.ratio >= SPEED_GOAL else "BELOW GOAL"
        print(
            f"  {result.strategy:<10} {result.kept:>5}  {result.sampler_fps:>11.1f}  {result.bare_fps:>9.1f}"
            f"  {result.ratio:>5.2f}  {result.best_ratio:>6.2f}  {result.cpu_ratio:>5.2f}"
            f"  {result.stage_ratio:>10.2f}  {verdict}"
        )
    baseline, short, long = memory
    mib = 1024
    ratio = long.peak_kib / short.peak_kib
    short_inc = short.peak_kib - baseline.peak_kib
    long_inc = long.peak_kib - baseline.peak_kib
    inc_ratio = long_inc / short_inc if short_inc > 0 else float("nan")
    print(
        f"memory: peak RSS {_minutes(short.frames)} {short.peak_kib / mib:.1f} MiB,"
        f" {_minutes(long.frames)} {long.peak_kib / mib:.1f} MiB, ratio {ratio:.2f} (goal <= {MEMORY_GOAL:.2f})"
        f" {'ok' if ratio <= MEMORY_GOAL else 'ABOVE GOAL'}"
    )
    print(
        f"        imports only {baseline.peak_kib / mib:.1f} MiB; increment over it {short_inc / mib:.1f} MiB"
        f" vs {long_inc / mib:.1f} MiB, ratio {inc_ratio:.2f} (for information)"
    )
    print(f"        (peak RSS = VmHWM of the fresh subprocess; kept {short.kept} and {long.kept} frames)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each of sampler and bare (default 7)")
    parser.add_argument("--quick", action="store_true", help="10 s speed video, 1 vs 3 minute memory videos")
    parser.add_argument("--keep", type=Path, help="write (and reuse) the videos here instead of a removed temp dir")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    _ensure_repo_on_path()
    import av

    speed_frames = (10 if args.quick else 60) * FPS
    short_frames = 60 * FPS
    long_frames = (3 if args.quick else 10) * 60 * FPS
    print(
        f"python {sys.version.split()[0]}, PyAV {av.__version__}, {os.cpu_count()} CPUs;"
        f" repeats={args.repeats}{' (quick)' if args.quick else ''}",
        flush=True,
    )

    if args.keep:
        directory = args.keep
        directory.mkdir(parents=True, exist_ok=True)
    else:
        directory = Path(tempfile.mkdtemp(prefix="bench_frames_"))
    try:
        print("speed videos:", flush=True)
        speed_video = _video(directory, f"speed_{speed_frames}f_gop{GOP}_veryfast.mp4", speed_frames, "veryfast", True)
        print("speed runs:", flush=True)
        speed = bench_speed(speed_video, args.repeats)

        print("memory videos:", flush=True)
        short = _video(directory, f"memory_{short_frames}f_gop{GOP}_ultrafast.mp4", short_frames, "ultrafast", True)
        long = _video(directory, f"memory_{long_frames}f_gop{GOP}_ultrafast.mp4", long_frames, "ultrafast", True)
        print("memory runs (fresh subprocess each):", flush=True)
        memory = bench_memory(short, short_frames, long, long_frames)
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)

    report(speed, memory, args.repeats)


if __name__ == "__main__":
    main()
