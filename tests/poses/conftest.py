"""Fixtures for the pose stages: the real MediaPipe bundles from ../shared, a real photo of a person, and the
Dagster resources with a PoseEstimator pointed at those bundles (offline: nothing is downloaded)."""

from pathlib import Path

import pytest
from PIL import Image

from resources.models.pose import PoseEstimator

# the shared folder sits beside the repository: <root>/../shared
SHARED = Path(__file__).resolve().parents[2].parent / "shared"
BUNDLES = SHARED / "models" / "mediapipe"
BUNDLE_FILES = ("pose_landmarker_full.task", "pose_landmarker_lite.task", "hand_landmarker.task")


@pytest.fixture(scope="session")
def bundles() -> Path:
    """The folder of real MediaPipe bundles; tests that need them skip when it is absent."""
    missing = [name for name in BUNDLE_FILES if not (BUNDLES / name).is_file()]
    if missing:
        pytest.skip(f"MediaPipe bundles {missing} not found in {BUNDLES} (../shared beside the repository)")
    return BUNDLES


@pytest.fixture(scope="session")
def person_photo() -> Image.Image:
    """Grace Hopper's portrait (512x600, head and shoulders, hands out of view) from matplotlib's sample data."""
    cbook = pytest.importorskip("matplotlib.cbook", reason="matplotlib (its sample data holds the person photo)")
    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        return Image.open(handle).convert("RGB")


@pytest.fixture
def pose_estimator(bundles, tmp_path) -> PoseEstimator:
    return PoseEstimator(
        pose_model_path=str(bundles / "pose_landmarker_full.task"),
        hand_model_path=str(bundles / "hand_landmarker.task"),
        cache_dir=str(tmp_path / "mediapipe-cache"),
        offline=True,
    )


@pytest.fixture
def pose_resources(resources, pose_estimator) -> dict:
    return {**resources, "pose_estimator": pose_estimator}
