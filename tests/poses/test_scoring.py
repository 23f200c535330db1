"""The quality formula, part by part, with the numbers the module docstring promises."""

import numpy as np
import pytest

from mining_assets.poses import scoring
from mining_assets.poses.scoring import (
    ImageMeasures,
    hand_points,
    image_measures,
    lighting_points,
    pose_points,
    quality_score,
    rating,
    resolution_points,
    sharpness_points,
)


@pytest.mark.parametrize(
    ("visibility", "points"), [(None, 0.0), (0.0, 0.0), (0.44, 22.0), (1.0, 50.0), (1.3, 50.0), (-0.2, 0.0)]
)
def test_pose_points_scale_with_mean_visibility(visibility, points):
    assert pose_points(visibility) == pytest.approx(points)


@pytest.mark.parametrize(
    ("scores", "points"),
    [([], 0.0), ([0.9], 9.0), ([1.0, 1.0], 20.0), ([0.5, 0.9, 1.0], 19.0), ([1.5], 10.0), ([-1.0], 0.0)],
)
def test_hand_points_count_the_two_best_hands(scores, points):
    assert hand_points(scores) == pytest.approx(points)


@pytest.mark.parametrize(
    ("brightness", "contrast", "points"),
    [
        (128, 40, 15.0),  # mid exposure, enough contrast
        (64, 60, 15.0),  # edges of the full-marks band
        (192, 60, 15.0),
        (32, 40, 7.5),  # too dark
        (224, 40, 7.5),  # too bright
        (0, 80, 0.0),  # black
        (255, 80, 15 / 64),  # nearly white
        (128, 20, 7.5),  # flat
        (128, 0, 0.0),  # one grey
        (32, 20, 3.75),  # dark and flat
    ],
)
def test_lighting_penalises_dark_bright_and_flat(brightness, contrast, points):
    assert lighting_points(brightness, contrast) == pytest.approx(points)


@pytest.mark.parametrize(("variance", "points"), [(0, 0.0), (4.5, 0.45), (50, 5.0), (100, 10.0), (5000, 10.0)])
def test_sharpness_saturates_at_100(variance, points):
    assert sharpness_points(variance) == pytest.approx(points)


@pytest.mark.parametrize(("megapixels", "points"), [(0, 0.0), (0.3072, 0.768), (1, 2.5), (2, 5.0), (12, 5.0)])
def test_resolution_saturates_at_2_megapixels(megapixels, points):
    assert resolution_points(megapixels) == pytest.approx(points)


@pytest.mark.parametrize(
    ("score", "expected"),
    [(100, "excellent"), (85, "excellent"), (84.99, "good"), (70, "good"), (69.99, "fair"), (50, "fair"),
     (49.99, "poor"), (0, "poor")],
)  # fmt: skip
def test_rating_bands(score, expected):
    assert rating(score) == expected


@pytest.mark.parametrize(
    ("visibility", "hands", "measures", "threshold", "score", "label", "accepted"),
    [
        (1.0, [1.0, 1.0], ImageMeasures(128, 50, 500, 2.0), 70, 100.0, "excellent", True),
        # Grace Hopper's portrait: half the body out of view, no hands, well lit and sharp, 512x600
        (0.4397, [], ImageMeasures(77.0, 68.9, 1034, 0.3072), 70, 47.753, "poor", False),
        (0.4397, [], ImageMeasures(77.0, 68.9, 1034, 0.3072), 40, 47.753, "poor", True),
        (None, [], ImageMeasures(128, 0, 0, 0.0768), 70, 0.192, "poor", False),  # a blank grey frame
        (0.8, [0.9], ImageMeasures(100, 45, 80, 1.0), 70, 40 + 9 + 15 + 8 + 2.5, "good", True),
        (1.0, [], ImageMeasures(128, 40, 0, 2.0), 70, 70.0, "good", True),  # exactly at the threshold
    ],
)
def test_quality_score_is_the_sum_of_its_parts(visibility, hands, measures, threshold, score, label, accepted):
    result = quality_score(visibility, hands, measures, threshold)
    assert result.score == pytest.approx(score, abs=1e-3)
    assert result.score == pytest.approx(
        result.pose_points + result.hand_points + result.lighting_points + result.sharpness_points
        + result.resolution_points
    )  # fmt: skip
    assert (result.rating, result.accepted, result.threshold) == (label, accepted, threshold)
    assert 0 <= result.score <= 100


def test_image_measures_of_known_images():
    grey = np.full((480, 640, 3), 128, np.uint8)
    measured = image_measures(grey)
    assert (measured.brightness, measured.contrast, measured.sharpness) == (128.0, 0.0, 0.0)
    assert measured.megapixels == pytest.approx(0.3072)

    board = np.kron((np.indices((24, 32)).sum(axis=0) % 2) * 255, np.ones((20, 20))).astype(np.uint8)
    board = np.repeat(board[:, :, None], 3, axis=2)
    sharp = image_measures(board)
    assert sharp.brightness == pytest.approx(127.5) and sharp.contrast == pytest.approx(127.5)
    assert sharpness_points(sharp.sharpness) == 10.0

    import cv2

    blurred = image_measures(cv2.GaussianBlur(board, (0, 0), 8))
    assert blurred.sharpness < sharp.sharpness / 50
    dark = image_measures((board * 0.1).astype(np.uint8))
    assert lighting_points(dark.brightness, dark.contrast) < 2.0


def test_points_add_up_to_100():
    assert sum((scoring.POSE_MAX, scoring.HANDS_MAX, scoring.LIGHTING_MAX, scoring.SHARPNESS_MAX,
                scoring.RESOLUTION_MAX)) == 100  # fmt: skip
