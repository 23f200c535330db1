"""unique_frames: near-duplicates removed across all sources of a keyword; the best-scoring frame of a group stays."""

from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd

from mining_assets.checks import output_check, output_spec
from mining_assets.keyword_settings import stage_config
from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions
from mining_assets.retries import STEP_RETRY
from mining_assets.vision.dedup import deduplicate
from mining_assets.vision.embeddings import frame_embeddings
from mining_assets.vision.shards import load_vectors
from mining_assets.warehouse import (
    replace_partition_rows,
    table_definition_metadata,
    table_metadata,
    unique_key_check,
    unique_key_spec,
)
from resources.blob_store import BlobStore
from resources.warehouse import Warehouse


class DedupConfig(dg.Config):
    threshold: float = 0.90  # cosine similarity at which two frames count as the same
    method: Literal["auto", "exact", "ivf"] = "auto"  # auto: exact up to 20,000 frames, then an IVF search


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    deps=[frame_embeddings],
    group_name="vision",
    kinds={"numpy", "duckdb"},
    metadata=table_definition_metadata("unique_frames"),
    check_specs=[
        dg.AssetCheckSpec(
            "no_frame_kept_twice",
            asset="unique_frames",
            description="No two kept frames have the same content (sha256): exact copies are one group.",
        ),
        unique_key_spec("unique_frames", ["unique_frames"]),
        output_spec("unique_frames", "kept frames"),
    ],
)
def unique_frames(
    context: dg.AssetExecutionContext, config: DedupConfig, blob_store: BlobStore, warehouse: Warehouse
) -> dg.MaterializeResult:
    """One frame per group of near-duplicates (cosine >= threshold), chosen by filter score, then frame id."""
    config, _ = stage_config(context, config, warehouse)
    partition_key = context.partition_key
    for attempt in warehouse.retrying():
        with attempt as conn:
            rows = conn.execute(
                "SELECT e.frame_id, e.blob_key, e.shard_row, p.best_score, f.media_id, f.sha256 "
                "FROM frame_embeddings e JOIN filtered_frames p USING (partition_key, frame_id) "
                "JOIN frames f USING (partition_key, frame_id) "
                "WHERE e.partition_key = ? ORDER BY e.frame_id",
                [partition_key],
            ).df()
    vectors = load_vectors(blob_store, rows)
    ids = rows["frame_id"].tolist()
    result = deduplicate(vectors, rows["best_score"].to_numpy(), ids, config.threshold, config.method)
    table = pd.DataFrame(
        {
            "frame_id": ids,
            "frame_sha256": rows["sha256"].to_numpy(),
            "kept": result.keep,
            "representative_id": [ids[i] for i in result.representative],
            "similarity": result.similarity.astype(np.float32),
        }
    ).assign(partition_key=partition_key, threshold=config.threshold)
    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            replace_partition_rows(conn, "unique_frames", partition_key, table)
    for attempt in warehouse.retrying():
        with attempt as conn:
            # a repeated frame id is `unique_key`'s; identical content kept twice is the dedup's own failure
            copies = [ids for (ids,) in conn.execute(
                "SELECT list(frame_id ORDER BY frame_id) FROM unique_frames WHERE partition_key = ? AND kept "
                "GROUP BY frame_sha256 HAVING count(*) > 1 ORDER BY 1", [partition_key]).fetchall()]  # fmt: skip
            stored_metadata = table_metadata(conn, "unique_frames", partition_key)
            unique_key = unique_key_check(conn, partition_key, ["unique_frames"])
    media = rows.assign(kept=result.keep).groupby("media_id")["kept"].agg(["size", "sum"])
    groups = (
        table[~table["kept"]]
        .groupby("representative_id")
        .agg(duplicates=("frame_id", "size"), min_similarity=("similarity", "min"))
    )
    largest = groups.sort_values(["duplicates", "min_similarity"], ascending=[False, True]).head(10)
    return dg.MaterializeResult(
        metadata={
            **stored_metadata,
            "frames": len(table),
            "kept": int(result.keep.sum()),
            "removed": int((~result.keep).sum()),
            "threshold": config.threshold,
            "method": result.method if len(table) else "none",
            "kept_per_media": dg.MetadataValue.json({m: int(k) for m, k in media["sum"].items()}),
            "largest_groups": dg.MetadataValue.md(
                markdown_table(
                    ["representative", "duplicates", "min_similarity"],
                    [(rep, int(n), round(float(s), 4)) for rep, (n, s) in largest.iterrows()],
                    "_no duplicates_",
                )
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="no_frame_kept_twice",
                passed=not copies,
                metadata={
                    "identical_images_kept": sum(len(ids) - 1 for ids in copies),
                    "examples": dg.MetadataValue.json(copies[:5]),
                },
            ),
            unique_key,
            output_check(
                len(table), int(result.keep.sum()), "every frame was removed as a duplicate", "frame_embeddings"
            ),
        ],
    )
