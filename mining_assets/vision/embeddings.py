"""frame_embeddings: an L2-normalised vector per passed frame, stored as float32 .npy shards in the blob store."""

import io
from collections.abc import Callable
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from mining_assets.checks import first_reasons, output_check, output_spec
from mining_assets.partitions import keyword_partitions
from mining_assets.pools import VISION_MODELS
from mining_assets.retries import STEP_RETRY
from mining_assets.vision.batches import prepared_batches
from mining_assets.vision.common import content_key, frame_loader, partition_prefix, remove_orphans
from mining_assets.vision.filtered import filtered_frames
from mining_assets.vision.images import MIN_SIDE
from mining_assets.warehouse import (
    replace_stage_rows,
    table_definition_metadata,
    unique_key_spec,
)
from resources.blob_store import BlobStore
from resources.models.embedder import ImageEmbedder
from resources.warehouse import Warehouse

UNIT_NORM_TOLERANCE = 1e-3


class EmbeddingConfig(dg.Config):
    shard_rows: int = 8192  # vectors per .npy file
    min_side: int = MIN_SIDE


def shard_bytes(vectors: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def load_vectors(blob_store: BlobStore, rows: pd.DataFrame) -> np.ndarray:
    """The vectors of embedding rows (``blob_key``, ``shard_row``), in the rows' order."""
    if not len(rows):
        return np.zeros((0, 0), np.float32)
    shards = {
        key: np.load(io.BytesIO(blob_store.get_bytes(key)), allow_pickle=False) for key in rows["blob_key"].unique()
    }
    return np.stack([shards[key][row] for key, row in zip(rows["blob_key"], rows["shard_row"], strict=True)])


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
    partition_key = context.partition_key
    model = embedder.describe()
    for attempt in warehouse.retrying():
        with attempt as conn:
            todo = conn.execute(
                "SELECT f.frame_id, f.blob_key, f.sha256 FROM filtered_frames p "
                "JOIN frames f USING (partition_key, frame_id) "
                "WHERE p.partition_key = ? AND p.passed ORDER BY f.frame_id",
                [partition_key],
            ).df()
    load = frame_loader(blob_store, config.min_side)
    ids, vectors, errors = embed_frames(todo.to_dict("records"), embedder, load)

    prefix = partition_prefix("embeddings", partition_key)
    rows = []
    for start in range(0, len(ids), max(1, config.shard_rows)):
        shard = vectors[start : start + config.shard_rows]
        data = shard_bytes(shard)
        key = content_key(prefix, data, ".npy")
        uri = blob_store.put_bytes(key, data)
        rows += [
            {"frame_id": frame_id, "blob_key": key, "uri": uri, "shard_row": i}
            for i, frame_id in enumerate(ids[start : start + config.shard_rows])
        ]
    table = pd.DataFrame(rows, columns=["frame_id", "blob_key", "uri", "shard_row"]).assign(
        partition_key=partition_key, model=model, dim=vectors.shape[1] if len(ids) else 0
    )
    table["frame_sha256"] = table["frame_id"].map(dict(zip(todo["frame_id"], todo["sha256"], strict=True)))
    stored_metadata, unique_key = replace_stage_rows(
        warehouse, partition_key, "frame_embeddings", table, "frame_embeddings", errors
    )
    removed, not_removed, missing = remove_orphans(blob_store, prefix, table["blob_key"])

    # the check reads back what was stored, not what was computed
    problems = norm_problems(load_vectors(blob_store, table)) if len(table) and not missing else {}
    for item, reason in errors[:20]:
        context.log.warning(f"{item}: {reason}")
    return dg.MaterializeResult(
        metadata={
            **stored_metadata,
            "embedded": len(table),
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
                len(todo),
                len(table),
                "no passed frame could be embedded" + first_reasons(errors),
                upstream="filtered_frames (passed frames)",
            ),
        ],
    )
