"""Pose estimator: MediaPipe Tasks PoseLandmarker (33 body landmarks) and HandLandmarker (21 per hand).

Bundles (``.task`` files) are found by path, else in a cache folder, else downloaded once from MediaPipe's model
storage. Landmarkers are built on first use, once per process: MediaPipe 1.x funnels every call of a task through
its own single dispatcher thread, so one landmarker is safe to share between threads (calls run one at a time and
release the GIL, so frames decode on other threads meanwhile). VIDEO mode needs strictly increasing timestamps and
can't be rewound: every video sequence gets landmarkers of its own. Results are plain numpy dataclasses.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import tempfile
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
import numpy as np

from resources.models.base import ModelUnavailableError, cached

if TYPE_CHECKING:
    from PIL import Image

POSE_URL = (
    "https://storage.googleapis.com/mediapipe-models/pose_landmarker/pose_landmarker_{variant}/float16/latest/"
    "pose_landmarker_{variant}.task"
)
HAND_URL = (
    "https://storage.googleapis.com/mediapipe-models/hand_landmarker/hand_landmarker/float16/latest/"
    "hand_landmarker.task"
)
POSE_LANDMARKS, HAND_LANDMARKS = 33, 21
# a result as table columns (``poses``, and ``quality_scores``, whose photo landmarks poses reuses)
LANDMARK_COLUMNS = (
    "image_width", "image_height", "pose_found", "pose_landmarks", "pose_world_landmarks",
    "left_hand", "left_hand_score", "right_hand", "right_hand_score",
)  # fmt: skip
NOSE, LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_WRIST, RIGHT_WRIST = 0, 11, 12, 15, 16


@dataclass(frozen=True)
class HandLandmarks:
    """One hand: ``landmarks`` (21, 3) float32 x, y normalised to the image, z depth relative to the wrist."""

    landmarks: np.ndarray
    handedness: str  # "Left" or "Right": the subject's hand, as MediaPipe labels it
    score: float  # handedness confidence 0-1


@dataclass(frozen=True)
class PoseResult:
    """Landmarks of one image: the best pose (or none) and up to ``num_hands`` hands."""

    width: int
    height: int
    landmarks: np.ndarray | None = None  # (33, 4) float32: x, y normalised, z, visibility
    world_landmarks: np.ndarray | None = None  # (33, 3) float32 metres, hip-centred
    hands: tuple[HandLandmarks, ...] = ()

    @property
    def pose_found(self) -> bool:
        return self.landmarks is not None

    @property
    def visibility(self) -> float | None:
        """Mean visibility of the 33 pose landmarks; None without a pose."""
        return None if self.landmarks is None else float(self.landmarks[:, 3].mean())

    def hand(self, side: str) -> HandLandmarks | None:
        """The most confident hand labelled ``side`` ("Left" or "Right")."""
        found = [hand for hand in self.hands if hand.handedness == side]
        return max(found, key=lambda hand: hand.score) if found else None

    def columns(self) -> dict[str, Any]:
        """The result as ``LANDMARK_COLUMNS``: landmarks as flat float lists, None where nothing was found."""
        left, right = self.hand("Left"), self.hand("Right")
        return {
            "image_width": self.width,
            "image_height": self.height,
            "pose_found": self.pose_found,
            "pose_landmarks": _flat(self.landmarks),
            "pose_world_landmarks": _flat(self.world_landmarks),
            "left_hand": _flat(left.landmarks) if left else None,
            "left_hand_score": left.score if left else None,
            "right_hand": _flat(right.landmarks) if right else None,
            "right_hand_score": right.score if right else None,
        }


def _flat(values: np.ndarray | None) -> list[float] | None:
    return None if values is None else values.reshape(-1).tolist()


@dataclass(frozen=True)
class PreparedImage:
    """A decoded frame in MediaPipe's image type, made on a worker thread ahead of inference."""

    image: Any  # mediapipe.Image (SRGB)
    width: int
    height: int


def prepare_image(image: Image.Image | np.ndarray) -> PreparedImage:
    """An RGB PIL image or HxWx3 uint8 array as MediaPipe input (copied once; safe on any thread)."""
    import mediapipe as mp

    pixels = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {pixels.shape}")
    height, width = pixels.shape[:2]
    return PreparedImage(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels), width, height)


def to_result(pose: Any, hands: Any, width: int, height: int) -> PoseResult:
    """Plain arrays from MediaPipe result objects (so no MediaPipe object leaves this module)."""
    landmarks = world = None
    if pose.pose_landmarks:
        landmarks = np.array([(p.x, p.y, p.z, p.visibility or 0.0) for p in pose.pose_landmarks[0]], np.float32)
        world = np.array([(p.x, p.y, p.z) for p in pose.pose_world_landmarks[0]], np.float32)
    found = tuple(
        HandLandmarks(
            np.array([(p.x, p.y, p.z) for p in points], np.float32), labels[0].category_name, float(labels[0].score)
        )
        for points, labels in zip(hands.hand_landmarks, hands.handedness, strict=True)
    )
    return PoseResult(width, height, landmarks, world, found)


def close_at_exit(*landmarkers: Any) -> None:
    """Close landmarkers when the interpreter exits, early enough for it to work.

    MediaPipe dispatches every call, ``close`` included, to a ThreadPoolExecutor, and executors refuse work once
    ``concurrent.futures`` shuts them down at exit, before ``atexit`` handlers run; a landmarker left open then
    fails noisily in ``__del__``. threading's exit hooks run in reverse order of registration, so one registered
    now runs before the executors' shutdown (plain ``atexit`` is the fallback).
    """
    register = getattr(threading, "_register_atexit", atexit.register)
    for landmarker in landmarkers:
        register(landmarker.close)


def download_bundle(url: str, target: Path, timeout_s: float) -> Path:
    """Download a bundle to ``target`` atomically (a temporary file renamed into place); returns ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as response:
            while block := response.read(1 << 20):
                out.write(block)
        if not zipfile.is_zipfile(tmp):  # a .task bundle is a zip archive; an HTML error page is not
            raise ValueError("the download is not a MediaPipe .task bundle (not a zip archive)")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class VideoSequence:
    """Landmarkers in VIDEO mode for one sequence of frames; timestamps (ms) must strictly increase."""

    def __init__(self, pose: Any, hands: Any) -> None:
        self._pose, self._hands, self._last_ms = pose, hands, None

    def detect(self, image: PreparedImage | Image.Image | np.ndarray, timestamp_ms: int) -> PoseResult:
        if self._last_ms is not None and timestamp_ms <= self._last_ms:
            raise ValueError(f"video timestamps must increase: {timestamp_ms} ms after {self._last_ms} ms")
        self._last_ms = timestamp_ms
        prepared = image if isinstance(image, PreparedImage) else prepare_image(image)
        pose = self._pose.detect_for_video(prepared.image, timestamp_ms)
        hands = self._hands.detect_for_video(prepared.image, timestamp_ms)
        return to_result(pose, hands, prepared.width, prepared.height)


class PoseEstimator(dg.ConfigurableResource):
    """33 pose landmarks (with world coordinates) and up to ``num_hands`` hands of 21 landmarks per image."""

    pose_model_path: str | None = None  # a pose_landmarker .task file; None: the cache, else a download
    hand_model_path: str | None = None  # a hand_landmarker .task file; None: the cache, else a download
    pose_variant: Literal["full", "lite", "heavy"] = "full"
    cache_dir: str | None = None  # None: ~/.cache/visual-mining/mediapipe
    offline: bool = False  # never download; a bundle must be given or cached
    pose_url: str = POSE_URL  # ``{variant}`` is filled in
    hand_url: str = HAND_URL
    download_timeout_s: float = 60.0
    num_poses: int = 1
    num_hands: int = 2
    min_detection_confidence: float = 0.5
    min_presence_confidence: float = 0.5
    min_tracking_confidence: float = 0.5

    def _bundle(self, given: str | None, name: str, url: str, field: str) -> Path:
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise ModelUnavailableError(f"pose estimator: {field}={given!r} is not a file")
            return path.resolve()
        folder = Path(self.cache_dir).expanduser() if self.cache_dir else Path.home() / ".cache/visual-mining/mediapipe"
        target = folder / name
        how = f"download {url} where there is network and set {field} to the file (or put it in {folder})"
        if self.offline:
            if target.is_file():
                return target
            raise ModelUnavailableError(
                f"pose estimator: the MediaPipe bundle {name} is not in {folder} and offline is on; {how}"
            )

        def fetch() -> Path:  # once per process; threads wait for the first download
            if target.is_file():
                return target
            try:
                return download_bundle(url, target, self.download_timeout_s)
            except Exception as error:
                raise ModelUnavailableError(
                    f"pose estimator: the MediaPipe bundle {name} is not in {folder} and "
                    f"could not be downloaded from {url} ({error}); {how}"
                ) from error

        return cached(("mediapipe-bundle", str(target), url), fetch)

    def bundle_paths(self) -> tuple[Path, Path]:
        """(pose bundle, hand bundle), downloading a missing one once into the cache folder."""
        pose_name = f"pose_landmarker_{self.pose_variant}.task"
        pose_url = self.pose_url.format(variant=self.pose_variant)
        return (
            self._bundle(self.pose_model_path, pose_name, pose_url, "pose_model_path"),
            self._bundle(self.hand_model_path, "hand_landmarker.task", self.hand_url, "hand_model_path"),
        )

    def describe(self) -> str:
        """The bundles and their sha256 prefixes, recorded beside every output (``mediapipe:pose_...@abc...``)."""
        parts = []
        for path in self.bundle_paths():
            stat = path.stat()
            digest = cached(("sha256", str(path), stat.st_size, stat.st_mtime_ns), lambda p=path: _sha256(p))
            parts.append(f"{path.name}@{digest[:12]}")
        return "mediapipe:" + "+".join(parts)

    def _create(self, video: bool, pose_path: Path, hand_path: Path) -> tuple[Any, Any]:
        from mediapipe.tasks.python import BaseOptions, vision

        mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
        pose = vision.PoseLandmarker.create_from_options(
            vision.PoseLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(pose_path)),
                running_mode=mode,
                num_poses=self.num_poses,
                min_pose_detection_confidence=self.min_detection_confidence,
                min_pose_presence_confidence=self.min_presence_confidence,
                min_tracking_confidence=self.min_tracking_confidence,
            )
        )
        hands = vision.HandLandmarker.create_from_options(
            vision.HandLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(hand_path)),
                running_mode=mode,
                num_hands=self.num_hands,
                min_hand_detection_confidence=self.min_detection_confidence,
                min_hand_presence_confidence=self.min_presence_confidence,
                min_tracking_confidence=self.min_tracking_confidence,
            )
        )
        return pose, hands

    def _image_landmarkers(self) -> tuple[Any, Any]:
        paths = self.bundle_paths()  # resolved outside the factory: `cached` does not nest

        def build() -> tuple[Any, Any]:
            pose, hands = self._create(False, *paths)
            close_at_exit(pose, hands)
            return pose, hands

        options = (
            self.num_poses,
            self.num_hands,
            self.min_detection_confidence,
            self.min_presence_confidence,
            self.min_tracking_confidence,
        )
        return cached(("mediapipe-image", *map(str, paths), *options), build)

    def load(self) -> None:
        """Build the IMAGE-mode landmarkers now (else on the first ``detect``)."""
        self._image_landmarkers()

    def prepare(self, images: list[Image.Image | np.ndarray]) -> list[PreparedImage]:
        """MediaPipe inputs for decoded RGB images; meant for worker threads while another frame is inferred."""
        return [prepare_image(image) for image in images]

    def detect(self, image: PreparedImage | Image.Image | np.ndarray) -> PoseResult:
        """Pose and hands of one photo (IMAGE mode: every image on its own)."""
        prepared = image if isinstance(image, PreparedImage) else prepare_image(image)
        pose, hands = self._image_landmarkers()
        return to_result(pose.detect(prepared.image), hands.detect(prepared.image), prepared.width, prepared.height)

    @contextlib.contextmanager
    def video(self) -> Iterator[VideoSequence]:
        """Fresh VIDEO-mode landmarkers for one sequence (tracking from frame to frame), closed afterwards."""
        pose, hands = self._create(True, *self.bundle_paths())
        try:
            yield VideoSequence(pose, hands)
        finally:
            hands.close()
            pose.close()
