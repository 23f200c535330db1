"""Vectors in the blob store: float32 ``.npy`` shards, named by content, and read back by (shard, row)."""

import io

import numpy as np
import pandas as pd

from mining_assets.vision.common import content_key
from resources.blob_store import BlobStore


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


def shared_prefix(key: str) -> str:
    """Where vectors of one work key (a model and its precision) live, shared by every keyword:
    ``embeddings/shared.work/<work key>`` (a partition's folder never holds a dot, so the two never meet)."""
    return f"embeddings/shared.work/{key}"


def store_shards(
    blob_store: BlobStore, prefix: str, ids: list[str], vectors: np.ndarray, shard_rows: int
) -> pd.DataFrame:
    """Store vectors in content-named .npy shards of at most ``shard_rows``; a row per frame id: ``blob_key``,
    ``uri``, ``shard_row``, ``dim``."""
    rows = []
    for start in range(0, len(ids), max(1, shard_rows)):
        data = shard_bytes(vectors[start : start + shard_rows])
        key = content_key(prefix, data, ".npy")
        uri = blob_store.put_bytes(key, data)
        rows += [
            {"frame_id": frame_id, "blob_key": key, "uri": uri, "shard_row": i, "dim": int(vectors.shape[1])}
            for i, frame_id in enumerate(ids[start : start + shard_rows])
        ]
    return pd.DataFrame(rows, columns=["frame_id", "blob_key", "uri", "shard_row", "dim"])
