"""mongo_export: one MongoDB document per media item of a keyword, with its pose summary and HDF5 location.

Collection ``robot_training_data``: ``_id`` = ``<partition_key>:<media_id>``; collection ``mining_statistics``:
``_id`` = partition key. Documents are upserted with ``bulk_write``; ``exported_at`` changes only when a document's
content does (``content_sha256``), ``first_exported_at`` is set once. Documents of the keyword whose media item
is gone are removed, so a re-run leaves exactly the documents the warehouse describes.
"""

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from mining_assets.checks import output_check, output_spec
from mining_assets.partitions import keyword_partitions
from mining_assets.poses.datasets import KEYWORD_ROW, media_provenance
from mining_assets.poses.hdf5 import SCHEMA_VERSION
from mining_assets.retries import STEP_RETRY
from mining_assets.warehouse import keyword_text, query_dicts
from resources.blob_store import BlobStore
from resources.mongo import MongoResource
from resources.warehouse import Warehouse

DOCUMENTS = "robot_training_data"
TIMESTAMPS = ("exported_at", "first_exported_at")  # set on export, not part of a document's content
STATISTICS = "mining_statistics"
# visibility is every 4th value of the flat 33 x (x, y, z, visibility) list: elements 4, 8, ... 132 (1-based)
SUMMARY = """
SELECT media_id, count(*) AS frames,
       count(*) FILTER (WHERE pose_found) AS frames_with_pose,
       count(*) FILTER (WHERE left_hand IS NOT NULL OR right_hand IS NOT NULL) AS frames_with_hands,
       count(*) FILTER (WHERE left_hand IS NOT NULL AND right_hand IS NOT NULL) AS frames_with_both_hands,
       avg(list_avg(pose_landmarks[4:132:4])) FILTER (WHERE pose_found) AS mean_visibility,
       min(timestamp_s) AS first_timestamp_s, max(timestamp_s) AS last_timestamp_s
FROM poses WHERE partition_key = ? GROUP BY media_id ORDER BY media_id
"""


def _rounded(value: float | None) -> float | None:
    """Aggregates rounded, so that summing in another order cannot change a document's content hash."""
    return None if value is None else round(float(value), 6)


def pose_summary(row: dict[str, Any]) -> dict[str, Any]:
    first, last = row["first_timestamp_s"], row["last_timestamp_s"]
    return {
        "frames": int(row["frames"]),
        "frames_with_pose": int(row["frames_with_pose"]),
        "frames_with_hands": int(row["frames_with_hands"]),
        "frames_with_both_hands": int(row["frames_with_both_hands"]),
        "mean_visibility": _rounded(row["mean_visibility"]),
        "first_timestamp_s": _rounded(first),
        "last_timestamp_s": _rounded(last),
        "span_s": None if first is None else _rounded(last - first),
    }


def with_content_hash(document: dict[str, Any]) -> dict[str, Any]:
    """The document with ``content_sha256``: a hash of everything but ``_id`` and the timestamps."""
    content = json.dumps({k: v for k, v in document.items() if k != "_id"}, sort_keys=True, default=str)
    return {**document, "content_sha256": hashlib.sha256(content.encode()).hexdigest()}


def media_documents(
    partition_key: str, keyword: str, provenance: dict, summaries: dict, datasets: dict, blob_store: BlobStore
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """One document per media item with a verified HDF5 file, and (media_id, reason) for the others."""
    documents, skipped = [], []
    keyword_file = datasets.get(KEYWORD_ROW)
    for media_id, info in provenance.items():
        dataset = datasets.get(media_id)
        if dataset is None:
            skipped.append((media_id, "no verified HDF5 file (see pose_datasets)"))
            continue
        document = {
            "_id": f"{partition_key}:{media_id}", "partition_key": partition_key, "keyword": keyword,
            "media_id": media_id, "media_type": info["media_type"], "source": info["source"],
            "source_url": info["source_url"], "license": info["license"], "creator": info["creator"],
            "pose": pose_summary(summaries[media_id]),
            "hdf5": {
                "uri": dataset["uri"], "key": dataset["blob_key"], "sha256": dataset["sha256"],
                "sidecar_uri": blob_store.uri(dataset["sidecar_key"]), "sidecar_key": dataset["sidecar_key"],
                "schema_version": SCHEMA_VERSION, "keyword_file_uri": keyword_file["uri"] if keyword_file else None,
            },
            "models": list(info["models"]), "source_deleted": bool(dataset["source_deleted"]),
        }  # fmt: skip
        documents.append(with_content_hash(document))
    return documents, skipped


def keyword_statistics(partition_key: str, keyword: str, documents: list[dict], keyword_file: dict | None) -> dict:
    """Per-keyword counts over the exported documents (``mining_statistics``)."""
    poses = [d["pose"] for d in documents]
    with_pose = sum(p["frames_with_pose"] for p in poses)
    visibility = sum((p["mean_visibility"] or 0.0) * p["frames_with_pose"] for p in poses)
    return with_content_hash({
        "_id": partition_key, "partition_key": partition_key, "keyword": keyword, "media_items": len(documents),
        "videos": sum(d["media_type"] == "video" for d in documents),
        "photos": sum(d["media_type"] == "photo" for d in documents),
        "frames": sum(p["frames"] for p in poses), "frames_with_pose": with_pose,
        "frames_with_hands": sum(p["frames_with_hands"] for p in poses),
        "mean_visibility": _rounded(visibility / with_pose) if with_pose else None,
        "keyword_hdf5_uri": keyword_file["uri"] if keyword_file else None, "documents_collection": DOCUMENTS,
    })  # fmt: skip


def stored_content_sha256(document: dict[str, Any]) -> str:
    """The content hash of a document as read back from the collection, computed from its fields (not copied from
    its ``content_sha256``), so that a document changed in the collection shows."""
    fields = {k: v for k, v in document.items() if k not in ("content_sha256", *TIMESTAMPS)}
    return with_content_hash(fields)["content_sha256"]


def upsert(collection, documents: list[dict], now: datetime) -> tuple[int, int, int]:
    """Upsert documents by ``_id``; ``exported_at`` moves only for new or changed content.

    Returns (upserted, modified, unchanged).
    """
    from pymongo import UpdateOne

    if not documents:
        return 0, 0, 0
    ids = [d["_id"] for d in documents]
    known = {d["_id"]: d.get("content_sha256") for d in collection.find({"_id": {"$in": ids}}, {"content_sha256": 1})}
    operations = []
    for document in documents:
        fields = {k: v for k, v in document.items() if k != "_id"}
        if known.get(document["_id"]) != document["content_sha256"]:
            fields["exported_at"] = now
        update = {"$set": fields, "$setOnInsert": {"first_exported_at": now}}
        operations.append(UpdateOne({"_id": document["_id"]}, update, upsert=True))
    result = collection.bulk_write(operations, ordered=True)
    return result.upserted_count, result.modified_count, result.matched_count - result.modified_count


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    deps=["pose_datasets"],
    group_name="exports",
    kinds={"mongodb"},
    check_specs=[
        dg.AssetCheckSpec(
            "documents_match_warehouse",
            asset="mongo_export",
            description="The collection holds exactly the keyword's documents, each read back as the warehouse has it.",
        ),
        output_spec("mongo_export", "documents"),
    ],
)
def mongo_export(
    context: dg.AssetExecutionContext, warehouse: Warehouse, blob_store: BlobStore, mongo: MongoResource
) -> dg.MaterializeResult:
    """The keyword's pose summaries and HDF5 locations in MongoDB, one document per video or photo."""
    partition_key = context.partition_key
    for attempt in warehouse.retrying():
        with attempt as conn:  # one snapshot: provenance, summaries and files agree with each other
            keyword = keyword_text(conn, partition_key)
            provenance = media_provenance(conn, partition_key)
            summaries = {row["media_id"]: row for row in query_dicts(conn, SUMMARY, [partition_key])}
            datasets = {row["media_id"]: row for row in query_dicts(
                conn, "SELECT * FROM pose_datasets WHERE partition_key = ?", [partition_key]
            )}  # fmt: skip
    documents, skipped = media_documents(partition_key, keyword, provenance, summaries, datasets, blob_store)
    statistics = keyword_statistics(partition_key, keyword, documents, datasets.get(KEYWORD_ROW))
    now = datetime.now(UTC)
    host = mongo.redacted_host()
    client = mongo.get_client()
    try:
        database = client[mongo.database]
        collection = database[DOCUMENTS]
        collection.create_index([("keyword", 1), ("media_id", 1)], name="keyword_media_id")
        collection.create_index([("partition_key", 1)], name="partition_key")
        upserted, modified, unchanged = upsert(collection, documents, now)
        ids = [d["_id"] for d in documents]
        removed = collection.delete_many({"partition_key": partition_key, "_id": {"$nin": ids}}).deleted_count
        upsert(database[STATISTICS], [statistics], now)
        stored = {d["_id"]: stored_content_sha256(d) for d in collection.find({"partition_key": partition_key})}
    finally:
        client.close()
    for media_id, reason in skipped[:20]:
        context.log.warning(f"{media_id}: {reason}")
    differs = sorted(d["_id"] for d in documents if stored.get(d["_id"], d["content_sha256"]) != d["content_sha256"])
    return dg.MaterializeResult(
        metadata={
            "documents": len(documents),
            "upserted": upserted,
            "modified": modified,
            "unchanged": unchanged,
            "removed": removed,
            "database": mongo.database,
            "collection": DOCUMENTS,
            "statistics_collection": STATISTICS,
            "host": host,
            "skipped": dg.MetadataValue.json([{"media_id": m, "reason": r} for m, r in skipped[:50]]),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="documents_match_warehouse",
                passed=stored.keys() == set(ids) and not skipped and not differs,
                metadata={
                    "in_collection": len(stored),
                    "expected": len(ids),
                    "skipped": len(skipped),
                    "content_differs": len(differs),
                    "examples": dg.MetadataValue.json(differs[:5]),
                },
            ),
            output_check(
                len(provenance),
                len(documents),
                "no media item has a verified HDF5 file (pose_datasets)",
                upstream="poses",
            ),
        ],
    )
