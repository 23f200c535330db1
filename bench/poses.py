"""Benchmark the pose stages against bare MediaPipe calls on the same frames.

Frames are a real photo of a person (matplotlib's ``grace_hopper.jpg``) as 640x480 variants: scaled to 440 px high
on a grey canvas at different offsets, every other one mirrored, JPEG-encoded into a local blob store. Models are the
real bundles in ``../shared/models/mediapipe`` (pose_landmarker_full + hand_landmarker).

Each row times the stage's own work on ``--frames`` frames against bare MediaPipe calls on already decoded
``mp.Image`` objects, with the same bundles and options:
- ``poses/photo``: ``estimate_poses`` on photos (fetch, decode and MediaPipe conversion on worker threads while
  pose + hands run in IMAGE mode) against ``pose.detect`` + ``hands.detect`` in a loop. The ``poses`` asset takes
  this path only for photos scored with other bundles; otherwise it copies the landmarks ``quality`` found;
- ``poses/video``: ``estimate_poses`` on one video of the frames in time order (VIDEO mode, fresh landmarkers for
  the sequence) against fresh VIDEO-mode landmarkers and ``detect_for_video`` in a loop;
- ``quality``: ``score_frames`` (as poses/photo, plus lighting/sharpness measures on the workers) against the bare
  IMAGE-mode loop.
Runs alternate stage / bare in back-to-back pairs, ``--repeats`` times, first one then the other leading; the ratio
is the median of the pairs' rate ratios (goal: >= 0.9). ``prepare`` is the fetch+decode+convert rate of one thread.

    .venv/bin/python bench/poses.py [--frames 48] [--repeats 5]
"""

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

BUNDLES = REPO_ROOT.parent / "shared" / "models" / "mediapipe"
GOAL = 0.9
SIZE = (640, 480)


def person_photo():
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        return Image.open(handle).convert("RGB")


def make_frames(store, count: int) -> list[dict]:
    """640x480 JPEG variants of the person photo in the blob store, as catalog rows of one video."""
    from PIL import Image, ImageOps

    photo = person_photo()
    height = 440
    person = photo.resize((round(photo.width * height / photo.height), height), Image.BILINEAR)
    frames = []
    for i in range(count):
        canvas = Image.new("RGB", SIZE, (110 + i % 40, 120, 130))
        canvas.paste(person, ((i * 7) % (SIZE[0] - person.width), (SIZE[1] - height) // 2))
        canvas = ImageOps.mirror(canvas) if i % 2 else canvas
        buffer = io.BytesIO()
        canvas.save(buffer, format="JPEG", quality=90)
        key = f"frames/bench/clip/{i:05d}.jpg"
        store.put_bytes(key, buffer.getvalue())
        frames.append({"frame_id": f"f{i:05d}", "media_id": f"photo-{i}", "media_type": "photo",
                       "timestamp_s": i / 30, "blob_key": key})  # fmt: skip
    return frames


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bare_landmarkers(pose_path: Path, hand_path: Path, video: bool):
    """MediaPipe's own landmarkers with the estimator's default options, built without the project's code."""
    from mediapipe.tasks.python import BaseOptions, vision

    mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
    pose = vision.PoseLandmarker.create_from_options(
        vision.PoseLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(pose_path)), running_mode=mode)
    )
    hands = vision.HandLandmarker.create_from_options(
        vision.HandLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(hand_path)), running_mode=mode, num_hands=2
        )
    )
    return pose, hands


def measure(name: str, count: int, stage, bare, repeats: int, prepare_s: float) -> float:
    stage()  # warm up both: landmarkers built, caches filled
    bare()
    ratios, stage_rates, bare_rates = [], [], []
    for repeat in range(repeats):
        order = [("stage", stage), ("bare", bare)]
        times = {label: timed(fn) for label, fn in (order if repeat % 2 == 0 else order[::-1])}
        stage_rates.append(count / times["stage"])
        bare_rates.append(count / times["bare"])
        ratios.append(stage_rates[-1] / bare_rates[-1])
    ratio = statistics.median(ratios)
    best = max(stage_rates) / max(bare_rates)
    print(f"{name:<12} {count:>6} {statistics.median(stage_rates):>11.1f} {statistics.median(bare_rates):>10.1f} "
          f"{ratio:>6.2f} {best:>6.2f} {1 / prepare_s:>13.1f}  {'ok' if ratio >= GOAL else 'below goal'}",
          flush=True)  # fmt: skip
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    pose_path, hand_path = BUNDLES / "pose_landmarker_full.task", BUNDLES / "hand_landmarker.task"
    if not (pose_path.is_file() and hand_path.is_file()):
        print(f"skipped: the MediaPipe bundles are not in {BUNDLES} (../shared beside the repository)")
        return
    try:
        import matplotlib  # noqa: F401  (its sample data holds the person photo)
    except ImportError:
        print("skipped: matplotlib is not installed (its sample data holds the person photo)")
        return

    import mediapipe

    from mining_assets.poses.poses import estimate_poses
    from mining_assets.poses.quality import score_frames
    from mining_assets.vision.common import frame_loader
    from resources.blob_store import LocalBlobStore
    from resources.models.pose import PoseEstimator, prepare_image

    estimator = PoseEstimator(pose_model_path=str(pose_path), hand_model_path=str(hand_path), offline=True)
    with tempfile.TemporaryDirectory(prefix="bench-poses-") as tmp:
        store = LocalBlobStore(root=f"{tmp}/blobs")
        photos = make_frames(store, args.frames)
        video = [{**frame, "media_id": "clip", "media_type": "video"} for frame in photos]
        load = frame_loader(store, 64)
        started = time.perf_counter()
        images = [prepare_image(load(frame)).image for frame in photos]
        prepare_s = (time.perf_counter() - started) / len(photos)
        stamps = [round(frame["timestamp_s"] * 1000) for frame in video]
        pose, hands = bare_landmarkers(pose_path, hand_path, video=False)

        def bare_image():
            for image in images:
                pose.detect(image)
                hands.detect(image)

        def bare_video():
            video_pose, video_hands = bare_landmarkers(pose_path, hand_path, video=True)
            for stamp, image in zip(stamps, images, strict=True):
                video_pose.detect_for_video(image, stamp)
                video_hands.detect_for_video(image, stamp)
            video_hands.close()
            video_pose.close()

        print(f"mediapipe {mediapipe.__version__}, {os.cpu_count()} CPUs, {estimator.describe()}; {args.frames} "
              f"frames {SIZE[0]}x{SIZE[1]} JPEG, {args.repeats} back-to-back pairs")  # fmt: skip
        print(f"{'stage':<12} {'frames':>6} {'stage f/s':>11} {'bare f/s':>10} {'ratio':>6} {'best':>6} "
              f"{'prepare f/s':>13}  (goal: ratio >= {GOAL})")  # fmt: skip
        measure("poses/photo", len(photos), lambda: estimate_poses(photos, estimator, load), bare_image,
                args.repeats, prepare_s)  # fmt: skip
        measure("poses/video", len(video), lambda: estimate_poses(video, estimator, load), bare_video,
                args.repeats, prepare_s)  # fmt: skip
        measure("quality", len(photos), lambda: score_frames(photos, estimator, load, 70.0), bare_image,
                args.repeats, prepare_s)  # fmt: skip
        hands.close()
        pose.close()


if __name__ == "__main__":
    main()
