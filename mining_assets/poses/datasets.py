"""pose_datasets: each media item's poses, and the keyword's, as HDF5 files with JSON sidecars (schema in hdf5.py).

Files go to ``pose_datasets/<partition>/<media_id>.<sha>.h5`` (and ``.json``) and
``pose_datasets/<partition>/keyword.<sha>.h5``, ``<sha>`` the first 12 hex digits of the file's sha256.
Each is written locally, stored, fetched back from the store and verified before its row is recorded. A media item's
provenance (source, page URL, license, creator) is its registry item's (``keyword_media`` -> ``registry``), else the
frames catalog's.

With ``delete_sources`` a video's downloaded original is deleted only after its own file and the keyword file were
verified and recorded, and only when no other keyword's item refers to that media item and no other media item is
stored in the same blob; each deletion is a ``deleted_sources`` row. Photos are never deleted. A video that was to
go and was kept is recorded in ``pose_datasets_errors`` with the reason.
"""

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from mining_assets.checks import first_reasons, output_check, output_spec
from mining_assets.keyword_settings import stage_config
from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions
from mining_assets.poses.deletes import (
    KEYWORD_ROW,
    deletable,
    delete_originals,
    original_users,
    removable,
)
from mining_assets.poses.hdf5 import (
    SCHEMA_VERSION,
    KeywordPoses,
    MediaPoses,
    content_problems,
    media_name,
    pose_arrays,
    sidecar,
    verify,
    write_keyword_file,
    write_media_file,
)
from mining_assets.retries import STEP_RETRY
from mining_assets.sources.media import media_leases
from mining_assets.video.probe import file_sha256
from mining_assets.vision.common import metadata_location, partition_prefix, remove_orphans
from mining_assets.warehouse import (
    insert_rows,
    keyword_text,
    query_dicts,
    record_errors,
    replace_partition_rows,
    table_definition_metadata,
    table_report,
    unique_key_spec,
)
from resources.blob_store import BlobStore
from resources.faults import InfrastructureError, LocalDiskError
from resources.warehouse import Warehouse

STAGE = "pose_datasets"
KEYWORD_FILE = "keyword"  # file name of the keyword's HDF5; media names never equal it (see media_name)
POSES = (
    "SELECT frame_id, sequence_index, timestamp_s, image_width, image_height, pose_found, pose_landmarks, "
    "pose_world_landmarks, left_hand, left_hand_score, right_hand, right_hand_score FROM poses "
    "WHERE partition_key = ? AND media_id = ? ORDER BY sequence_index, frame_id"
)
PROVENANCE = """
WITH items AS (
    SELECT media_id, any_value(media_type) AS media_type, count(*) AS frames,
           list(DISTINCT models ORDER BY models) AS models
    FROM poses WHERE partition_key = $1 GROUP BY media_id),
catalog AS (
    SELECT media_id, any_value(source) AS source, min(source_url) AS source_url
    FROM frames WHERE partition_key = $1 GROUP BY media_id),
named AS (  -- what the keyword's sources say of each media item: its first registry item that is not a duplicate
    SELECT k.media_id, r.source, r.page_url, r.license, r.photographer, r.channel
    FROM keyword_media k JOIN registry r USING (partition_key, item)
    WHERE k.partition_key = $1 AND k.duplicate_of IS NULL
    QUALIFY row_number() OVER (PARTITION BY k.media_id ORDER BY k.item) = 1)
SELECT i.media_id, i.media_type, i.frames, coalesce(n.source, m.source, c.source) AS source,
       coalesce(n.page_url, c.source_url) AS source_url, n.license,
       coalesce(n.photographer, n.channel) AS creator,
       m.media_type AS stored_type, m.blob_key AS source_blob_key, i.models
FROM items i LEFT JOIN catalog c USING (media_id) LEFT JOIN named n USING (media_id) LEFT JOIN media m USING (media_id)
ORDER BY i.media_id
"""
SAMPLE_COLUMNS = ["media_id", "media_type", "frames", "source_url", "license"]


class PoseDatasetsConfig(dg.Config):
    delete_sources: bool = False  # delete each item's downloaded original once its HDF5 is stored and verified


@dataclass
class StoredFile:
    """A file that was stored, fetched back and verified: one row of ``pose_datasets``."""

    media_id: str
    frames: int
    blob_key: str
    uri: str
    sidecar_key: str
    sha256: str
    content_digest: str = ""  # ``content_digest`` of what it holds


def media_provenance(conn, partition_key: str) -> dict[str, dict[str, Any]]:
    """Per media item with poses: type, frames, and what its registry item says (source, page URL, license,
    creator: photographer or channel), falling back to the frames catalog's source and URL; the stored original's
    type and blob (``media``) and the pose models."""
    return {row["media_id"]: row for row in query_dicts(conn, PROVENANCE, [partition_key])}


def media_attributes(info: dict[str, Any], keyword: str, partition_key: str, created_at: str) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION, "file_kind": "media", "media_id": info["media_id"],
        "media_type": info["media_type"], "source": info["source"], "source_url": info["source_url"],
        "license": info["license"], "creator": info["creator"], "keyword": keyword, "partition_key": partition_key,
        "models": list(info["models"]), "created_at": created_at,
    }  # fmt: skip


def build_items(
    conn, provenance: dict[str, dict], keyword: str, partition_key: str, created_at: str
) -> tuple[list[MediaPoses], list[tuple[str, str]]]:
    """The media items as arrays and attributes, and (media_id, reason) for those whose pose rows are unusable.

    Rows are read one media item at a time: only the compact arrays of the keyword stay in memory.
    """
    items, problems = [], []
    for media_id, info in provenance.items():
        rows = query_dicts(conn, POSES, [partition_key, media_id])
        try:
            arrays = pose_arrays(rows)
            bad = content_problems(arrays, info["media_type"])
            if bad:
                raise ValueError("; ".join(bad))
        except ValueError as error:
            problems.append((media_id, f"unusable pose rows: {error}"))
            continue
        items.append(MediaPoses(media_attributes(info, keyword, partition_key, created_at), arrays))
    return items, problems


def content_digest(content: MediaPoses | KeywordPoses, item_digests: list[str] | None = None) -> str:
    """What a file holds, without the time it was written (``created_at``): equal digests, equal files but for that
    attribute. A file whose digest is unchanged is not written again. A keyword file's digest is made of its items'
    (``item_digests``, in file order, when they were computed already)."""
    digest = hashlib.sha256()
    attributes = {k: v for k, v in content.attributes.items() if k != "created_at"}
    digest.update(json.dumps(attributes, sort_keys=True, default=str).encode())
    if isinstance(content, KeywordPoses):
        for item_digest in item_digests or [content_digest(item) for item in content.items]:
            digest.update(item_digest.encode())
        return digest.hexdigest()
    for name in sorted(content.arrays):
        array = np.asarray(content.arrays[name])
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes() if array.dtype != object else json.dumps(array.tolist()).encode())
    return digest.hexdigest()


def store_verified(
    blob_store: BlobStore, prefix: str, name: str, content: MediaPoses | KeywordPoses, tmp: Path, digest: str = ""
) -> StoredFile:
    """Write a file locally, store it and its sidecar, fetch both back from the store and verify them.

    Raises:
        RuntimeError: what verification found wrong (files already stored are left for orphan removal).
        LocalDiskError: the local file could not be written (the step fails; no item is blamed).
    """
    local = tmp / f"{name}.h5"
    try:
        (write_keyword_file if isinstance(content, KeywordPoses) else write_media_file)(local, content)
        document = json.loads(json.dumps(sidecar(local, content)))
    except OSError as error:  # the temporary file on this machine's disk: no fault of the item's
        raise LocalDiskError(f"writing {name}.h5 to the local disk failed: {error}") from None
    # named by content: a run stores new files beside the ones the rows refer to, and removes those only once
    # its own rows are committed, so a run that fails (a store read that fails mid-verification) changes no file
    stem = f"{prefix}/{name}.{document['sha256'][:12]}"
    key, sidecar_key = f"{stem}.h5", f"{stem}.json"
    uri = blob_store.put_file(key, local)
    blob_store.put_bytes(sidecar_key, json.dumps(document, indent=1, sort_keys=True).encode())
    with blob_store.local_path(key) as stored:  # a fresh download when the store is remote
        problems = [] if file_sha256(stored) == document["sha256"] else ["the stored file's sha256 differs"]
        problems += verify(stored, content)
    if json.loads(blob_store.get_bytes(sidecar_key)) != document:
        problems.append("the stored sidecar differs from the one written")
    if problems:
        raise RuntimeError(f"{name}.h5 failed verification: " + "; ".join(problems[:5]))
    frames = document["attributes"]["frames"]
    media_id = KEYWORD_ROW if isinstance(content, KeywordPoses) else content.attributes["media_id"]
    return StoredFile(media_id, frames, key, uri, sidecar_key, document["sha256"], digest or content_digest(content))


def store_unless_unchanged(
    blob_store: BlobStore,
    prefix: str,
    name: str,
    content: MediaPoses | KeywordPoses,
    tmp: Path,
    earlier: dict[str, StoredFile],
    present: set[str],
    digest: str,
) -> tuple[StoredFile, bool]:
    """The file of this content (``digest``: its ``content_digest``): the one stored and verified before when what
    it holds is unchanged and it is still in the store (True), else a new one (``store_verified``, False)."""
    media_id = KEYWORD_ROW if isinstance(content, KeywordPoses) else content.attributes["media_id"]
    before = earlier.get(media_id)
    if before and before.content_digest == digest and {before.blob_key, before.sidecar_key} <= present:
        return before, True
    return store_verified(blob_store, prefix, name, content, tmp, digest), False


def record_deletions(
    warehouse: Warehouse, partition_key: str, going: dict[str, str], deleted: list[str], errors: list[tuple[str, str]]
) -> None:
    """After deleting: drop the records of the originals still there (refused, or not reached when the store
    failed), mark the deleted ones in ``pose_datasets``, and record why each that was to go stayed."""
    still_there = [media_id for media_id in going if media_id not in deleted]
    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            if still_there:
                conn.execute("DELETE FROM deleted_sources WHERE list_contains(?, media_id)", [still_there])
            if deleted:
                conn.execute(
                    "UPDATE pose_datasets SET source_deleted = true "
                    "WHERE partition_key = ? AND list_contains(?, media_id)",
                    [partition_key, deleted],
                )
            record_errors(conn, partition_key, STAGE, errors)  # a shared video above all: the status shows why


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    deps=["poses"],
    group_name="poses",
    kinds={"hdf5", "duckdb"},
    metadata=table_definition_metadata("pose_datasets"),
    check_specs=[
        dg.AssetCheckSpec(
            "files_verified",
            asset="pose_datasets",
            description="Every HDF5 file (each media item's, the keyword's), read back from the store, is as written.",
        ),
        unique_key_spec("pose_datasets", ["pose_datasets", "deleted_sources"]),
        output_spec("pose_datasets", "verified media files"),
    ],
)
def pose_datasets(
    context: dg.AssetExecutionContext, config: PoseDatasetsConfig, blob_store: BlobStore, warehouse: Warehouse
) -> dg.MaterializeResult:
    """The keyword's poses as HDF5 datasets for robot learning, one file per video or photo and one per keyword."""
    config, _ = stage_config(context, config, warehouse)
    partition_key = context.partition_key
    prefix = partition_prefix(STAGE, partition_key)
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    for attempt in warehouse.retrying():
        with attempt as conn:  # reads only: building the arrays again on a retry is harmless
            keyword = keyword_text(conn, partition_key)
            provenance = media_provenance(conn, partition_key)
            items, problems = build_items(conn, provenance, keyword, partition_key, created_at)
            earlier = {row["media_id"]: StoredFile(**{k: row[k] or "" if k == "content_digest" else row[k]
                                                      for k in StoredFile.__dataclass_fields__})
                       for row in query_dicts(conn, "SELECT * FROM pose_datasets WHERE partition_key = ?",
                                              [partition_key])}  # fmt: skip
            deleted_before = dict(conn.execute(
                "SELECT media_id, blob_key FROM deleted_sources WHERE list_contains(?, media_id)", [list(provenance)]
            ).fetchall())  # fmt: skip
    stored: dict[str, StoredFile] = {}
    unchanged: set[str] = set()  # files kept as they were: what they hold did not change
    present = set(blob_store.list_keys(prefix)) if earlier else set()
    digests = [content_digest(item) for item in items]  # each item's once: its file's, and the keyword file's part
    with tempfile.TemporaryDirectory(prefix="pose-datasets-") as tmp:
        for item, digest in zip(items, digests, strict=True):
            media_id = item.attributes["media_id"]
            try:
                stored[media_id], same = store_unless_unchanged(
                    blob_store, prefix, media_name(media_id), item, Path(tmp), earlier, present, digest
                )
                unchanged |= {media_id} if same else set()
            except InfrastructureError:  # the store or the disk failed, not the item: the step fails
                raise
            except Exception as error:  # recorded with its reason; the other items go on
                problems.append((media_id, f"{type(error).__name__}: {error}"))
        models = sorted({model for item in items for model in item.attributes["models"]})
        attributes = {"schema_version": SCHEMA_VERSION, "file_kind": "keyword", "keyword": keyword,
                      "partition_key": partition_key, "models": models, "created_at": created_at}  # fmt: skip
        keyword_poses = KeywordPoses(attributes, items)
        try:
            stored[KEYWORD_ROW], same = store_unless_unchanged(
                blob_store,
                prefix,
                KEYWORD_FILE,
                keyword_poses,
                Path(tmp),
                earlier,
                present,
                content_digest(keyword_poses, digests),
            )
            unchanged |= {KEYWORD_ROW} if same else set()
        except InfrastructureError:
            raise
        except Exception as error:
            problems.append((KEYWORD_ROW, f"{type(error).__name__}: {error}"))

    def still_deleted(media_id: str) -> bool:
        return media_id in deleted_before and not blob_store.exists(deleted_before[media_id])

    table = pd.DataFrame(
        [{**asdict(f), "source_deleted": still_deleted(f.media_id)} for f in stored.values()],
        columns=[*StoredFile.__dataclass_fields__, "source_deleted"],
    )
    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            replace_partition_rows(conn, "pose_datasets", partition_key, table.assign(partition_key=partition_key))
            record_errors(conn, partition_key, STAGE, problems)
    deleted: list[str] = []
    kept: list[tuple[str, str]] = []
    if config.delete_sources:
        originals, kept = deletable(provenance, set(stored), {m for m in deleted_before if still_deleted(m)})
        # originals go only once their files' rows are committed, and outside any retried block: a retried block
        # must not delete twice (the second time would find the blob gone and report it kept)
        # the leases media writes those rows under (media_leases): an original stored or stored again by another
        # keyword meanwhile waits until its users were read and it was deleted
        with warehouse.lease(media_leases(originals)):
            for attempt in warehouse.retrying():
                with attempt as conn:
                    users = original_users(conn, partition_key, originals)
            going, refused = removable(blob_store, originals, users)
            # each deletion is on record before its original goes: a run that dies or a store that fails halfway
            # leaves records whose original may still be there (readers check: ``still_deleted``), never an
            # original gone with no record (it would be downloaded and sampled again)
            if going:
                records = pd.DataFrame({"media_id": list(going), "blob_key": list(going.values()),
                                        "verified_by": partition_key})  # fmt: skip
                for attempt in warehouse.retrying(lease=partition_key):
                    with attempt as conn:
                        conn.execute("DELETE FROM deleted_sources WHERE list_contains(?, media_id)", [list(going)])
                        insert_rows(conn, "deleted_sources", records)
            not_deleted: list[tuple[str, str]] = []
            try:
                delete_originals(blob_store, going, deleted, not_deleted)
            finally:  # also when the store failed halfway: the records say what is gone, no more
                kept += refused + not_deleted
                record_deletions(warehouse, partition_key, going, deleted, problems + refused + not_deleted)
    for attempt in warehouse.retrying():
        with attempt as conn:
            table_meta, unique_key = table_report(
                conn, partition_key, "pose_datasets", ["pose_datasets", "deleted_sources"]
            )
    keep = [key for f in stored.values() for key in (f.blob_key, f.sidecar_key)]
    orphans, not_removed, missing = remove_orphans(blob_store, prefix, keep)  # only now that the new files are stored
    for item, reason in [*problems, *kept][:20]:
        context.log.warning(f"{item}: {reason}")
    keyword_file = stored.get(KEYWORD_ROW)
    sample = [[info[column] for column in SAMPLE_COLUMNS] for info in list(provenance.values())[:10]]
    failed = [m for m in [*provenance, KEYWORD_ROW] if m not in stored]
    return dg.MaterializeResult(
        metadata={
            **table_meta,
            "files": len(stored),
            "files_written_now": len(set(stored) - unchanged),  # the others hold what they held: kept as they were
            "frames": keyword_file.frames if keyword_file else sum(item.frames for item in items),
            "media_items": len(provenance),
            "deleted_sources": len(deleted),
            "kept_sources": dg.MetadataValue.json([{"media_id": m, "reason": r} for m, r in kept[:50]]),
            "keyword_file": metadata_location(keyword_file.uri) if keyword_file else "not written",
            "orphans_removed": orphans,
            "orphans_not_removed": dg.MetadataValue.json(not_removed[:20]),  # the store refused: left for blob_gc
            "problems": dg.MetadataValue.json([{"item": i, "reason": r} for i, r in problems[:50]]),
            "sample": dg.MetadataValue.md(markdown_table(SAMPLE_COLUMNS, sample, "_no poses_")),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="files_verified",
                passed=not failed and not missing,
                metadata={"verified": len(stored), "not_verified": len(failed), "missing_after_store": len(missing)},
            ),
            unique_key,
            output_check(
                len(provenance),
                len(set(stored) - {KEYWORD_ROW}),
                "no media item's file was verified" + first_reasons(problems),
                upstream="poses",
            ),
        ],
    )
