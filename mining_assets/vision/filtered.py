"""filtered_frames: every frame scored against the keyword's text prompts; frames at or above the threshold pass."""

import dagster as dg
import numpy as np
import pandas as pd

from mining_assets.checks import nothing_passed, output_check, output_spec
from mining_assets.frames import frame_images, frames
from mining_assets.keyword_settings import stage_config
from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions
from mining_assets.pools import VISION_MODELS
from mining_assets.retries import STEP_RETRY
from mining_assets.vision.common import frame_loader
from mining_assets.vision.images import MIN_SIDE
from mining_assets.vision.prompt_scores import score_images, score_kept_features
from mining_assets.vision.shards import load_vectors, shared_prefix, store_shards
from mining_assets.warehouse import (
    insert_rows,
    keyword_text,
    record_errors,
    replace_partition_rows,
    table_definition_metadata,
    table_report,
    unique_key_spec,
)
from mining_assets.work import model_settings, work_key
from resources.blob_store import BlobStore
from resources.models.text_filter import TextImageFilter
from resources.warehouse import Warehouse

SHARD_ROWS = 8192  # image features per .npy shard
OWNED_TABLES = ["filtered_frames", "frame_scores", "prompt_sets", "filter_features"]


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


def store_features(
    warehouse: Warehouse, blob_store: BlobStore, key: str, model: str, shas: list[str], features: np.ndarray
) -> None:
    """Keep the image features of contents scored now (a shard under ``embeddings/shared.work/<work key>``, and a
    ``filter_features`` row per content not kept yet), shared by every keyword."""
    if not shas:
        return
    shards = store_shards(blob_store, shared_prefix(key), shas, features, SHARD_ROWS)
    rows = shards.rename(columns={"frame_id": "frame_sha256"}).assign(work_key=key, model=model)
    for attempt in warehouse.retrying(lease=f"filter_features:{key}"):
        with attempt as conn:
            conn.register("_new", rows)
            fresh = conn.execute(
                "SELECT * FROM _new WHERE frame_sha256 NOT IN "
                "(SELECT frame_sha256 FROM filter_features WHERE work_key = ?)",
                [key],
            ).df()
            conn.unregister("_new")
            insert_rows(conn, "filter_features", fresh)


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
    config, _ = stage_config(context, config, warehouse)
    partition_key = context.partition_key
    model = text_filter.describe()
    key = work_key(stage="filtered_frames", **model_settings(text_filter))
    contents = "SELECT sha256 FROM frames WHERE partition_key = ?"
    for attempt in warehouse.retrying():
        with attempt as conn:
            keyword = keyword_text(conn, partition_key)
            catalog = frame_images(conn, partition_key)
            # scores and image features of the same content and model, whichever keyword computed them
            known = conn.execute(
                "SELECT frame_sha256, prompt, any_value(score) AS score FROM frame_scores "
                f"WHERE work_key = ? AND frame_sha256 IN ({contents}) GROUP BY ALL",
                [key, partition_key],
            ).df()
            own = conn.execute(
                "SELECT frame_id, frame_sha256, prompt, score FROM frame_scores "
                "WHERE partition_key = ? AND work_key = ?",
                [partition_key, key],
            ).df()
            kept = conn.execute(
                "SELECT frame_sha256, blob_key, shard_row FROM filter_features "
                f"WHERE work_key = ? AND frame_sha256 IN ({contents}) "
                "QUALIFY row_number() OVER (PARTITION BY frame_sha256 ORDER BY blob_key) = 1",
                [key, partition_key],
            ).df()
    prompts = prompt_set(keyword, config)
    texts = [prompt for _, _, prompt in prompts]
    errors: list[tuple[str, str]] = []
    if config.rescore:  # the model runs again on every frame, image tower included
        known, kept = known[~known["prompt"].isin(texts)], kept.iloc[:0]

    current = known[known["prompt"].isin(texts)]
    complete = set(current.groupby("frame_sha256")["prompt"].nunique().loc[lambda n: n == len(texts)].index)
    missing = [sha for sha in dict.fromkeys(catalog["sha256"]) if sha not in complete] if texts else []
    with_features = set(kept["frame_sha256"])
    from_features = [sha for sha in missing if sha in with_features]
    need_images = catalog[catalog["sha256"].isin(set(missing) - set(from_features))].drop_duplicates("sha256")
    new_scores = pd.DataFrame(columns=["frame_sha256", "prompt", "score"])
    new_features: tuple[list[str], np.ndarray] = ([], np.zeros((0, 0), np.float32))
    if not texts:
        errors.append((partition_key, "no prompts to score against: the keyword is excluded and no classes or "
                                      "captions were given"))  # fmt: skip
    else:
        rows = kept.set_index("frame_sha256").loc[from_features].reset_index()
        text_scores = score_kept_features(from_features, load_vectors(blob_store, rows), text_filter, texts)
        image_scores, shas, features, failed = score_images(
            need_images.to_dict("records"), text_filter, frame_loader(blob_store, config.min_side), texts
        )
        new_scores = pd.concat([frame for frame in (text_scores, image_scores) if len(frame)] or [new_scores])
        new_features = (shas, features)
        by_content = catalog.groupby("sha256")["frame_id"].apply(list)
        errors += [(frame_id, reason) for frame, reason in failed for frame_id in by_content[frame["sha256"]]]
    store_features(warehouse, blob_store, key, model, *new_features)

    scores = pd.concat(
        [frame for frame in (current[current["frame_sha256"].isin(complete)], new_scores) if len(frame)] or [current]
    )
    all_scores = catalog[["frame_id", "sha256"]].rename(columns={"sha256": "frame_sha256"}).merge(scores)
    all_scores = all_scores.assign(partition_key=partition_key, model=model, work_key=key)
    result = best_scores(all_scores, texts, config.threshold, model).assign(partition_key=partition_key)
    # the partition's scores of earlier prompts stay, for frames of the same content (such a prompt needs no model)
    earlier = (
        own[~own["prompt"].isin(texts)]
        .merge(catalog[["frame_id", "sha256"]].rename(columns={"sha256": "frame_sha256"}))
        .assign(partition_key=partition_key, model=model, work_key=key)
    )
    prompt_rows = pd.DataFrame(prompts, columns=["kind", "label", "prompt"]).assign(partition_key=partition_key)
    scored_now = catalog["sha256"].isin(new_features[0])
    from_kept = catalog["sha256"].isin(from_features)

    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            replace_partition_rows(
                conn, "frame_scores", partition_key, pd.concat([earlier, all_scores], ignore_index=True),
                "AND (work_key = ? OR (work_key IS NULL AND model = ?))", [key, model],
            )  # fmt: skip
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
            "scored_now": int(scored_now.sum()),  # frames whose image went through the model this run
            "scored_from_features": int(from_kept.sum()),  # frames scored from kept image features (text tower only)
            "scores_reused": int(catalog["sha256"].isin(complete).sum()) if texts else 0,
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
