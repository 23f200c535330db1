"""Scores of frames against text prompts, computed once per frame content: the image tower's features are kept
(as shards in the blob store), so a prompt never scored before runs only the text tower."""

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from mining_assets.vision.batches import prepared_batches
from resources.models.text_filter import TextImageFilter

SCORE_COLUMNS = ["frame_sha256", "prompt", "score"]


def score_rows(shas: list[str], prompts: list[str], scores: np.ndarray) -> pd.DataFrame:
    """One row per content and prompt from a (contents, prompts) score matrix."""
    return pd.DataFrame(
        {
            "frame_sha256": np.repeat(shas, len(prompts)),
            "prompt": np.tile(prompts, len(shas)),
            "score": scores.reshape(-1).astype(np.float32),
        }
    )


def score_images(
    frames: list[dict], text_filter: TextImageFilter, load: Callable[[dict], Any], prompts: list[str]
) -> tuple[pd.DataFrame, list[str], np.ndarray, list[tuple[dict, str]]]:
    """Run the image tower on frames (``frame_id``, ``sha256``, ``blob_key``; one per content) and score them
    against the prompts. Returns the scores, the contents and their features (rows in the same order), and the
    frames that could not be read with the reason. Frames load and preprocess on worker threads meanwhile."""
    prompt_embeddings = None  # the model loads only when some frame needs it (not for unreadable ones)
    rows: list[pd.DataFrame] = []
    shas: list[str] = []
    features: list[np.ndarray] = []
    failed: list[tuple[dict, str]] = []
    for batch in prepared_batches(frames, load, text_filter.prepare, text_filter.batch_size):
        failed += batch.failed
        if not batch.items:
            continue
        if prompt_embeddings is None:
            prompt_embeddings = text_filter.encode_prompts(prompts)
        batch_features = text_filter.image_features(batch.inputs)
        batch_shas = [frame["sha256"] for frame in batch.items]
        rows.append(score_rows(batch_shas, prompts, text_filter.score_features(batch_features, prompt_embeddings)))
        shas += batch_shas
        features.append(batch_features)
    scores = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=SCORE_COLUMNS)
    return scores, shas, (np.concatenate(features) if features else np.zeros((0, 0), np.float32)), failed


def score_kept_features(
    shas: list[str], features: np.ndarray, text_filter: TextImageFilter, prompts: list[str]
) -> pd.DataFrame:
    """Scores of contents whose image features were kept: only the prompts go through the model."""
    if not shas:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    return score_rows(shas, prompts, text_filter.score_features(features, text_filter.encode_prompts(prompts)))
