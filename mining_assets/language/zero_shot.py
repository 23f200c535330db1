"""Zero-shot categories with the text-image filter (SigLIP): each listed category is a text prompt, and an image's
categories are the best-scoring one plus any other at or above a threshold. Image features that filtered_frames
kept for the same content and model are reused, so only the text tower runs for them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mining_assets.vision.prompt_scores import score_images, score_kept_features
from mining_assets.vision.shards import load_vectors

if TYPE_CHECKING:
    from mining_assets.language.category_list import CategoryList
    from resources.blob_store import BlobStore
    from resources.models.text_filter import TextImageFilter


def category_prompts(categories: CategoryList, template: str) -> list[str]:
    """One prompt per listed category, in list order (``template`` holds ``{}`` where the category goes)."""
    return [template.format(name) if "{}" in template else f"{template} {name}" for name in categories.categories]


def chosen(scores: np.ndarray, categories: list[str], threshold: float) -> tuple[list[str], float]:
    """An image's categories from its scores in list order: the best first, then others at ``threshold`` or above,
    best first; and the best score."""
    order = np.argsort(-scores, kind="stable")
    best = int(order[0])
    others = [categories[i] for i in order[1:] if scores[i] >= threshold]
    return [categories[best], *others], float(scores[best])


def zero_shot_scores(
    frames: pd.DataFrame,
    kept: pd.DataFrame,
    text_filter: TextImageFilter,
    blob_store: BlobStore,
    load: Callable[[dict], Any],
    prompts: list[str],
) -> tuple[dict[str, np.ndarray], list[tuple[dict, str]], int]:
    """Scores of each content (``frames``: one row per ``sha256`` with ``frame_id``, ``blob_key``) against the
    prompts, in prompt order; the frames that could not be read, with the reason; and how many contents were
    scored from kept features (``kept``: ``frame_sha256``, ``blob_key``, ``shard_row`` of filter_features)."""
    with_features = kept[kept["frame_sha256"].isin(set(frames["sha256"]))].drop_duplicates("frame_sha256")
    from_kept = score_kept_features(
        list(with_features["frame_sha256"]), load_vectors(blob_store, with_features), text_filter, prompts
    )
    need = frames[~frames["sha256"].isin(set(with_features["frame_sha256"]))]
    from_images, _, _, failed = score_images(need.to_dict("records"), text_filter, load, prompts)
    scores = pd.concat([part for part in (from_kept, from_images) if len(part)] or [from_kept])
    by_content: dict[str, np.ndarray] = {}
    position = {prompt: i for i, prompt in enumerate(prompts)}
    for sha, group in scores.groupby("frame_sha256"):
        vector = np.zeros(len(prompts), np.float32)
        vector[[position[p] for p in group["prompt"]]] = group["score"].to_numpy(np.float32)
        by_content[str(sha)] = vector
    return by_content, failed, len(with_features)
