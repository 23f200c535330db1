"""Fixtures of the language stages: frames of a keyword seeded into the catalog, and the Gemini resource pointed
at the local stand-in server."""

import pytest
from vision_support import encode, scene, seed_frames

from resources.gemini import GeminiResource

KEY = "gemini-test-key-0123456789"


@pytest.fixture
def gemini_resources(vision_resources, gemini_server, monkeypatch) -> dict:
    """The vision resources (tiny SigLIP included) and Gemini through the local server, with a key set."""
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    gemini = GeminiResource(base_url=gemini_server.url, retry_backoff_seconds=0.01, max_workers=1,
                            warehouse=vision_resources["warehouse"])  # fmt: skip
    return {**vision_resources, "gemini": gemini}


@pytest.fixture
def keyless_resources(vision_resources, monkeypatch) -> dict:
    """The same resources with no Gemini key anywhere: the whole path runs with no external service."""
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    return {**vision_resources, "gemini": GeminiResource(warehouse=vision_resources["warehouse"])}


def photos(count: int, start: int = 0) -> dict[str, bytes]:
    """Distinct pictures, by frame id."""
    return {f"p{start + i}": encode(scene(100 + start + i, size=(120, 80))) for i in range(count)}


@pytest.fixture
def seeded(vision_resources):
    """``seeded(keyword, count, start=0)``: that many distinct photos in the keyword's catalog; its partition key."""

    def seed(keyword: str, count: int, start: int = 0, resources: dict | None = None) -> str:
        return seed_frames(resources or vision_resources, keyword, photos(count, start))

    return seed
