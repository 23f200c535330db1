"""frame_embeddings: an L2-normalised vector per passed frame, stored as float32 .npy shards in the blob store."""

from collections.abc import Callable
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from mining_assets.checks import first_reasons, output_check, output_spec
from mining_assets.keyword_settings import stage_config
from mining_assets.partitions import keyword_partitions
from mining_assets.pools import VISION_MODELS
from mining_assets.retries import STEP_RETRY
from mining_assets.vision.batches import prepared_batches
from mining_assets.vision.common import frame_loader, partition_prefix, remove_orphans
from mining_assets.vision.filtered import filtered_frames
from mining_assets.vision.images import MIN_SIDE
from mining_assets.vision.shards import load_vectors, shared_prefix, store_shards
from mining_assets.warehouse import (
    replace_stage_rows,
    table_definition_metadata,
    unique_key_spec,
)
from mining_assets.work import model_settings, work_key
from resources.blob_store import BlobStore
from resources.models.embedder import ImageEmbedder
from resources.warehouse import Warehouse

UNIT_NORM_TOLERANCE = 1e-3


class EmbeddingConfig(dg.Config):
    shard_rows: int = 8192  # vectors per .npy file
    rescore: bool = False  # ignore stored vectors and run the model on every passed frame
    min_side: int = MIN_SIDE


def stored_vectors(conn, partition_key: str, key: str) -> pd.DataFrame:
    """One stored vector (``frame_sha256``, ``blob_key``, ``uri``, ``shard_row``, ``dim``) per content among the
    partition's frames, from any keyword's rows of the same work key (this partition's own first)."""
    return conn.execute(
        "SELECT e.frame_sha256, e.blob_key, e.uri, e.shard_row, e.dim FROM frame_embeddings e "
        "WHERE e.work_key = ? AND e.frame_sha256 IN (SELECT sha256 FROM frames WHERE partition_key = ?) "
        "QUALIFY row_number() OVER (PARTITION BY e.frame_sha256 ORDER BY e.partition_key <> ?, e.blob_key) = 1",
        [key, partition_key, partition_key],
    ).df()


def referenced_shards(warehouse: Warehouse, prefix: str) -> list[str]:
    """Shards under a folder that some keyword's row still names."""
    for attempt in warehouse.retrying():
        with attempt as conn:
            rows = conn.execute(
                "SELECT DISTINCT blob_key FROM frame_embeddings WHERE starts_with(blob_key, ?)",
                [prefix.rstrip("/") + "/"],
            ).fetchall()
    return [row[0] for row in rows]


def missing_shards(blob_store: BlobStore, keys: pd.Series) -> list[str]:
    """The shards rows name that the store does not hold."""
    return sorted(key for key in set(keys) if not blob_store.exists(key))


def norm_problems(vectors: np.ndarray) -> dict[str, int]:
    """How many vectors are not finite, and how many are finite but not of unit length."""
    finite = np.isfinite(vectors).all(axis=1) if len(vectors) else np.zeros(0, bool)
    norms = np.linalg.norm(np.where(finite[:, None], vectors, 0), axis=1) if len(vectors) else np.zeros(0)
    return {
        "not_finite": int((~finite).sum()),
        "not_unit_norm": int((finite & (np.abs(norms - 1) > UNIT_NORM_TOLERANCE)).sum()),
    }


def embed_frames(
    frames: list[dict], embedder: ImageEmbedder, load: Callable[[dict], Any]
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Frame ids and their unit vectors (rows in the same order), and the frames that failed with the reason."""
    ids: list[str] = []
    chunks: list[np.ndarray] = []
    errors: list[tuple[str, str]] = []
    for batch in prepared_batches(frames, load, embedder.prepare, embedder.batch_size):
        errors += [(frame["frame_id"], reason) for frame, reason in batch.failed]
        if not batch.items:
            continue
        vectors = embedder.embed_prepared(batch.inputs)
        finite = np.isfinite(vectors).all(axis=1)
        for frame, ok in zip(batch.items, finite, strict=True):
            if ok:
                ids.append(frame["frame_id"])
            else:
                errors.append((frame["frame_id"], "embedding is not finite"))
        chunks.append(vectors[finite])
    return ids, (np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)), errors


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    deps=[filtered_frames],
    group_name="vision",
    kinds={"pytorch", "duckdb"},
    pool=VISION_MODELS,
    metadata=table_definition_metadata("frame_embeddings"),
    check_specs=[
        dg.AssetCheckSpec(
            "finite_unit_norm",
            asset="frame_embeddings",
            description="Every embedding, read back from its stored shard, is finite and of unit length.",
        ),
        unique_key_spec("frame_embeddings", ["frame_embeddings"]),
        output_spec("frame_embeddings", "embeddings"),
    ],
)
def frame_embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingConfig,
    embedder: ImageEmbedder,
    blob_store: BlobStore,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """Unit-length image embeddings (DINOv2 by default) of the frames that passed the filter, in .npy shards."""
    config, _ = stage_config(context, config, warehouse)
    partition_key = context.partition_key
    model = embedder.describe()
    key = work_key(stage="frame_embeddings", **model_settings(embedder))
    for attempt in warehouse.retrying():
        with attempt as conn:
            passed = conn.execute(
                "SELECT f.frame_id, f.blob_key, f.sha256 FROM filtered_frames p "
                "JOIN frames f USING (partition_key, frame_id) "
                "WHERE p.partition_key = ? AND p.passed ORDER BY f.frame_id",
                [partition_key],
            ).df()
            done = stored_vectors(conn, partition_key, key)
    # a vector is computed once per content and model: any keyword's row of the same frame content is reused
    done = done.iloc[:0] if config.rescore else done
    todo = passed[~passed["sha256"].isin(done["frame_sha256"])]
    load = frame_loader(blob_store, config.min_side)
    ids, vectors, errors = embed_frames(todo.to_dict("records"), embedder, load)

    fresh = store_shards(blob_store, shared_prefix(key), ids, vectors, config.shard_rows)
    reused = (
        passed[["frame_id", "sha256"]].merge(done, left_on="sha256", right_on="frame_sha256").drop(columns="sha256")
    )
    table = pd.concat(
        [
            reused,
            fresh.assign(frame_sha256=fresh["frame_id"].map(dict(zip(todo["frame_id"], todo["sha256"], strict=True)))),
        ],
        ignore_index=True,
    ).assign(partition_key=partition_key, model=model, work_key=key)
    stored_metadata, unique_key = replace_stage_rows(
        warehouse, partition_key, "frame_embeddings", table, "frame_embeddings", errors
    )
    # shards of the partition's own folder (written before vectors were shared) that no keyword's row names; the
    # table is asked only when the folder holds any
    prefix = partition_prefix("embeddings", partition_key)
    removed, not_removed = 0, []
    if blob_store.list_keys(prefix):
        removed, not_removed, _ = remove_orphans(blob_store, prefix, referenced_shards(warehouse, prefix))
    missing = missing_shards(blob_store, table["blob_key"])

    # the check reads back what was stored, not what was computed
    problems = norm_problems(load_vectors(blob_store, table)) if len(table) and not missing else {}
    for item, reason in errors[:20]:
        context.log.warning(f"{item}: {reason}")
    return dg.MaterializeResult(
        metadata={
            **stored_metadata,
            "embedded": len(table),
            "embedded_now": len(ids),
            "reused": len(reused),
            "failed": len(errors),
            "dim": int(vectors.shape[1]) if len(ids) else 0,
            "shards": int(table["blob_key"].nunique()),
            "model": model,
            "orphans_removed": removed,
            "orphans_not_removed": dg.MetadataValue.json(not_removed[:20]),  # the store refused: left for blob_gc
            "problems": dg.MetadataValue.json([{"frame_id": i, "reason": r} for i, r in errors[:50]]),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="finite_unit_norm",
                passed=not missing and not any(problems.values()),
                metadata={**problems, "missing_shards": len(missing)},
            ),
            unique_key,
            output_check(
                len(passed),
                len(table),
                "no passed frame could be embedded" + first_reasons(errors),
                upstream="filtered_frames (passed frames)",
            ),
        ],
    )
