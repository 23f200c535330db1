"""Benchmark the model stages (filter, embedder, detector) against a bare forward pass of the same model.

For each role the stage's own loop (``score_images``, ``embed_frames``, ``detect_frames``: JPEG frames fetched from a
blob store, decoded, resized and normalised on worker threads while the model runs) is timed over ``--frames``
640x480 JPEG frames, and so is a bare forward pass of the same model on already-prepared inputs at the same batch
size, for the same number of batches. Runs alternate stage / bare, ``--repeats`` times; the ratio printed is the
median of the pairs' ratios (goal: >= 0.85). ``prepare`` is the decode+preprocess rate of one worker thread, to
show how much headroom the feeding side has.

Models are random weights of the real architectures (``--size base``: SigLIP base, DINOv2 base, Grounding DINO at
the sizes random_weights builds); ``--size tiny`` runs in seconds as a smoke test.

    .venv/bin/python bench/models.py [--size base|tiny] [--device auto] [--frames 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

GOAL = 0.85


def make_frames(store, count: int) -> list[dict]:
    """Noisy 640x480 JPEG frames in the blob store, as the catalog would list them."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = []
    for i in range(count):
        base = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((640, 480), Image.BILINEAR)
        noisy = np.asarray(image, np.int16) + rng.integers(-12, 12, (480, 640, 3))
        buffer = io.BytesIO()
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        data = buffer.getvalue()
        key = f"frames/bench/f{i:05d}.jpg"
        store.put_bytes(key, data)
        frames.append({"frame_id": f"f{i:05d}", "blob_key": key, "sha256": hashlib.sha256(data).hexdigest()})
    return frames


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def roles(models: dict[str, str], device: str, batch: int, detector_batch: int):
    """(name, resource, stage(frames, load), bare(inputs)) for each role."""
    import torch

    from mining_assets.vision.detections import detect_frames
    from mining_assets.vision.embeddings import embed_frames
    from mining_assets.vision.prompt_scores import score_images
    from resources.models.base import to_device
    from resources.models.detector import OpenVocabDetector
    from resources.models.embedder import ImageEmbedder
    from resources.models.text_filter import TextImageFilter

    prompts = ["a photo of a glass door.", "a photo of a door handle."]
    text_filter = TextImageFilter(backend="siglip", model_id=models["siglip"], device=device, batch_size=batch)
    embedder = ImageEmbedder(model_id=models["dinov2"], device=device, batch_size=batch)
    detector = OpenVocabDetector(model_id=models["grounding-dino"], device=device, batch_size=detector_batch)

    def forward(resource, call):
        def bare(inputs):
            loaded = resource.load()
            with torch.inference_mode():
                call(loaded.model, to_device(inputs, loaded.device, loaded.dtype))
            synchronize(loaded.device)

        return bare

    def run(stage):
        def go(frames, load):
            stage(frames, load)
            synchronize(device)

        return go

    return [
        (
            "filter",
            text_filter,
            lambda images: text_filter.prepare(images),
            run(lambda frames, load: score_images(frames, text_filter, load, prompts)),
            forward(text_filter, lambda model, inputs: model.get_image_features(**inputs)),
        ),
        (
            "embedder",
            embedder,
            lambda images: embedder.prepare(images),
            run(lambda frames, load: embed_frames(frames, embedder, load)),
            forward(embedder, lambda model, inputs: model(**inputs)),
        ),
        (
            "detector",
            detector,
            lambda images: detector.prepare(images, ["glass door", "door handle"]),
            run(lambda frames, load: detect_frames(frames, detector, load, ["glass door", "door handle"], 0.3)),
            forward(detector, lambda model, inputs: model(**inputs)),
        ),
    ]


def measure(name, frames, load, batch, prepare, stage, bare, repeats) -> None:
    """Time the stage and the bare forward pass in alternating pairs and print one row."""
    inputs = prepare([load(frame) for frame in frames[:batch]])
    batches = math.ceil(len(frames) / batch)
    bare(inputs)  # warm up: weights loaded, kernels chosen (the stage uses the same loaded model)
    prepare_s = timed(lambda: prepare([load(frame) for frame in frames[:batch]])) / batch
    ratios, stage_rates, bare_rates = [], [], []
    for _ in range(repeats):
        stage_s = timed(lambda: stage(frames, load))
        bare_s = timed(lambda: [bare(inputs) for _ in range(batches)])
        stage_rates.append(len(frames) / stage_s)
        bare_rates.append(batches * batch / bare_s)
        ratios.append(stage_rates[-1] / bare_rates[-1])
    ratio = statistics.median(ratios)
    best = max(stage_rates) / max(bare_rates)
    print(f"{name:<9} {batch:>5} {len(frames):>6} {statistics.median(stage_rates):>11.2f} "
          f"{statistics.median(bare_rates):>10.2f} {ratio:>6.2f} {best:>6.2f} {1 / prepare_s:>13.1f}  "
          f"{'ok' if ratio >= GOAL else 'below goal'}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["base", "tiny"], default="base")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=32, help="frames per timed run (filter, embedder)")
    parser.add_argument("--detector-frames", type=int, default=2, help="Grounding DINO base: ~50 s a frame on 2 cores")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--detector-batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--detector-repeats", type=int, default=1)
    args = parser.parse_args()

    import torch

    from mining_assets.vision.common import frame_loader
    from resources.blob_store import LocalBlobStore
    from resources.models.base import pick_device
    from resources.models.random_weights import build_random_model

    device = pick_device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        store = LocalBlobStore(root=f"{tmp}/blobs")
        frames = make_frames(store, max(args.frames, args.detector_frames))
        load = frame_loader(store, 32)
        started = time.perf_counter()
        models = {
            name: str(build_random_model(name, Path(tmp) / name, size=args.size))
            for name in ("siglip", "dinov2", "grounding-dino")
        }
        built = time.perf_counter() - started
        print(f"device {device}, torch threads {torch.get_num_threads()}, {args.size} random weights (built in "
              f"{built:.0f} s), 640x480 JPEG frames, {args.repeats} paired runs "
              f"({args.detector_repeats} for the detector)")  # fmt: skip
        print(f"{'role':<9} {'batch':>5} {'frames':>6} {'stage img/s':>11} {'bare img/s':>10} {'ratio':>6} "
              f"{'best':>6} {'prepare img/s':>13}  (goal: ratio >= {GOAL})")  # fmt: skip
        for name, resource, prepare, stage, bare in roles(models, device, args.batch, args.detector_batch):
            count = args.detector_frames if name == "detector" else args.frames
            repeats = args.detector_repeats if name == "detector" else args.repeats
            measure(name, frames[:count], load, resource.batch_size, prepare, stage, bare, repeats)


if __name__ == "__main__":
    main()
