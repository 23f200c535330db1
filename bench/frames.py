"""Benchmark the frame sampler and the video_frames work: speed against a bare decode and ffmpeg, and memory.

Speed, on a 640x480 H.264 video with GOP 300 (3 minutes unless ``--seconds``), for each strategy (interval every 30
frames, time every 1 s, keyframes):
- sampler (``sample_frames``) against a bare PyAV loop written here that decodes the same way and converts exactly
  the same frames to RGB (goal: bare/sampler >= 0.9);
- the whole video_frames work (``extract_video_frames``: decode, select, JPEG-encode, store in a LocalBlobStore),
  in process after the imports, against Debian's ``ffmpeg`` command line making the same selection, with as many
  decoder threads of the same kind and a ``-q:v`` matched to our JPEG quality by PSNR, writing JPEGs to a temp
  dir (goal: ours/ffmpeg <= 1.0). The work as it was done before (RGB conversion on the decode thread, PIL JPEG,
  frame threads for keyframes too) runs beside it as ``before``.
Runs alternate in back-to-back rounds, are repeated ``--repeats`` times, and each ratio is the median of the
rounds' ratios; a very short run is repeated back to back so that one sample lasts >= 0.5 s. On a shared machine
a ratio moves by about 10% from run to run: ``--repeats 5`` narrows it.

Memory: peak RSS of sampling a short and a 10x longer video (strategy ``time``, no cap) in fresh subprocesses,
next to the peak RSS of a subprocess that only does the imports (goal: long / short <= 1.2).

Run from the repository root:

    .venv/bin/python bench/frames.py [--seconds S] [--repeats N] [--quick] [--no-memory] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

SIZE = (640, 480)
FPS = 30
GOP = 300
EVERY_N = 30
EVERY_S = 1.0
JPEG_QUALITY = 90
STRATEGIES = ("interval", "time", "keyframes")
SPEED_GOAL = 0.9
FFMPEG_GOAL = 1.0
MIN_SAMPLE_S = 0.5
MEMORY_GOAL = 1.2
RUNNERS = ("sampler", "bare", "ours", "before", "ffmpeg")

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
class Ffmpeg:
    """Debian's ffmpeg command line, set up as our decoder is."""

    executable: str
    version: str
    threads: int  # decoder threads, as many as ours uses
    thread_types: dict[str, str]  # strategy -> ffmpeg's -thread_type for the decoder, the kind ours uses
    passthrough: list[str]  # one output image per selected frame, none duplicated or dropped
    q: int = 2  # -q:v, matched to our JPEG quality

    def command(self, video: Path, strategy: str, out_dir: Path, seconds: float | None = None) -> list[str]:
        decoder = ["-threads", str(self.threads), "-thread_type", self.thread_types[strategy]]
        if strategy == "keyframes":
            decoder += ["-skip_frame", "nokey"]
        limit = ["-t", f"{seconds:g}"] if seconds else []
        if strategy == "interval":
            select = ["-vf", f"select='not(mod(n,{EVERY_N}))'"]
        elif strategy == "time":  # ours: the first frame at or after each multiple of S, the same as this
            period = f"floor(%s/{EVERY_S:g}+1e-6)"
            select = ["-vf", f"select='isnan(prev_t)+gt({period % 't'},{period % 'prev_t'})'"]
        else:
            select = []
        return [self.executable, "-nostdin", "-v", "error", *decoder, *limit, "-i", str(video), *select,
                *self.passthrough, "-qmin", "1", "-q:v", str(self.q), str(out_dir / "%06d.jpg")]  # fmt: skip


@dataclass
class SpeedResult:
    strategy: str
    video_frames: int
    kept: dict[str, int]  # runner -> frames it kept
    indices_match: dict[str, bool]  # runner -> kept the same frames (by barcode for ffmpeg) as the sampler
    seconds: dict[str, list[float]]  # runner -> seconds per run (mean over `inner` back-to-back runs)
    cpu: dict[str, list[float]]  # runner -> CPU seconds per run (all threads; ffmpeg's process for ffmpeg)
    inner: dict[str, int] = field(default_factory=dict)

    def ratio(self, numerator: str, denominator: str) -> float:
        """Median over the rounds of one runner's time over another's, each pair run in the same round: other
        load on a shared machine drifts over seconds, so the runs of a round see nearly the same conditions."""
        pairs = zip(self.seconds[numerator], self.seconds[denominator], strict=True)
        return statistics.median(a / b for a, b in pairs)

    def best_ratio(self, numerator: str, denominator: str) -> float:
        return min(self.seconds[numerator]) / min(self.seconds[denominator])

    def cpu_ratio(self, numerator: str, denominator: str) -> float:
        return statistics.median(self.cpu[numerator]) / statistics.median(self.cpu[denominator])

    def fps(self, runner: str) -> float:
        return self.video_frames / min(self.seconds[runner])

    def median_s(self, runner: str) -> float:
        return statistics.median(self.seconds[runner])


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


def _decoder_of(path: Path, strategy: str) -> tuple[str, int]:
    """The thread kind (ffmpeg's name) and count that our decoder resolves to for a strategy."""
    import av

    from mining_assets.video.sampling import configure_decoder

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        configure_decoder(stream, strategy)
        next(container.decode(stream))
        kinds = {"FRAME": "frame", "SLICE": "slice", "AUTO": "frame+slice"}
        return kinds[stream.thread_type.name], stream.codec_context.thread_count


def run_sampler(path: Path, strategy: str) -> list[int]:
    """The project's sampler, fully consumed; returns the kept frames' indices."""
    from mining_assets.video.sampling import sample_frames

    frames = list(sample_frames(path, strategy, every_n_frames=EVERY_N, every_s=EVERY_S, max_frames=None))
    return [frame.index for frame in frames]


def run_ours(path: Path, strategy: str) -> list[int]:
    """The whole video_frames work for one video: sample, JPEG-encode and store each kept frame (local store)."""
    from concurrent.futures import ThreadPoolExecutor

    from mining_assets.video.frames import FrameSamplingConfig, extract_video_frames
    from resources.blob_store import LocalBlobStore

    config = FrameSamplingConfig(
        strategy=strategy, every_n_frames=EVERY_N, every_s=EVERY_S, max_frames_per_video=0, jpeg_quality=JPEG_QUALITY
    )
    video = {"media_id": "bench-video", "sampling": "bench"}
    with tempfile.TemporaryDirectory(prefix="bench_store_") as root, ThreadPoolExecutor(2) as pool:
        rows, _ = extract_video_frames(path, video, config, LocalBlobStore(root=root), pool)
    return [row["frame_index"] for row in rows]


def _bare_frames(path: Path, strategy: str, before: bool = False):
    """Decode as the sampler does (``before``: as it did, frame threads for every strategy), select the same
    frames, and yield (index, frame) for the kept ones."""
    import av

    from mining_assets.video.sampling import configure_decoder

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        configure_decoder(stream, strategy)
        if before:
            stream.thread_type = "AUTO"
        time_base = float(stream.time_base)
        start_pts = stream.start_time or 0
        fps = float(stream.average_rate or stream.guessed_rate)
        next_time = 0.0
        for position, frame in enumerate(container.decode(stream)):
            timestamp = (frame.pts - start_pts) * time_base
            if strategy == "interval":
                if position % EVERY_N:
                    continue
                index = position
            elif strategy == "time":
                if timestamp + 1e-6 < next_time:
                    continue
                next_time = (math.floor(timestamp / EVERY_S + 1e-6) + 1) * EVERY_S
                index = position
            else:
                index = round(timestamp * fps)
            yield index, frame


def run_bare(path: Path, strategy: str) -> list[int]:
    """Bare PyAV: same decoder settings, same selection, RGB conversion of the kept frames only."""
    from mining_assets.video.sampling import DecodedFrame

    kept, images = [], []
    for index, frame in _bare_frames(path, strategy):
        images.append(DecodedFrame(index, 0.0, frame).to_ndarray("rgb24"))
        kept.append(index)
    return kept


def run_before(path: Path, strategy: str) -> list[int]:
    """The video_frames work as it was done before: RGB conversion on the decode thread (PyAV's default threads),
    PIL JPEG and the store on a pool of two, at most four frames in flight."""
    from concurrent.futures import ThreadPoolExecutor

    from mining_assets.video.frames import encode_jpeg, frame_blob_key
    from resources.blob_store import LocalBlobStore

    def store(index: int, image) -> int:
        data = encode_jpeg(image, JPEG_QUALITY)
        blob_store.put_bytes(frame_blob_key("bench-video", "before", index), data)
        hashlib.sha256(data).hexdigest()
        return index

    kept: list[int] = []
    in_flight: deque = deque()
    with tempfile.TemporaryDirectory(prefix="bench_store_") as root, ThreadPoolExecutor(2) as pool:
        blob_store = LocalBlobStore(root=root)
        for index, frame in _bare_frames(path, strategy, before=True):
            in_flight.append(pool.submit(store, index, frame.to_ndarray(format="rgb24")))
            if len(in_flight) >= 4:
                kept.append(in_flight.popleft().result())
        kept.extend(future.result() for future in in_flight)
    return kept


def run_ffmpeg(ffmpeg: Ffmpeg, path: Path, strategy: str, read_indices: bool = False) -> list[int]:
    """ffmpeg's command line making the same selection into a temp dir; the images' barcodes, or their count."""
    from mining_assets.video.synthetic import read_frame_index

    with tempfile.TemporaryDirectory(prefix="bench_ffmpeg_") as out:
        subprocess.run(ffmpeg.command(path, strategy, Path(out)), check=True)
        files = sorted(Path(out).iterdir())
        if not read_indices:
            return list(range(len(files)))
        return [read_frame_index(_decode_jpeg(file.read_bytes())) for file in files]


def _decode_jpeg(data: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _psnr(images, references) -> float:
    import numpy as np

    mse = np.mean(
        [np.mean((image.astype(np.float64) - ref) ** 2) for image, ref in zip(images, references, strict=True)]
    )
    return float(10 * math.log10(255**2 / mse)) if mse else float("inf")


def find_ffmpeg(path: Path) -> Ffmpeg | None:
    executable = shutil.which("ffmpeg")
    if executable is None:
        return None
    version = subprocess.run([executable, "-version"], capture_output=True, text=True, check=True).stdout
    options = subprocess.run([executable, "-hide_banner", "-h", "long"], capture_output=True, text=True).stdout
    decoders = {strategy: _decoder_of(path, strategy) for strategy in STRATEGIES}
    return Ffmpeg(
        executable=executable,
        version=version.split("\n")[0],
        threads=decoders["time"][1],
        thread_types={strategy: kind for strategy, (kind, _) in decoders.items()},
        passthrough=["-fps_mode", "passthrough"] if "-fps_mode" in options else ["-vsync", "0"],
    )


def match_quality(ffmpeg: Ffmpeg, path: Path, seconds: float) -> None:
    """Pick ffmpeg's -q:v whose PSNR against the reference RGB conversion is nearest to our JPEG quality's, on the
    time-sampled frames of the first seconds of the video, and print both with their mean bytes. (No one
    quantisation table compares: ffmpeg quantises chroma with its luma table, libjpeg with a coarser one.)"""
    from mining_assets.video.frames import encode_frame_jpeg
    from mining_assets.video.sampling import select_frames

    count = max(1, int(seconds / EVERY_S))
    frames = list(select_frames(path, "time", every_s=EVERY_S, max_frames=count))
    references = [frame.to_ndarray("rgb24") for frame in frames]

    def measure(label: str, images: list[bytes]) -> float:
        psnr = _psnr([_decode_jpeg(data) for data in images], references)
        print(f"  {label:<16} {statistics.mean(map(len, images)):>7.0f} B, PSNR {psnr:.2f} dB", flush=True)
        return psnr

    print(f"  {len(frames)} frames of the first {count * EVERY_S:g} s:")
    ours = measure(f"jpeg_quality {JPEG_QUALITY}", [encode_frame_jpeg(frame, JPEG_QUALITY) for frame in frames])
    candidates = []
    for q in range(1, 7):
        ffmpeg.q = q
        with tempfile.TemporaryDirectory(prefix="bench_quality_") as out:
            subprocess.run(ffmpeg.command(path, "time", Path(out), seconds=count * EVERY_S), check=True)
            images = [file.read_bytes() for file in sorted(Path(out).iterdir())]
        if len(images) != len(frames):
            raise RuntimeError(f"ffmpeg -q:v {q} wrote {len(images)} frames, ours {len(frames)}")
        candidates.append((abs(measure(f"ffmpeg -q:v {q}", images) - ours), q))
    ffmpeg.q = min(candidates)[1]
    print(f"  matched: -q:v {ffmpeg.q} to jpeg_quality {JPEG_QUALITY} (nearest PSNR in RGB)", flush=True)


def _cpu_now() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _timed(runner, path: Path, strategy: str, inner: int) -> tuple[list[int], float, float]:
    started, cpu_started = time.perf_counter(), _cpu_now()
    for _ in range(inner):
        kept = runner(path, strategy)
    return kept, (time.perf_counter() - started) / inner, (_cpu_now() - cpu_started) / inner


def bench_speed(path: Path, clip: Path, repeats: int, ffmpeg: Ffmpeg | None) -> list[SpeedResult]:
    video_frames = _count_frames(path)
    print(f"  {path.name}: {video_frames} video frames", flush=True)
    runners = {"sampler": run_sampler, "bare": run_bare, "ours": run_ours, "before": run_before}
    if ffmpeg:
        runners["ffmpeg"] = lambda video, strategy: run_ffmpeg(ffmpeg, video, strategy)
    for strategy in STRATEGIES:  # imports, decoder and encoder set-up, ffmpeg's libraries: warmed on a short clip
        for runner in runners.values():
            runner(clip, strategy)
    results = []
    for strategy in STRATEGIES:
        result = SpeedResult(strategy, video_frames, {}, {}, {name: [] for name in runners}, {n: [] for n in runners})
        started = time.perf_counter()
        expected = run_sampler(path, strategy)  # and the page cache
        short = time.perf_counter() - started < 2 * MIN_SAMPLE_S
        for name, runner in runners.items():
            elapsed = _timed(runner, path, strategy, 1)[1] if short else MIN_SAMPLE_S  # long runs: not again
            result.inner[name] = max(1, math.ceil(MIN_SAMPLE_S / max(elapsed, 1e-6)))
        if ffmpeg:
            indices = run_ffmpeg(ffmpeg, path, strategy, read_indices=True)
            result.kept["ffmpeg"], result.indices_match["ffmpeg"] = len(indices), indices == expected
        for repeat in range(repeats):
            for name in list(runners)[:: -1 if repeat % 2 else 1]:
                kept, elapsed, cpu = _timed(runners[name], path, strategy, result.inner[name])
                if name != "ffmpeg" and name not in result.kept:
                    result.kept[name], result.indices_match[name] = len(kept), kept == expected
                assert len(kept) == result.kept[name], f"{strategy}/{name}: kept {len(kept)} frames this time"
                result.seconds[name].append(elapsed)
                result.cpu[name].append(cpu)
        result.kept = {name: result.kept[name] for name in runners}
        print(f"  {strategy:<9} kept={result.kept}"
              + "".join(f" {name} s={[round(t, 3) for t in times]}" for name, times in result.seconds.items()),
              flush=True)  # fmt: skip
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


def report_speed(speed: list[SpeedResult], repeats: int, ffmpeg: Ffmpeg | None) -> None:
    print()
    print(f"speed: {speed[0].video_frames} frames {SIZE[0]}x{SIZE[1]} @ {FPS} fps, H.264 veryfast GOP {GOP};")
    print(f"       f/s = video frames covered / wall s of the best of {repeats} runs; ratio = median of the")
    print(f"       {repeats} rounds' bare/sampler time; best = ratio of the best runs; cpu = of CPU time;")
    print("       stage+jpeg = bare/ours, ours = the video_frames work (sample, JPEG-encode, store)")
    header = f"  {'strategy':<10} {'kept':>5}  {'sampler f/s':>11}  {'bare f/s':>9}  {'ratio':>5}  {'best':>6}"
    print(f"{header}  {'cpu':>5}  {'stage+jpeg':>10}  (goal: ratio >= {SPEED_GOAL:.2f})")
    for result in speed:
        ratio = 1 / result.ratio("sampler", "bare")
        print(
            f"  {result.strategy:<10} {result.kept['sampler']:>5}  {result.fps('sampler'):>11.1f}"
            f"  {result.fps('bare'):>9.1f}  {ratio:>5.2f}  {1 / result.best_ratio('sampler', 'bare'):>6.2f}"
            f"  {1 / result.cpu_ratio('sampler', 'bare'):>5.2f}  {1 / result.ratio('ours', 'bare'):>10.2f}"
            f"  {'ok' if ratio >= SPEED_GOAL else 'BELOW GOAL'}"
        )
    print()
    if ffmpeg is None:
        print("whole work vs ffmpeg: skipped, no `ffmpeg` on PATH (Debian: apt-get install -y ffmpeg)")
        for r in speed:
            print(f"  {r.strategy:<10} before {r.median_s('before'):.3f} s, ours {r.median_s('ours'):.3f} s,"
                  f" ours/before {r.ratio('ours', 'before'):.2f}")  # fmt: skip
        return
    print(f"whole work (decode, select, JPEG, store; median s of {repeats}) vs {ffmpeg.version}:")
    print(f"  ours: jpeg_quality {JPEG_QUALITY}, {ffmpeg.threads} decoder threads ({ffmpeg.thread_types});")
    print(f"  ffmpeg: -q:v {ffmpeg.q} (matched by PSNR), -threads {ffmpeg.threads} -thread_type as ours,")
    print(f"  {' '.join(ffmpeg.passthrough)}, selections by `select` (interval, time) or -skip_frame nokey;")
    print("  x/ffmpeg = median of the rounds' time ratios; cpu = ratio of median CPU time (ffmpeg: its process)")
    print(f"  {'strategy':<10} {'kept':>5} {'ffmpeg kept':>11}  {'same':>4}  {'before s':>8}  {'ours s':>7}"
          f"  {'ffmpeg s':>8}  {'before/ffmpeg':>13}  {'ours/ffmpeg':>11}  {'cpu':>5}  {'ours/before':>11}"
          f"  {'ours/bare':>9}"
          f"  (goal: ours/ffmpeg <= {FFMPEG_GOAL:.2f})")  # fmt: skip
    for r in speed:
        ratio = r.ratio("ours", "ffmpeg")
        same = "yes" if r.indices_match["ffmpeg"] and r.indices_match["ours"] and r.indices_match["before"] else "NO"
        print(
            f"  {r.strategy:<10} {r.kept['ours']:>5} {r.kept['ffmpeg']:>11}  {same:>4}  {r.median_s('before'):>8.3f}"
            f"  {r.median_s('ours'):>7.3f}  {r.median_s('ffmpeg'):>8.3f}  {r.ratio('before', 'ffmpeg'):>13.2f}"
            f"  {ratio:>11.2f}  {r.cpu_ratio('ours', 'ffmpeg'):>5.2f}  {r.ratio('ours', 'before'):>11.2f}"
            f"  {r.ratio('ours', 'bare'):>9.2f}"
            f"  {'ok' if ratio <= FFMPEG_GOAL else 'ABOVE GOAL'}"
        )


def report_memory(memory: list[MemoryResult]) -> None:
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
    parser.add_argument("--seconds", type=float, help="length of the speed video (default 180; --quick: 10)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of every runner (default 3)")
    parser.add_argument("--quick", action="store_true", help="10 s speed video, 1 vs 3 minute memory videos")
    parser.add_argument("--no-memory", action="store_true", help="speed only")
    parser.add_argument("--keep", type=Path, help="write (and reuse) the videos here instead of a removed temp dir")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    seconds = args.seconds or (10 if args.quick else 180)
    if seconds < 1:
        parser.error("--seconds must be at least 1")
    _ensure_repo_on_path()
    import av

    started = time.perf_counter()
    speed_frames = round(seconds * FPS)
    short_frames = 60 * FPS
    long_frames = (3 if args.quick else 10) * 60 * FPS
    print(
        f"python {sys.version.split()[0]}, PyAV {av.__version__} (FFmpeg libavcodec"
        f" {'.'.join(map(str, av.library_versions['libavcodec']))}), {os.cpu_count()} CPUs;"
        f" repeats={args.repeats}{' (quick)' if args.quick else ''}",
        flush=True,
    )

    if args.keep:
        directory = args.keep
        directory.mkdir(parents=True, exist_ok=True)
    else:
        directory = Path(tempfile.mkdtemp(prefix="bench_frames_"))
    memory = None
    try:
        print("speed videos:", flush=True)
        speed_video = _video(directory, f"speed_{speed_frames}f_gop{GOP}_veryfast.mp4", speed_frames, "veryfast", True)
        ffmpeg = find_ffmpeg(speed_video)
        if ffmpeg is None:
            print("note: no `ffmpeg` on PATH: the ffmpeg columns are skipped (Debian: apt-get install -y ffmpeg)")
        else:
            print(f"ffmpeg: {ffmpeg.executable} ({ffmpeg.version}); JPEG quality matching:", flush=True)
            match_quality(ffmpeg, speed_video, min(20.0, seconds))
        clip = _video(directory, f"clip_{FPS}f_gop{GOP}_veryfast.mp4", FPS, "veryfast", True)
        print("speed runs:", flush=True)
        speed = bench_speed(speed_video, clip, args.repeats, ffmpeg)

        if not args.no_memory:
            print("memory videos:", flush=True)
            short = _video(directory, f"memory_{short_frames}f_gop{GOP}_ultrafast.mp4", short_frames, "ultrafast", True)
            long = _video(directory, f"memory_{long_frames}f_gop{GOP}_ultrafast.mp4", long_frames, "ultrafast", True)
            print("memory runs (fresh subprocess each):", flush=True)
            memory = bench_memory(short, short_frames, long, long_frames)
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)

    report_speed(speed, args.repeats, ffmpeg)
    if memory:
        report_memory(memory)
    print(f"(bench took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
