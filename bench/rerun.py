"""Benchmark how much work a re-run does: the upload path, the vision and the pose stages of a keyword, first run
against re-runs.

A local folder of ``--videos`` synthetic videos (640x480 and other sizes, ``--seconds`` long, each of its own
content) and ``--photos`` photos of a person (variants of matplotlib's sample photo) goes through media_registry,
media, video_frames, frames, then filtered_frames, frame_embeddings, unique_frames, detections, coco_annotations
(tiny random models loaded through the resources' own ``from_pretrained`` path) and quality_scores, poses,
pose_datasets (the MediaPipe bundles in ../shared; ``--skip-poses``, or no ../shared, leaves them out). One run
(``dg.materialize``, in-process) per scenario, all on one embedded DuckLake, one local blob store and one SQLite
Dagster instance in a temporary folder:

1. the first run of keyword A (everything is new);
2. A again, nothing changed (goal: at most 5% of the first run's work);
3. A again after one video was added to its folder (goal: about one video's work, against the first run / videos);
4. keyword B, whose folder holds the same media (goal: no decode, no embedding, quality or pose work).

Work is the sum of the steps' own time (step start to success or failure, from the run's event log), per stage and
in all, as wall time and as this process's CPU time over the same spans (sampled on a thread: steadier than wall
time on a shared machine, blind to waits); beside it, the work counters each stage reports in its materialization
metadata (keys naming work done now or reused). The fixed cost of a step (one that does nothing, one that reads the
warehouse once) is measured on the same instance and on an in-memory one: the part of a re-run no stage can save.
A warm-up run on a lake of its own first takes the process's first-run costs (imports, Dagster's first run, model
weights, which load once per process) out of the figures; each scenario attaches the lake anew, as a run process
of its own does. Nothing is asserted; MediaPipe's native logs are left out of stderr.

    .venv/bin/python bench/rerun.py [--videos 6] [--photos 5] [--seconds 12] [--skip-poses]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
BUNDLES = REPO_ROOT.parent / "shared" / "models" / "mediapipe"

UNCHANGED_GOAL = 0.05  # an unchanged re-run: at most this share of the first run's work
ONE_VIDEO_GOAL = 1.5  # a re-run after one new video: at most this many times one video's share of the first run
COUNTER_WORDS = ("now", "reused", "computed", "sampled", "fetched", "scored", "embedded", "detected", "new")
SOURCE = ["media_registry", "media", "video_frames", "frames"]
VISION = ["filtered_frames", "frame_embeddings", "unique_frames", "detections", "coco_annotations"]
POSES = ["quality_scores", "poses", "pose_datasets"]
# the stages whose work a keyword finding known media should not repeat (scenario 4)
NOT_AGAIN = {"video_frames": "decode", "frame_embeddings": "embedding", "quality_scores": "quality", "poses": "pose"}
SIZES = [(640, 480), (640, 360), (576, 432), (512, 384), (704, 396), (480, 360), (608, 456), (544, 408)]
FPS = 30
# MediaPipe's native libraries (LiteRT, TFLite) log to the process's stderr whenever a landmarker starts
NATIVE_LOG = re.compile(r"^(INFO|WARNING|ERROR|VERBOSE): (\[\w+\.cc:\d+\]|Created TensorFlow Lite|Read-only tensor|"
                        r"Logging before InitGoogle)|^[IWE]\d{4} ")  # fmt: skip
QUIET_CONSOLE = {"console": {"config": {"log_level": "WARNING"}}}  # the event log stays whole


def make_video_file(folder: Path, index: int, seconds: float, size: tuple[int, int] | None = None) -> Path:
    """Video ``index``: a size (and, past the list of sizes, a codec) of its own, so its frames are its own."""
    from mining_assets.video.synthetic import make_video

    codec = "h264" if (index // len(SIZES)) % 2 == 0 else "mp4v"
    size = size or SIZES[index % len(SIZES)]
    frames = max(1, round(seconds * FPS))
    return make_video(folder / f"video-{index:02d}.mp4", frames=frames, fps=FPS, size=size, codec=codec, gop=FPS)


def person_photo():
    """matplotlib's sample photo of Grace Hopper, or None when matplotlib is not installed."""
    try:
        from matplotlib import cbook
    except ImportError:
        return None
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        return Image.open(handle).convert("RGB")


def make_photo_files(folder: Path, count: int, start: int = 0) -> None:
    """Photos of a person, each a different crop (every other one mirrored); noise images without matplotlib."""
    from PIL import Image, ImageOps

    person = person_photo()
    for index in range(start, start + count):
        if person is None:
            image = Image.effect_noise((640, 480), 20 + index % 60).convert("RGB")
        else:
            width, height = person.size
            step = index % 12
            image = person.crop((6 * step, 4 * step, width - 3 * step, height - 5 * step))
            image = ImageOps.mirror(image) if index % 2 else image
        image.save(folder / f"photo-{index:02d}.jpg", quality=90)


def build_models(folder: Path) -> dict[str, str]:
    from resources.models.random_weights import build_random_model

    return {name: str(build_random_model(name, folder / name)) for name in ("siglip", "dinov2", "grounding-dino")}


def make_resources(root: Path, models: dict[str, str], with_poses: bool) -> dict:
    """The resources of one lake and blob store under ``root``."""
    from resources.blob_store import LocalBlobStore
    from resources.models.detector import OpenVocabDetector
    from resources.models.embedder import ImageEmbedder
    from resources.models.text_filter import TextImageFilter
    from resources.stock_photos import PexelsSource, PixabayPhotoSource, UnsplashSource
    from resources.uploads import UploadBucket
    from resources.warehouse import Warehouse
    from resources.youtube import YouTubeResource

    found = {
        "warehouse": Warehouse(catalog=f"sqlite:{root}/lake/catalog.sqlite", data_path=f"{root}/lake/data/"),
        "blob_store": LocalBlobStore(root=str(root / "blobs")),
        "youtube": YouTubeResource(),
        "uploads": UploadBucket.unconfigured(),
        "pexels": PexelsSource(),
        "unsplash": UnsplashSource(),
        "pixabay": PixabayPhotoSource(),
        "text_filter": TextImageFilter(backend="siglip", model_id=models["siglip"], offline=True),
        "embedder": ImageEmbedder(model_id=models["dinov2"], offline=True),
        "detector": OpenVocabDetector(model_id=models["grounding-dino"], offline=True),
    }
    (root / "lake").mkdir(parents=True, exist_ok=True)
    if with_poses:
        from resources.models.pose import PoseEstimator

        found["pose_estimator"] = PoseEstimator(
            pose_model_path=str(BUNDLES / "pose_landmarker_full.task"),
            hand_model_path=str(BUNDLES / "hand_landmarker.task"),
            cache_dir=str(root / "mediapipe-cache"),
            offline=True,
        )
    return found


def run_config(folder: Path, stages: list[str]) -> dict:
    """The upload path's registry on a local folder; every frame goes on to the next stage, so each has work."""
    config = {
        "media_registry": {"local_dir": str(folder), "youtube_search": False, "uploads": False, "stock_sources": []},
        "video_frames": {"strategy": "time", "every_s": 1.0},
        "filtered_frames": {"threshold": 0.0},
        # random weights make every frame a near-duplicate of every other: only exact copies are merged, so the
        # detector sees every frame
        "unique_frames": {"threshold": 1.0},
        "quality_scores": {"threshold": 0.0},
    }
    ops = {name: {"config": value} for name, value in config.items() if name in stages}
    return {"ops": ops, "loggers": QUIET_CONSOLE}


def pipeline(stages: list[str]) -> list:
    from mining_assets.frames import frames
    from mining_assets.poses.datasets import pose_datasets
    from mining_assets.poses.poses import poses
    from mining_assets.poses.quality import quality_scores
    from mining_assets.sources.media import media
    from mining_assets.sources.media_registry import media_registry
    from mining_assets.video.frames import video_frames
    from mining_assets.vision.annotations import coco_annotations
    from mining_assets.vision.detections import detections
    from mining_assets.vision.embeddings import frame_embeddings
    from mining_assets.vision.filtered import filtered_frames
    from mining_assets.vision.unique import unique_frames

    known = [media_registry, media, video_frames, frames, filtered_frames, frame_embeddings, unique_frames,
             detections, coco_annotations, quality_scores, poses, pose_datasets]  # fmt: skip
    return [asset for asset in known if asset.op.name in stages]


def materialize(assets: list, key: str, resources: dict, config: dict, instance, clock) -> dict:
    """One run of ``assets`` for partition ``key``, the lake attached anew as a new run process does: its steps'
    wall and CPU time, failed steps, work counters and the frames catalogued."""
    import dagster as dg
    from step_work import numeric_metadata, step_seconds, step_spans

    from resources.warehouse import close_all

    close_all()
    instance.add_dynamic_partitions("keyword", [key])
    started = time.perf_counter()
    result = dg.materialize(assets, partition_key=key, resources=resources, run_config=config, instance=instance,
                            raise_on_error=False)  # fmt: skip
    wall = time.perf_counter() - started
    spans, failed = step_spans(instance, result.run_id)
    steps, cpu_steps = step_seconds(spans), step_seconds(spans, clock)
    numbers = numeric_metadata(instance, result.run_id)
    counters = {stage: {name: value for name, value in found.items() if any(word in name for word in COUNTER_WORDS)}
                for stage, found in numbers.items()}  # fmt: skip
    work = {"wall": sum(steps.values()), "cpu": sum(cpu_steps.values())}
    return {"wall": steps, "cpu": cpu_steps, "work": work, "failed": failed, "counters": counters, "call": wall,
            "frames": numbers.get("frames", {}).get("frames", 0)}  # fmt: skip


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def warm_up(root: Path, models: dict[str, str], stages: list[str], instance, clock) -> dict[str, float]:
    """A first run of everything on a lake of its own (imports, Dagster's first run); on the way, the first load of
    each model and the lake's attach are timed (a run process of its own pays them in its first step that needs
    them)."""
    from resources.warehouse import close_all

    resources = make_resources(root, models, "quality_scores" in stages)
    roles = [name for name in ("text_filter", "embedder", "detector", "pose_estimator") if name in resources]
    figures = {f"{name} load": timed(resources[name].load) for name in roles}
    figures["lake attach"] = timed(lambda: resources["warehouse"].execute("SELECT 1"))
    close_all()
    figures["lake attach again"] = timed(lambda: resources["warehouse"].execute("SELECT 1"))
    folder = root / "media"
    folder.mkdir()
    make_video_file(folder, 0, 2.0, size=(320, 240))
    make_photo_files(folder, 1, start=11)
    config = run_config(folder, stages)
    figures["warm-up run"] = timed(lambda: materialize(pipeline(stages), "warm-up", resources, config, instance, clock))
    return figures


def cell(seconds: float | None, first: float | None, failed: bool = False) -> str:
    share = f"({seconds / first:.2f})" if seconds is not None and first else ""
    return f"{'-' if seconds is None else f'{seconds:.2f}'}{'!' if failed else ''} {share:>6}".rjust(18)


def print_stage_table(stages: list[str], runs: list[tuple[str, dict]], clock: str) -> None:
    """Each stage's step time (``wall`` or ``cpu``) in every run, with its ratio to run 1."""
    first = runs[0][1]
    title = f"step work, {'wall' if clock == 'wall' else 'CPU'} s (ratio to run 1)"
    print(f"\n{title:<44}" + "".join(f"{label:>18}" for label, _ in runs))
    for stage in stages:
        cells = [cell(run[clock].get(stage), first[clock].get(stage), stage in run["failed"]) for _, run in runs]
        print(f"  {stage:<42}" + "".join(cells))
    print(f"  {'all steps':<42}" + "".join(cell(run["work"][clock], first["work"][clock]) for _, run in runs))
    if clock == "wall":
        print(f"  {'dg.materialize call':<42}" + "".join(cell(run["call"], None) for _, run in runs))
    for label, run in runs:
        if run["failed"] and clock == "wall":
            print(f"  ! {label}: failed steps {', '.join(run['failed'])}")


def print_counters(stages: list[str], runs: list[tuple[str, dict]]) -> None:
    print("\nwork counters (materialization metadata)" + "".join(f"{label:>14}" for label, _ in runs))
    for stage in stages:
        names = sorted({name for _, run in runs for name in run["counters"].get(stage, {})})
        for name in names or ["(none)"]:
            values = [run["counters"].get(stage, {}).get(name) for _, run in runs]
            print(f"  {stage:<16} {name:<23}" + "".join(f"{'-' if v is None else f'{v:g}':>14}" for v in values))


def done_now(run: dict, stage: str) -> float | None:
    """What a stage says it did now (its counters naming ``now``, failures aside); None: it says nothing of it."""
    now = [value for name, value in run["counters"].get(stage, {}).items() if "now" in name and "fail" not in name]
    return sum(now) if now else None


def print_summary(stages: list[str], runs: list[tuple[str, dict]], videos: int, floor: dict[str, float]) -> None:
    first, unchanged, added, other = (run for _, run in runs)
    new_frames = added["counters"].get("video_frames", {}).get("frames_decoded_now") or (
        added["frames"] - first["frames"]
    )
    print(f"\nrun 1 catalogued {first['frames']:g} frames; the added video gave {new_frames:g}")
    for clock in ("wall", "cpu"):
        share = first["work"][clock] * new_frames / first["frames"] if first["frames"] else float("nan")
        print(f"  {clock}: one video's work in run 1 by its share of the frames {share:.2f} s (run 1 / {videos} "
              f"videos: {first['work'][clock] / videos:.2f} s); floor of {len(stages)} steps that each read the "
              f"warehouse once {floor[clock]:.2f} s = {floor[clock] / first['work'][clock]:.1%} of run 1")  # fmt: skip
    repeated = []
    for stage, what in NOT_AGAIN.items():
        count = done_now(other, stage) if stage in stages else 0
        if count is None:
            repeated.append(f"{stage} reports no *_now counter")
        elif count:
            repeated.append(f"{what} work in {stage} ({count:g} now)")

    def ratio(run: dict, clock: str) -> float:
        return run["work"][clock] / first["work"][clock]

    goals = [
        ("1 first run of A", first, "-", lambda clock: None),
        ("2 unchanged re-run of A", unchanged, f"<= {UNCHANGED_GOAL:.0%} of run 1",
         lambda clock: ratio(unchanged, clock) <= UNCHANGED_GOAL),
        (f"3 A + 1 video ({videos + 1})", added, f"<= {ONE_VIDEO_GOAL} x run 1 / {videos}",
         lambda clock: ratio(added, clock) * videos <= ONE_VIDEO_GOAL),
        ("4 keyword B, same media", other, "no decode, embedding, quality, pose work", lambda clock: not repeated),
    ]  # fmt: skip
    print(
        f"\n{'scenario':<26} {'wall s':>7} {'/ run 1':>7} {'CPU s':>7} {'/ run 1':>7}  {'goal':<40} result (wall; CPU)"
    )
    for label, run, goal, met in goals:
        verdicts = [met(clock) for clock in ("wall", "cpu")]
        result = "-" if verdicts[0] is None else "; ".join("met" if v else "not met" for v in verdicts)
        if label.startswith("3"):
            result += f" ({ratio(run, 'wall') * videos:.2f}x; {ratio(run, 'cpu') * videos:.2f}x run 1 / {videos})"
        if label.startswith("4") and repeated:
            result = "not met: " + "; ".join(repeated)
        if run["failed"]:
            result += f" (failed steps: {', '.join(run['failed'])})"
        print(f"{label:<26} {run['work']['wall']:>7.2f} {ratio(run, 'wall'):>7.3f} {run['work']['cpu']:>7.2f} "
              f"{ratio(run, 'cpu'):>7.3f}  {goal:<40} {result}")  # fmt: skip


@contextmanager
def native_logs_left_out(path: Path):
    """While the block runs, the process's stderr goes to ``path``; then every line but the native libraries' logs
    is written to stderr (Python's warnings and tracebacks, Dagster's errors)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "wb") as sink:
        os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        kept = [line for line in path.read_text(errors="replace").splitlines() if not NATIVE_LOG.match(line)]
        if kept:
            print("\n".join(kept), file=sys.stderr)


def scenarios(work: Path, stages: list[str], models: dict[str, str], videos: int, seconds: float) -> None:
    """The warm-up, the fixed costs and the four runs, then the tables."""
    import dagster as dg
    from step_work import CpuClock, fixed_step_cost

    (work / "dagster_home").mkdir()
    (work / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    folder_a, folder_b = work / "media-a", work / "media-b"
    with dg.DagsterInstance.local_temp(str(work / "dagster_home")) as instance, CpuClock() as clock:
        warm = warm_up(work / "warm-up", models, stages, instance, clock)
        print("first in this process (not counted; a run process of its own pays them): "
              + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in warm.items()))  # fmt: skip
        resources = make_resources(work / "data", models, POSES[0] in stages)
        fixed = fixed_step_cost(instance, resources["warehouse"], "idle", clock)
        with dg.DagsterInstance.ephemeral() as memory:
            in_memory = fixed_step_cost(memory, resources["warehouse"], "idle", clock)
        print("Dagster's fixed cost per step (median of 8, in-process; wall / CPU s): a step that does nothing "
              f"{fixed['nothing'][0]:.3f} / {fixed['nothing'][1]:.3f}, one that reads the warehouse once "
              f"{fixed['reads'][0]:.3f} / {fixed['reads'][1]:.3f} on this SQLite instance; in memory "
              f"{in_memory['nothing'][0]:.3f} / {in_memory['nothing'][1]:.3f} and "
              f"{in_memory['reads'][0]:.3f} / {in_memory['reads'][1]:.3f}")  # fmt: skip

        assets = pipeline(stages)

        def run(key: str, folder: Path) -> dict:
            return materialize(assets, key, resources, run_config(folder, stages), instance, clock)

        runs = [("1 first A", run("person", folder_a)), ("2 unchanged", run("person", folder_a))]
        make_video_file(folder_a, videos, seconds)
        runs.append(("3 A + 1 video", run("person", folder_a)))
        shutil.copytree(folder_a, folder_b)
        runs.append(("4 keyword B", run("people", folder_b)))
    print_stage_table(stages, runs, "wall")
    print_stage_table(stages, runs, "cpu")
    print_counters(stages, runs)
    floor = {clock: fixed["reads"][index] * len(stages) for index, clock in enumerate(("wall", "cpu"))}
    print_summary(stages, runs, videos, floor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--photos", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each video")
    parser.add_argument("--skip-poses", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-rerun-"))
    os.environ.update({"DAGSTER_HOME": str(work / "dagster_home"), "MINING_DATA_DIR": str(work / "data"),
                       "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                       "TRANSFORMERS_VERBOSITY": "error"})  # fmt: skip
    bundles = all((BUNDLES / name).is_file() for name in ("pose_landmarker_full.task", "hand_landmarker.task"))
    stages = SOURCE + VISION + (POSES if bundles and not args.skip_poses else [])
    started = time.perf_counter()
    try:
        with native_logs_left_out(work / "stderr.log"):
            (work / "media-a").mkdir()
            for index in range(args.videos):
                make_video_file(work / "media-a", index, args.seconds)
            make_photo_files(work / "media-a", args.photos)
            models = build_models(work / "models")
            sizes = [f"{w}x{h}" for w, h in (SIZES * (args.videos // len(SIZES) + 2))[: args.videos + 1]]
            print(f"{os.cpu_count()} cores; keyword A: {args.videos} videos of {args.seconds:g} s at {FPS} fps "
                  f"({', '.join(sizes[:-1])}; run 3 adds one at {sizes[-1]}), {args.photos} photos; 1 frame a second; "
                  f"tiny random models; made in {time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
            if POSES[0] not in stages:
                why = "--skip-poses" if args.skip_poses else f"no MediaPipe bundles in {BUNDLES}"
                print(f"pose stages ({', '.join(POSES)}) skipped: {why}")
            scenarios(work, stages, models, args.videos, args.seconds)
        print(f"\nbench total: {time.perf_counter() - started:.0f} s", flush=True)
        # all is printed; the landmarkers still log as they close at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
