"""blob_gc: deletes the stored media, frames and outputs that no warehouse row refers to any more.

Media are stored once per media id and frames once per media item and sampling, shared by every keyword that
finds them, so no stage deletes a shared blob; this asset does, reference-counted against the whole warehouse.

References: every value of every column named ``blob_key`` or ``sidecar_key``, in every table the DDL files
declare (``mining_assets.warehouse.tables()``: media, video_frames, frames, frame_embeddings, pose_datasets,
deleted_sources ...) and in any other table of the lake that has such a column (one of an earlier data model not
migrated yet), all read in one snapshot. A new table with a ``blob_key`` column is counted without editing this
module. ``deleted_sources.blob_key`` names originals already removed; counting it only keeps a key that is gone.

Prefixes in scope (``RECORDED_PREFIXES``), each holding only blobs whose key a row records:

- ``videos/``, ``photos/``: the originals, ``media.blob_key`` (``videos/<media_id>.<ext>``, ``photos/...``).
- ``frames/``: sampled frames, ``video_frames.blob_key`` and ``frames.blob_key`` (``frames/<media_id>/<sampling>/``).
- ``embeddings/``: the .npy shards of ``frame_embeddings.blob_key`` (content-named, under ``embeddings/<keyword>/``).
- ``pose_datasets/``: each HDF5 file and its JSON sidecar, ``pose_datasets.blob_key`` and ``sidecar_key``.

Out of scope, never listed nor deleted: ``coco/`` (the COCO json of ``coco_annotations``) and ``visualizations/``
(the drawings of ``detection_visualizations``), per-keyword files under a ``{stage}/{storage_key}`` prefix
(``vision.common.partition_prefix``) that no table records, so every one of them would look unreferenced; their
stages replace them. ``lake/`` holds the lake's own Parquet files (``lake_maintenance`` removes those). A
configured prefix outside the recorded ones is refused before anything is read.

Safety: a blob younger than ``min_age_hours`` is never deleted, so a run that has stored a blob and not yet
written its row keeps it; the age is measured from the moment before the references are read. A reused blob is
always one a row already names (``media`` reuses a stored file only through its ``media`` row). References are
kept as 64-bit hashes of the keys, sorted: millions of keys fit in tens of megabytes, and a collision can only
keep a blob, never delete a referenced one.
"""

# no ``from __future__ import annotations``: Dagster cannot resolve a Config's ``list[str]`` field from a string
import hashlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from mining_assets.warehouse import tables
from resources.blob_store import BlobDeleteError, BlobEntry, BlobStore, check_key
from resources.warehouse import LAKE, Warehouse

if TYPE_CHECKING:
    import duckdb
    import numpy as np

REFERENCE_COLUMNS = ("blob_key", "sidecar_key")
RECORDED_PREFIXES = ("videos/", "photos/", "frames/", "embeddings/", "pose_datasets/")
FETCH_ROWS = 50_000  # references are read from the lake in chunks of this many keys
EXAMPLES = 20

# what happens to a listed blob
OUTSIDE, REFERENCED, YOUNG, INVALID, GARBAGE = "outside", "referenced", "young", "invalid", "garbage"


class BlobGcConfig(dg.Config):
    min_age_hours: float = 6.0  # blobs younger than this are never deleted: their rows may not be written yet
    dry_run: bool = False  # report what would be deleted, delete nothing
    prefixes: list[str] = list(RECORDED_PREFIXES)  # a subset (or narrower folders) of the recorded prefixes
    batch_size: int = 1000  # keys per delete call


def normalized_prefixes(prefixes: Iterable[str]) -> list[str]:
    """The prefixes as folders (``frames`` -> ``frames/``), without those inside another, sorted.

    Raises:
        ValueError: a prefix that is not a safe folder inside one of ``RECORDED_PREFIXES``.
    """
    folders = set()
    for prefix in prefixes:
        folder = prefix.strip("/") + "/" if isinstance(prefix, str) else prefix
        if not isinstance(folder, str) or folder == "/" or not folder.startswith(RECORDED_PREFIXES):
            recorded = ", ".join(RECORDED_PREFIXES)
            raise ValueError(f"prefix {prefix!r} is outside the prefixes that hold only blobs rows record ({recorded})")
        check_key(folder.rstrip("/"))
        folders.add(folder)
    return sorted(f for f in folders if not any(f != other and f.startswith(other) for other in folders))


def key_hash(key: str) -> int:
    """A 64-bit hash of a key (blake2b): stable across processes, unlike ``hash``."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class ReferenceSet:
    """The referenced keys as sorted unique 64-bit hashes: ``key in references``. A false positive (two keys, one
    hash) keeps a blob; there are no false negatives."""

    def __init__(self, hashes: "np.ndarray", count: int):
        self.hashes = hashes
        self.count = count  # distinct keys read

    @classmethod
    def from_chunks(cls, chunks: Iterable[Sequence[str]]) -> "ReferenceSet":
        import numpy as np

        parts, count = [], 0
        for chunk in chunks:
            parts.append(np.fromiter((key_hash(key) for key in chunk), dtype=np.uint64, count=len(chunk)))
            count += len(chunk)
        hashes = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)
        return cls(hashes, count)

    @classmethod
    def from_keys(cls, keys: Iterable[str]) -> "ReferenceSet":
        return cls.from_chunks([list(dict.fromkeys(keys))])

    def __contains__(self, key: object) -> bool:
        import numpy as np

        if not isinstance(key, str) or not len(self.hashes):
            return False
        value = np.uint64(key_hash(key))
        index = int(np.searchsorted(self.hashes, value))
        return index < len(self.hashes) and self.hashes[index] == value

    def __len__(self) -> int:
        return self.count


def reference_columns(conn: "duckdb.DuckDBPyConnection") -> list[tuple[str, str]]:
    """(table, column) of every column named like a blob reference: the declared tables' and any other base table's
    of the lake."""
    declared = {(table, column) for table, spec in tables().items() for column in spec["columns"]
                if column in REFERENCE_COLUMNS}  # fmt: skip
    in_lake = conn.execute(
        "SELECT c.table_name, c.column_name FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_catalog, table_schema, table_name) "
        "WHERE c.table_catalog = ? AND c.table_schema = 'main' AND t.table_type = 'BASE TABLE' "
        "AND c.column_name IN ?",
        [LAKE, list(REFERENCE_COLUMNS)],
    ).fetchall()
    return sorted(declared | {(table, column) for table, column in in_lake})


def read_references(
    conn: "duckdb.DuckDBPyConnection", prefixes: Sequence[str], fetch_rows: int = FETCH_ROWS
) -> tuple[ReferenceSet, list[tuple[str, str]]]:
    """The distinct referenced keys under the prefixes, streamed from one query; and the columns read."""
    columns = reference_columns(conn)
    if not columns or not prefixes:
        return ReferenceSet.from_keys([]), columns
    union = " UNION ALL ".join(f'SELECT "{column}" AS key FROM "{table}"' for table, column in columns)
    under = " OR ".join("starts_with(key, ?)" for _ in prefixes)
    cursor = conn.execute(f"SELECT DISTINCT key FROM ({union}) WHERE key IS NOT NULL AND ({under})", list(prefixes))

    def chunks() -> Iterator[list[str]]:
        while rows := cursor.fetchmany(fetch_rows):
            yield [row[0] for row in rows]

    return ReferenceSet.from_chunks(chunks()), columns


def classify(entry: BlobEntry, references: ReferenceSet, prefixes: Sequence[str], cutoff: datetime) -> str:
    """What GC does with one listed blob: keep it (``outside`` the prefixes, ``referenced``, ``young``: modified
    after ``cutoff``, ``invalid``: a key the store cannot address) or delete it (``garbage``)."""
    if not entry.key.startswith(tuple(prefixes)):
        return OUTSIDE
    if entry.key in references:
        return REFERENCED
    if entry.modified > cutoff:
        return YOUNG
    try:
        check_key(entry.key)
    except ValueError:
        return INVALID
    return GARBAGE


def collect_garbage(
    entries: Iterable[BlobEntry],
    references: ReferenceSet,
    prefixes: Sequence[str],
    now: datetime,
    min_age: timedelta,
    tally: Counter,
) -> Iterator[BlobEntry]:
    """The listed blobs to delete, lazily; every listed blob's verdict is counted in ``tally``."""
    cutoff = now - min_age
    for entry in entries:
        verdict = classify(entry, references, prefixes, cutoff)
        tally[verdict] += 1
        if verdict == GARBAGE:
            yield entry


def batched(items: Iterable[BlobEntry], size: int) -> Iterator[list[BlobEntry]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, max(1, size))):
        yield batch


@dataclass
class Sweep:
    """What one collection did; ``tally`` counts every listed blob by verdict (``classify``)."""

    tally: Counter = field(default_factory=Counter)
    candidates: int = 0
    candidate_bytes: int = 0
    deleted: int = 0
    bytes_freed: int = 0
    examples: list[str] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def scanned(self) -> int:
        return sum(self.tally.values())


def sweep(
    blob_store: BlobStore,
    references: ReferenceSet,
    prefixes: Sequence[str],
    now: datetime,
    min_age: timedelta,
    dry_run: bool = False,
    batch_size: int = 1000,
    log: Callable[[str], None] | None = None,
) -> Sweep:
    """List each prefix and delete, in batches, the blobs that are neither referenced nor younger than ``min_age``
    at ``now``. A batch the store partly refuses is recorded in ``failures`` and the sweep goes on."""
    result = Sweep()
    for prefix in prefixes:
        before = Counter(result.tally)
        garbage = collect_garbage(blob_store.list_entries(prefix), references, prefixes, now, min_age, result.tally)
        for batch in batched(garbage, batch_size):
            result.candidates += len(batch)
            result.candidate_bytes += sum(entry.size for entry in batch)
            if dry_run:
                result.examples += [entry.key for entry in batch[: EXAMPLES - len(result.examples)]]
                continue
            try:
                deleted, failures = blob_store.delete([entry.key for entry in batch]), []
            except BlobDeleteError as error:
                deleted, failures = error.deleted, error.failures
            failed = {key for key, _, _ in failures}
            gone = [entry for entry in batch if entry.key not in failed]
            result.deleted += deleted
            result.bytes_freed += sum(entry.size for entry in gone)
            result.failures += failures
            result.examples += [entry.key for entry in gone[: EXAMPLES - len(result.examples)]]
        if log:
            counts = {verdict: result.tally[verdict] - before[verdict] for verdict in result.tally}
            log(f"{prefix}: {sum(counts.values())} listed, {dict(sorted(counts.items()))}")
    return result


@dg.asset(
    group_name="maintenance",
    kinds={"duckdb"},
    check_specs=[
        dg.AssetCheckSpec(
            "deletes_succeeded",
            asset="blob_gc",
            blocking=False,
            description="Every unreferenced blob the sweep tried to delete is gone from the store.",
        ),
    ],
)
def blob_gc(
    context: dg.AssetExecutionContext, config: BlobGcConfig, blob_store: BlobStore, warehouse: Warehouse
) -> dg.MaterializeResult:
    """Frees storage by deleting stored videos, photos, frames and outputs that no warehouse row refers to."""
    prefixes = normalized_prefixes(config.prefixes)
    if config.min_age_hours < 0:
        raise ValueError(f"min_age_hours must be 0 or more (got {config.min_age_hours})")
    min_age = timedelta(hours=config.min_age_hours)
    now = datetime.now(UTC)  # before the snapshot: a blob stored after it is younger than the cutoff allows
    for attempt in warehouse.retrying():
        with attempt as conn:  # one snapshot of every reference
            references, columns = read_references(conn, prefixes)
    context.log.info(f"{len(references)} referenced keys under {prefixes} in {len(columns)} columns")
    result = sweep(blob_store, references, prefixes, now, min_age, config.dry_run, config.batch_size, context.log.info)
    for key, code, message in result.failures[:EXAMPLES]:
        context.log.warning(f"{key}: {code} {message}")
    failed = len(result.failures)
    return dg.MaterializeResult(
        metadata={
            "referenced": len(references),
            "scanned": result.scanned,
            "referenced_kept": result.tally[REFERENCED],
            "young_kept": result.tally[YOUNG],
            "invalid_kept": result.tally[INVALID],
            "candidates": result.candidates,
            "candidate_bytes": result.candidate_bytes,
            "deleted": result.deleted,
            "bytes_freed": result.bytes_freed,
            "failed": failed,
            "dry_run": config.dry_run,
            "min_age_hours": config.min_age_hours,
            "prefixes": dg.MetadataValue.json(prefixes),
            "reference_columns": dg.MetadataValue.json([f"{table}.{column}" for table, column in columns]),
            "examples": dg.MetadataValue.json(result.examples),
            "problems": dg.MetadataValue.json(
                [{"key": key, "code": code, "reason": message} for key, code, message in result.failures[:EXAMPLES]]
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="deletes_succeeded",
                passed=failed == 0,
                metadata={
                    "failed": failed,
                    "codes": dg.MetadataValue.json(dict(Counter(c for _, c, _ in result.failures))),
                },
            )
        ],
    )


blob_gc_job = dg.define_asset_job(
    "blob_gc_job",
    selection=dg.AssetSelection.assets(blob_gc),
    description="Delete stored blobs that no warehouse row refers to (older than the configured minimum age).",
    executor_def=dg.in_process_executor,  # one step
)

blob_gc_schedule = dg.ScheduleDefinition(
    name="blob_gc_schedule",
    job=blob_gc_job,
    cron_schedule="30 4 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily blob garbage collection (04:30), after the nightly lake maintenance.",
)
