"""The 0-100 quality score of a frame as a pose-training sample: pure functions, no model, no Dagster.

Formula (B = mean luma 0-255, C = luma standard deviation, S = variance of the Laplacian of the luma, all of the
frame as stored; luma = BT.601 grey; clip(x) = min(max(x, 0), 1)):

    pose        = 50 * clip(mean visibility of the 33 pose landmarks)      (0 when no pose is found)
    hands       = 10 * clip(handedness score), summed over the hands found (at most 2)
    lighting    = 15 * clip((128 - |B - 128|) / 64) * clip(C / 40)
                  (full marks for B in 64-192 with C >= 40; too dark, too bright or flat images lose points)
    sharpness   = 10 * clip(S / 100)
    resolution  =  5 * clip(megapixels / 2)
    score       = pose + hands + lighting + sharpness + resolution          (0-100)
    rating      = excellent if score >= 85, good if >= 70, fair if >= 50, else poor
    accepted    = score >= threshold (default 70)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

POSE_MAX, HANDS_MAX, LIGHTING_MAX, SHARPNESS_MAX, RESOLUTION_MAX = 50.0, 20.0, 15.0, 10.0, 5.0
POINTS_PER_HAND = 10.0
MAX_HANDS = 2
FULL_EXPOSURE_HALF_WIDTH = 64.0  # B within 128 +/- 64 gets full exposure marks
FULL_CONTRAST = 40.0  # luma std at which contrast gets full marks
FULL_SHARPNESS = 100.0  # variance of the Laplacian at which sharpness saturates (below ~100 reads as blurred)
FULL_MEGAPIXELS = 2.0
RATINGS = ((85.0, "excellent"), (70.0, "good"), (50.0, "fair"))
RATING_NAMES = ("excellent", "good", "fair", "poor")
DEFAULT_THRESHOLD = 70.0


def clip01(value: float) -> float:
    return float(min(max(value, 0.0), 1.0))


@dataclass(frozen=True)
class ImageMeasures:
    """What the lighting, sharpness and resolution points are computed from."""

    brightness: float  # mean luma 0-255
    contrast: float  # luma standard deviation
    sharpness: float  # variance of the Laplacian of the luma
    megapixels: float


@dataclass(frozen=True)
class QualityScore:
    score: float
    rating: str
    accepted: bool
    threshold: float
    pose_points: float
    hand_points: float
    lighting_points: float
    sharpness_points: float
    resolution_points: float


def image_measures(rgb: np.ndarray) -> ImageMeasures:
    """Brightness, contrast, sharpness and size of an HxWx3 uint8 RGB image (OpenCV; safe on worker threads)."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    mean, std = cv2.meanStdDev(grey)
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    height, width = grey.shape
    return ImageMeasures(float(mean[0, 0]), float(std[0, 0]), sharpness, width * height / 1e6)


def pose_points(visibility: float | None) -> float:
    """0-50: mean landmark visibility of the best pose; 0 without a pose."""
    return 0.0 if visibility is None else POSE_MAX * clip01(visibility)


def hand_points(hand_scores: Sequence[float]) -> float:
    """0-20: 10 per hand found (at most 2, the most confident), scaled by its handedness score."""
    best = sorted((clip01(score) for score in hand_scores), reverse=True)[:MAX_HANDS]
    return POINTS_PER_HAND * sum(best)


def lighting_points(brightness: float, contrast: float) -> float:
    """0-15: exposure (mean luma near the middle) times contrast (luma spread)."""
    exposure = clip01((128.0 - abs(brightness - 128.0)) / FULL_EXPOSURE_HALF_WIDTH)
    return LIGHTING_MAX * exposure * clip01(contrast / FULL_CONTRAST)


def sharpness_points(sharpness: float) -> float:
    """0-10: variance of the Laplacian, saturating at 100."""
    return SHARPNESS_MAX * clip01(sharpness / FULL_SHARPNESS)


def resolution_points(megapixels: float) -> float:
    """0-5: megapixels, saturating at 2 MP."""
    return RESOLUTION_MAX * clip01(megapixels / FULL_MEGAPIXELS)


def rating(score: float) -> str:
    """excellent >= 85, good >= 70, fair >= 50, else poor."""
    return next((name for floor, name in RATINGS if score >= floor), "poor")


def quality_score(
    visibility: float | None,
    hand_scores: Sequence[float],
    measures: ImageMeasures,
    threshold: float = DEFAULT_THRESHOLD,
) -> QualityScore:
    """The frame's score, its parts, its rating and whether it reaches the threshold."""
    parts = (
        pose_points(visibility),
        hand_points(hand_scores),
        lighting_points(measures.brightness, measures.contrast),
        sharpness_points(measures.sharpness),
        resolution_points(measures.megapixels),
    )
    score = float(sum(parts))
    return QualityScore(score, rating(score), score >= threshold, threshold, *parts)
