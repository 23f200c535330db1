"""filtered_frames: every frame scored against the keyword's text prompts; frames at or above the threshold pass."""

from collections.abc import Callable
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from mining_assets.checks import nothing_passed, output_check, output_spec
from mining_assets.frames import frames
from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions
from mining_assets.pools import VISION_MODELS
from mining_assets.retries import STEP_RETRY
from mining_assets.vision.batches import prepared_batches
from mining_assets.vision.common import frame_loader
from mining_assets.vision.images import MIN_SIDE
from mining_assets.warehouse import (
    keyword_text,
    record_errors,
    replace_partition_rows,
    table_definition_metadata,
    table_report,
    unique_key_spec,
)
from resources.blob_store import BlobStore
from resources.models.text_filter import TextImageFilter
from resources.warehouse import Warehouse

OWNED_TABLES = ["filtered_frames", "frame_scores", "prompt_sets"]


class FilterConfig(dg.Config):
    classes: list[str] = []  # more classes scored beside the keyword; they are also the detector's labels
    captions: list[str] = []  # free-text captions, scored as written
    include_keyword: bool = True
    template: str = "a photo of {}."  # how the keyword and classes are put to the model
    threshold: float = 0.25  # a frame passes when its best score reaches this
    rescore: bool = False  # ignore stored scores and run the model on every frame
    min_side: int = MIN_SIDE


def prompt_set(keyword: str, config: FilterConfig) -> list[tuple[str, str, str]]:
    """(kind, label, prompt) for every distinct prompt, keyword first; blank entries are ignored."""
    entries = [("class", keyword)] if config.include_keyword else []
    entries += [("class", text) for text in config.classes] + [("caption", text) for text in config.captions]
    prompts, seen = [], set()
    for kind, label in entries:
        label = " ".join(label.split())
        prompt = config.template.format(label) if kind == "class" and "{}" in config.template else label
        if label and prompt not in seen:
            seen.add(prompt)
            prompts.append((kind, label, prompt))
    return prompts


def best_scores(scores: pd.DataFrame, prompts: list[str], threshold: float, model: str) -> pd.DataFrame:
    """One row per frame scored on every current prompt (``scores``: ``frame_id``, ``frame_sha256``, ``prompt``,
    ``score``): its content, best prompt and score, and whether it passes."""
    current = scores[scores["prompt"].isin(prompts)]
    complete = current.groupby("frame_id")["prompt"].transform("nunique") == len(prompts)
    current = current[complete]
    best = current.loc[current.groupby("frame_id")["score"].idxmax()] if len(current) else current
    return pd.DataFrame(
        {
            "frame_id": best["frame_id"],
            "frame_sha256": best["frame_sha256"],
            "best_prompt": best["prompt"],
            "best_score": best["score"].astype(np.float32),
            "passed": best["score"] >= threshold,
            "threshold": threshold,
            "model": model,
        }
    ).reset_index(drop=True)


def score_frames(
    frames: list[dict], text_filter: TextImageFilter, load: Callable[[dict], Any], prompts: list[str]
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Scores of frames (``frame_id``, ``sha256``, ``blob_key``) against prompts, one row per frame and prompt, and
    the frames that could not be read with the reason. Frames load and preprocess on worker threads meanwhile."""
    prompt_embeddings = None  # the model loads only when some frame needs it (not for unreadable ones)
    rows: list[pd.DataFrame] = []
    errors: list[tuple[str, str]] = []
    for batch in prepared_batches(frames, load, text_filter.prepare, text_filter.batch_size):
        errors += [(frame["frame_id"], reason) for frame, reason in batch.failed]
        if not batch.items:
            continue
        if prompt_embeddings is None:
            prompt_embeddings = text_filter.encode_prompts(prompts)
        scores = text_filter.score_prepared(batch.inputs, prompt_embeddings)
        rows.append(
            pd.DataFrame(
                {
                    "frame_id": np.repeat([frame["frame_id"] for frame in batch.items], len(prompts)),
                    "frame_sha256": np.repeat([frame["sha256"] for frame in batch.items], len(prompts)),
                    "prompt": np.tile(prompts, len(batch.items)),
                    "score": scores.reshape(-1),
                }
            )
        )
    columns = ["frame_id", "frame_sha256", "prompt", "score"]
    return (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)), errors


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    deps=[frames],
    group_name="vision",
    kinds={"pytorch", "duckdb"},
    pool=VISION_MODELS,
    metadata=table_definition_metadata("filtered_frames"),
    check_specs=[
        dg.AssetCheckSpec(
            "every_frame_accounted",
            asset="filtered_frames",
            description="Every catalogued frame has a score on every prompt, or a recorded reason.",
        ),
        unique_key_spec("filtered_frames", OWNED_TABLES),
        output_spec("filtered_frames", "frame that passed the threshold"),
    ],
)
def filtered_frames(
    context: dg.AssetExecutionContext,
    config: FilterConfig,
    text_filter: TextImageFilter,
    blob_store: BlobStore,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """Frames scored against the keyword's prompts (SigLIP sigmoid); all scores kept, those at the threshold pass."""
    partition_key = context.partition_key
    model = text_filter.describe()
    for attempt in warehouse.retrying():
        with attempt as conn:
            keyword = keyword_text(conn, partition_key)
            catalog = conn.execute(
                "SELECT frame_id, blob_key, sha256 FROM frames WHERE partition_key = ? ORDER BY frame_id",
                [partition_key],
            ).df()
            stored = conn.execute(
                "SELECT frame_id, frame_sha256, prompt, score FROM frame_scores WHERE partition_key = ? AND model = ?",
                [partition_key, model],
            ).df()
    prompts = prompt_set(keyword, config)
    texts = [prompt for _, _, prompt in prompts]
    errors: list[tuple[str, str]] = []

    # scores of the same image content are reused; only frames missing a current prompt go to the model
    stored = stored.merge(catalog[["frame_id", "sha256"]], left_on=["frame_id", "frame_sha256"],
                          right_on=["frame_id", "sha256"]).drop(columns="sha256")  # fmt: skip
    if config.rescore:
        stored = stored[~stored["prompt"].isin(texts)]
    have = stored[stored["prompt"].isin(texts)].groupby("frame_id")["prompt"].nunique()
    todo = catalog[catalog["frame_id"].map(have).fillna(0) < len(texts)] if texts else catalog.iloc[:0]
    fresh = pd.DataFrame()
    if not texts:
        errors.append((partition_key, "no prompts to score against: the keyword is excluded and no classes or "
                                      "captions were given"))  # fmt: skip
    elif len(todo):
        fresh, failed = score_frames(
            todo.to_dict("records"), text_filter, frame_loader(blob_store, config.min_side), texts
        )
        errors += failed
    fresh = fresh if len(fresh) else stored.iloc[:0]
    kept = stored.merge(fresh[["frame_id", "prompt"]], on=["frame_id", "prompt"], how="left", indicator=True)
    all_scores = pd.concat([kept[kept["_merge"] == "left_only"].drop(columns="_merge"), fresh], ignore_index=True)
    all_scores = all_scores.assign(partition_key=partition_key, model=model)
    result = best_scores(all_scores, texts, config.threshold, model).assign(partition_key=partition_key)
    prompt_rows = pd.DataFrame(prompts, columns=["kind", "label", "prompt"]).assign(partition_key=partition_key)

    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            replace_partition_rows(conn, "frame_scores", partition_key, all_scores, "AND model = ?", [model])
            replace_partition_rows(conn, "filtered_frames", partition_key, result)
            replace_partition_rows(conn, "prompt_sets", partition_key, prompt_rows)
            record_errors(conn, partition_key, "filtered_frames", errors)
            stored_metadata, unique_key = table_report(conn, partition_key, "filtered_frames", OWNED_TABLES)

    for item, reason in errors[:20]:
        context.log.warning(f"{item}: {reason}")
    passed = int(result["passed"].sum())
    with_reason = {item for item, _ in errors if item != partition_key}
    unaccounted = sorted(set(catalog["frame_id"]) - set(result["frame_id"]) - with_reason)
    top = result.sort_values(["best_score", "frame_id"], ascending=[False, True]).head(10)
    return dg.MaterializeResult(
        metadata={
            **stored_metadata,
            "frames": len(catalog),
            "scored_now": len(fresh) // max(1, len(texts)),
            "scores_reused": len(catalog) - len(todo) if texts else 0,
            "passed": passed,
            "failed": len(errors),
            "threshold": config.threshold,
            "model": model,
            "prompts": dg.MetadataValue.json([{"kind": k, "label": lbl, "prompt": p} for k, lbl, p in prompts]),
            "problems": dg.MetadataValue.json([{"item": i, "reason": r} for i, r in errors[:50]]),
            "top_frames": dg.MetadataValue.md(
                markdown_table(["frame_id", "best_prompt", "best_score", "passed"], top.values[:, :4].tolist())
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="every_frame_accounted",
                passed=not unaccounted or not texts,
                metadata={
                    "frames_without_score_or_reason": len(unaccounted),
                    "examples": dg.MetadataValue.json(unaccounted[:10]),
                },
            ),
            unique_key,
            output_check(
                len(catalog), passed, nothing_passed(result["best_score"], config.threshold, errors), "frames"
            ),
        ],
    )
