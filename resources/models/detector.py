"""Open-vocabulary detector: boxes for text labels, from Grounding DINO (default), OWLv2, Florence-2 or Moondream."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from resources.models.base import ModelResource, cached, to_device

if TYPE_CHECKING:
    from PIL import Image

FLORENCE_TASK = "<CAPTION_TO_PHRASE_GROUNDING>"
# a box may reach this far beyond the image (a fraction of its longer side) before it counts as the model's error:
# detectors put edges a pixel or so outside an object that touches the border
OUTSIDE_TOLERANCE = 0.01


@dataclass
class Detections:
    """Boxes of one image in pixels (x0, y0, x1, y1), with score and label each: plain data, no framework objects."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    labels: list[str] = field(default_factory=list)
    # what the model returned before clipping and dropping, counted because it is gone from the boxes above: boxes
    # beyond the image by more than OUTSIDE_TOLERANCE (clipped), and degenerate ones (no area, a NaN: dropped)
    raw_outside: int = 0
    raw_degenerate: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_tensors(cls, boxes: Any, scores: Any, labels: list[str | None], width: int, height: int) -> Detections:
        """From a post-processor's tensors; boxes are clipped to the image; empty, unlabelled and NaN ones dropped
        (and what the model returned beyond the image, or degenerate, counted first)."""
        boxes = np.asarray(boxes.detach().float().cpu() if hasattr(boxes, "detach") else boxes, np.float32)
        scores = np.asarray(scores.detach().float().cpu() if hasattr(scores, "detach") else scores, np.float32)
        boxes = boxes.reshape(-1, 4).copy()
        labels = list(labels) if len(boxes) else []  # Grounding DINO names "no box" as [""]
        if len(labels) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
        degenerate = ~(np.isfinite(boxes).all(axis=1) & np.isfinite(scores))
        degenerate |= (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        margin = OUTSIDE_TOLERANCE * max(width, height)
        beyond = (boxes[:, 0] < -margin) | (boxes[:, 1] < -margin)
        beyond |= (boxes[:, 2] > width + margin) | (boxes[:, 3] > height + margin)
        raw = {"raw_outside": int((beyond & ~degenerate).sum()), "raw_degenerate": int(degenerate.sum())}
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        named = np.array([label is not None for label in labels], bool)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & np.isfinite(scores) & named
        return cls(boxes[valid], scores[valid], [label for label, ok in zip(labels, valid, strict=True) if ok], **raw)


def match_label(phrase: str, labels: list[str]) -> str | None:
    """The prompt label a detector's phrase refers to (detectors may return part of a label, or several words of
    different labels: the one sharing most words wins). None when the phrase shares no word with any label and
    there is more than one label to choose from."""
    words = set(re.findall(r"\w+", phrase.lower()))
    best, overlap = None, 0
    for label in labels:
        common = len(words & set(re.findall(r"\w+", label.lower())))
        if common > overlap:
            best, overlap = label, common
    return best or (labels[0] if len(labels) == 1 else None)


@dataclass
class LoadedDetector:
    model: Any
    processor: Any
    device: str
    dtype: Any


class OpenVocabDetector(ModelResource):
    """Finds boxes for text labels. Backends: ``grounding-dino`` (default, base), ``owlv2``, ``florence-2`` and
    ``moondream`` (remote code; loads only where its code and weights are available).

    Florence-2 and Moondream give no confidence: their boxes get score 1.0, so the threshold keeps all of them.
    """

    backend: Literal["grounding-dino", "owlv2", "florence-2", "moondream"] = "grounding-dino"
    batch_size: int = 4

    role: ClassVar[str] = "open-vocabulary detector"
    setting: ClassVar[str] = "MINING_DETECTOR_MODEL"
    default_models: ClassVar[dict[str, str]] = {
        "grounding-dino": "IDEA-Research/grounding-dino-base",
        "owlv2": "google/owlv2-base-patch16-ensemble",
        "florence-2": "florence-community/Florence-2-base",
        "moondream": "vikhyatk/moondream2",
    }

    def load(self) -> LoadedDetector:
        def build() -> LoadedDetector:
            import transformers

            if self.backend == "moondream":
                model = self._load(transformers.AutoModelForCausalLM.from_pretrained, trust_remote_code=True)
                return LoadedDetector(self._place(model), None, self.resolved_device(), self.dtype())
            model_class = {
                "grounding-dino": transformers.GroundingDinoForObjectDetection,
                "owlv2": transformers.Owlv2ForObjectDetection,
                "florence-2": transformers.Florence2ForConditionalGeneration,
            }[self.backend]
            processor = self._load(transformers.AutoProcessor.from_pretrained)
            model = self._place(self._load(model_class.from_pretrained))
            return LoadedDetector(model, processor, self.resolved_device(), self.dtype())

        return cached(self.cache_key(self.backend), build)

    def prepare(self, images: list[Image.Image], labels: list[str]) -> dict[str, Any]:
        """Processor inputs for a batch (CPU work, safe in a worker thread). Moondream takes the images as they are."""
        loaded = self.load()
        if self.backend == "grounding-dino":
            text = " ".join(f"{label.strip().lower()}." for label in labels)
            return dict(loaded.processor(images=images, text=[text] * len(images), padding=True, return_tensors="pt"))
        if self.backend == "owlv2":
            return dict(loaded.processor(text=[labels] * len(images), images=images, return_tensors="pt"))
        if self.backend == "florence-2":
            prompt = FLORENCE_TASK + ", ".join(labels)
            return dict(loaded.processor(text=[prompt] * len(images), images=images, return_tensors="pt"))
        return {"images": images}

    def detect_prepared(
        self, inputs: dict[str, Any], sizes: list[tuple[int, int]], labels: list[str], threshold: float
    ) -> list[Detections]:
        """Detections per image; ``sizes`` are the original (width, height) the boxes are scaled to."""
        import torch

        loaded = self.load()
        with torch.inference_mode():
            if self.backend == "moondream":
                return [self._moondream(loaded, image, labels) for image in inputs["images"]]
            batch = to_device(inputs, loaded.device, loaded.dtype)
            if self.backend == "florence-2":
                return self._florence(loaded, batch, sizes, labels)
            outputs = loaded.model(**batch)
        if self.backend == "grounding-dino":
            results = loaded.processor.post_process_grounded_object_detection(
                outputs,
                batch["input_ids"],
                threshold=threshold,
                text_threshold=threshold,
                target_sizes=[(h, w) for w, h in sizes],
            )
            phrases = [[match_label(p, labels) for p in r["text_labels"]] for r in results]
        else:  # OWLv2 predicts on the image padded to a square: scale to the padded side, then clip
            results = loaded.processor.post_process_grounded_object_detection(
                outputs, threshold=threshold, target_sizes=[(max(w, h), max(w, h)) for w, h in sizes]
            )
            phrases = [[labels[int(i)] for i in r["labels"]] for r in results]
        return [
            Detections.from_tensors(r["boxes"], r["scores"], names, w, h)
            for r, names, (w, h) in zip(results, phrases, sizes, strict=True)
        ]

    def detect(self, images: list[Image.Image], labels: list[str], threshold: float = 0.3) -> list[Detections]:
        sizes = [image.size for image in images]
        return self.detect_prepared(self.prepare(images, labels), sizes, labels, threshold)

    def _florence(
        self, loaded: LoadedDetector, batch: dict[str, Any], sizes: list[tuple[int, int]], labels: list[str]
    ) -> list[Detections]:
        generated = loaded.model.generate(
            input_ids=batch["input_ids"], pixel_values=batch["pixel_values"], max_new_tokens=256, num_beams=1
        )
        texts = loaded.processor.batch_decode(generated, skip_special_tokens=False)
        found = []
        for text, (w, h) in zip(texts, sizes, strict=True):
            parsed = loaded.processor.post_process_generation(text, task=FLORENCE_TASK, image_size=(w, h))
            result = parsed.get(FLORENCE_TASK, {}) if isinstance(parsed, dict) else {}
            boxes = np.asarray(result.get("bboxes", []), np.float32).reshape(-1, 4)
            names = [match_label(p, labels) for p in result.get("labels", [])][: len(boxes)]
            found.append(Detections.from_tensors(boxes[: len(names)], np.ones(len(names), np.float32), names, w, h))
        return found

    def _moondream(self, loaded: LoadedDetector, image: Image.Image, labels: list[str]) -> Detections:
        w, h = image.size
        boxes, names = [], []
        for label in labels:
            for obj in loaded.model.detect(image, label).get("objects", []):
                boxes.append([obj["x_min"] * w, obj["y_min"] * h, obj["x_max"] * w, obj["y_max"] * h])
                names.append(label)
        return Detections.from_tensors(np.asarray(boxes, np.float32), np.ones(len(names), np.float32), names, w, h)
