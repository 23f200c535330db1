"""blob_gc on a real lake, on a local store and on S3 (moto): what is referenced, young or outside the prefixes is
kept; old unreferenced blobs are deleted and counted exactly; S3's per-key delete errors are recorded."""

import os
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import boto3
import dagster as dg
import pandas as pd
import pytest
from dagster_aws.s3 import S3Resource

from mining_assets.blob_gc import (
    GARBAGE,
    INVALID,
    OUTSIDE,
    RECORDED_PREFIXES,
    REFERENCED,
    YOUNG,
    BlobGcConfig,
    ReferenceSet,
    blob_gc,
    blob_gc_job,
    blob_gc_schedule,
    classify,
    collect_garbage,
    normalized_prefixes,
    read_references,
    reference_columns,
    sweep,
)
from mining_assets.warehouse import insert_rows, tables
from resources.blob_store import BlobEntry, LocalBlobStore, S3BlobStore
from resources.warehouse import Warehouse

CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
SAMPLING = "s0123456789ab"
FRAME_0 = f"frames/yt-a/{SAMPLING}/0000000.jpg"
FRAME_30 = f"frames/yt-a/{SAMPLING}/0000030.jpg"
# each blob's content is its key, so the bytes freed are known
REFERENCED_KEYS = [
    "videos/yt-a.mp4",  # media
    "photos/pexels-1.jpg",  # media
    FRAME_0,  # video_frames and frames of glass-door
    FRAME_30,  # only a frames row of another partition (door-handle)
    "pose_datasets/glass-door/yt-a.h5",  # pose_datasets.blob_key
    "pose_datasets/glass-door/yt-a.json",  # pose_datasets.sidecar_key
]
OLD_GARBAGE = [
    "videos/yt-gone.mp4",
    f"frames/yt-gone/{SAMPLING}/0000000.jpg",
    "embeddings/glass-door/0123456789abcdef01234567.npy",
    "pose_datasets/glass-door/yt-gone.json",
]
YOUNG_GARBAGE = ["photos/pexels-new.jpg", f"frames/yt-b/{SAMPLING}/0000000.jpg"]
OUTSIDE_KEYS = [
    "coco/glass-door/instances.json",
    "visualizations/glass-door/yt-a_0000000.jpg",
    "lake/data/ducklake-0001.parquet",
    "framesets/yt-a.jpg",  # shares a beginning with frames/, not the folder
]
TOP_FOLDERS = ["videos", "photos", "frames", "embeddings", "pose_datasets", "coco", "visualizations", "lake",
               "framesets"]  # fmt: skip
PLACEHOLDERS = {"VARCHAR": "x", "BIGINT": 1, "INTEGER": 1, "DOUBLE": 1.0, "FLOAT": 1.0, "BOOLEAN": False}


@pytest.fixture
def warehouse(tmp_path) -> Warehouse:
    """The embedded lake (SQLite catalog, local data files) in this test's folder."""
    return Warehouse(
        catalog=f"sqlite:{tmp_path / 'lake' / 'catalog.sqlite'}", data_path=f"{tmp_path / 'lake' / 'data'}/"
    )


def s3_store(endpoint: str, tmp_path) -> S3BlobStore:
    bucket = f"gc-{abs(hash(str(tmp_path))) % 10**8}"
    boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS).create_bucket(Bucket=bucket)
    return S3BlobStore(bucket=bucket, prefix="mining", s3=S3Resource(endpoint_url=endpoint, **CREDENTIALS))


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalBlobStore(root=str(tmp_path / "blobs"))
    return s3_store(request.getfixturevalue("s3_endpoint"), tmp_path)


def row(table: str, **values) -> dict:
    """A row of ``table``: the values given, and a placeholder for every other NOT NULL column of its DDL."""
    columns = tables()[table]["columns"]
    unknown = set(values) - set(columns)
    assert not unknown, f"{table} has no columns {unknown}"
    filled = {column: PLACEHOLDERS[kind] for column, (kind, constraint, _) in columns.items()
              if "NOT NULL" in constraint and column not in values}  # fmt: skip
    return {**filled, **values}


def seed(lake: Warehouse) -> None:
    """Rows that refer to REFERENCED_KEYS, in one transaction."""
    media = [
        row("media", media_id="yt-a", media_type="video", source="youtube", blob_key="videos/yt-a.mp4"),
        row("media", media_id="pexels-1", media_type="photo", source="pexels", blob_key="photos/pexels-1.jpg"),
    ]
    video_frames = [row("video_frames", media_id="yt-a", sampling=SAMPLING, frame_index=0, frame_id="yt-a_0000000",
                        timestamp_s=0.0, blob_key=FRAME_0)]  # fmt: skip
    frames = [
        row("frames", partition_key="glass-door", keyword="glass door", frame_id="yt-a_0000000", media_id="yt-a",
            source="youtube", media_type="video", frame_index=0, blob_key=FRAME_0),
        row("frames", partition_key="door-handle", keyword="door handle", frame_id="yt-a_0000030", media_id="yt-a",
            source="youtube", media_type="video", frame_index=30, blob_key=FRAME_30),
    ]  # fmt: skip
    datasets = [row("pose_datasets", partition_key="glass-door", media_id="yt-a", blob_key=REFERENCED_KEYS[4],
                    sidecar_key=REFERENCED_KEYS[5])]  # fmt: skip
    for attempt in lake.retrying():
        with attempt as conn:
            for table, rows in [("media", media), ("video_frames", video_frames), ("frames", frames),
                                ("pose_datasets", datasets)]:  # fmt: skip
                insert_rows(conn, table, pd.DataFrame(rows))


def put_all(store) -> None:
    for key in REFERENCED_KEYS + OLD_GARBAGE + YOUNG_GARBAGE + OUTSIDE_KEYS:
        store.put_bytes(key, key.encode())


def age(store: LocalBlobStore, keys, hours: float = 7.0) -> None:
    """Make local blobs look written ``hours`` ago."""
    then = time.time() - hours * 3600
    for key in keys:
        os.utime(store.path_for(key), (then, then))


def stored(store) -> set[str]:
    return {entry.key for folder in TOP_FOLDERS for entry in store.list_entries(folder)}


def references(lake: Warehouse, prefixes=RECORDED_PREFIXES) -> ReferenceSet:
    for attempt in lake.retrying():
        with attempt as conn:
            found, _ = read_references(conn, list(prefixes))
    return found


def materialize(store, lake: Warehouse, **config) -> tuple[dict, dict]:
    result = dg.materialize([blob_gc], resources={"blob_store": store, "warehouse": lake},
                            run_config={"ops": {"blob_gc": {"config": config}}})  # fmt: skip
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("blob_gc")[0].metadata.items()}
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    return metadata, checks


# ---------------------------------------------------------------------- the asset, end to end
def test_blob_gc_on_a_local_store_keeps_what_is_referenced_young_or_outside(lake, tmp_path):
    """On both catalogs: a dry run reports and deletes nothing; the real run deletes exactly the old unreferenced
    blobs and counts what it removed; a second run finds nothing."""
    store = LocalBlobStore(root=str(tmp_path / "blobs"))
    seed(lake)
    put_all(store)
    age(store, REFERENCED_KEYS + OLD_GARBAGE + OUTSIDE_KEYS)
    before = stored(store)

    dry, checks = materialize(store, lake, dry_run=True)
    assert stored(store) == before
    assert (dry["dry_run"], dry["deleted"], dry["bytes_freed"]) == (True, 0, 0)
    assert dry["candidates"] == len(OLD_GARBAGE) and sorted(dry["examples"]) == sorted(OLD_GARBAGE)
    assert dry["candidate_bytes"] == sum(len(key) for key in OLD_GARBAGE)

    meta, checks = materialize(store, lake)
    after = stored(store)
    assert before - after == set(OLD_GARBAGE)
    assert meta["deleted"] == len(before - after) == len(OLD_GARBAGE)
    assert meta["bytes_freed"] == sum(len(key) for key in OLD_GARBAGE)
    assert set(REFERENCED_KEYS) | set(YOUNG_GARBAGE) | set(OUTSIDE_KEYS) <= after
    in_scope = len(REFERENCED_KEYS) + len(OLD_GARBAGE) + len(YOUNG_GARBAGE)
    assert (meta["referenced"], meta["scanned"], meta["referenced_kept"]) == (len(REFERENCED_KEYS), in_scope, 6)
    assert (meta["young_kept"], meta["invalid_kept"], meta["failed"]) == (len(YOUNG_GARBAGE), 0, 0)
    assert sorted(meta["examples"]) == sorted(OLD_GARBAGE)
    assert {"media.blob_key", "video_frames.blob_key", "frames.blob_key", "pose_datasets.sidecar_key"} <= set(
        meta["reference_columns"]
    )
    assert checks == {"deletes_succeeded": True}

    again, _ = materialize(store, lake)
    assert (again["deleted"], again["candidates"]) == (0, 0) and stored(store) == after


def test_blob_gc_on_s3_deletes_only_unreferenced_blobs(s3_endpoint, warehouse, tmp_path):
    """S3's LastModified cannot be set: with no minimum age every unreferenced blob in scope goes, nothing else."""
    store = s3_store(s3_endpoint, tmp_path)
    seed(warehouse)
    put_all(store)
    before = stored(store)
    meta, checks = materialize(store, warehouse, min_age_hours=0.0)
    after = stored(store)
    assert before - after == set(OLD_GARBAGE + YOUNG_GARBAGE)
    assert meta["deleted"] == len(before - after)
    assert after == set(REFERENCED_KEYS + OUTSIDE_KEYS)
    assert checks == {"deletes_succeeded": True}


def test_a_narrower_prefix_limits_the_sweep(warehouse, tmp_path):
    store = LocalBlobStore(root=str(tmp_path / "blobs"))
    seed(warehouse)
    put_all(store)
    age(store, OLD_GARBAGE)
    meta, _ = materialize(store, warehouse, prefixes=["videos"])
    assert stored(store) == set(REFERENCED_KEYS + OLD_GARBAGE + YOUNG_GARBAGE + OUTSIDE_KEYS) - {"videos/yt-gone.mp4"}
    assert (meta["deleted"], meta["prefixes"]) == (1, ["videos/"])


@pytest.mark.parametrize("prefixes", [["coco/"], ["visualizations"], ["lake/"], [""], ["/"], ["frames/../coco"]])
def test_a_prefix_outside_the_recorded_ones_is_refused_before_anything_is_read(prefixes, warehouse, tmp_path):
    store = LocalBlobStore(root=str(tmp_path / "blobs"))
    put_all(store)
    age(store, OUTSIDE_KEYS + OLD_GARBAGE)
    before = stored(store)
    with pytest.raises(ValueError):
        normalized_prefixes(prefixes)
    with pytest.raises(Exception, match=r"outside the prefixes|unsafe blob key"):
        materialize(store, warehouse, prefixes=prefixes)
    assert stored(store) == before


def test_the_job_and_daily_schedule_select_blob_gc():
    assert blob_gc_job.name == "blob_gc_job" and blob_gc_schedule.job_name == "blob_gc_job"
    assert blob_gc_schedule.cron_schedule == "30 4 * * *"
    assert blob_gc_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert blob_gc.group_names_by_key[dg.AssetKey("blob_gc")] == "maintenance"
    assert not blob_gc.partitions_def
    config = BlobGcConfig()
    assert (config.min_age_hours, config.dry_run, config.prefixes) == (6.0, False, list(RECORDED_PREFIXES))


# ---------------------------------------------------------------------- the sweep on both stores, explicit times
def test_sweep_keeps_young_blobs_and_deletes_old_ones_at_a_given_now(store, warehouse):
    seed(warehouse)
    put_all(store)
    found = references(warehouse)
    before = stored(store)
    prefixes = list(RECORDED_PREFIXES)
    unreferenced = set(OLD_GARBAGE + YOUNG_GARBAGE)
    six_hours = timedelta(hours=6)

    now = sweep(store, found, prefixes, datetime.now(UTC), six_hours)  # everything was just written
    assert (now.deleted, now.candidates, now.tally[YOUNG], now.tally[REFERENCED]) == (0, 0, len(unreferenced), 6)
    assert stored(store) == before

    later = datetime.now(UTC) + timedelta(hours=7)
    dry = sweep(store, found, prefixes, later, six_hours, dry_run=True)
    assert (dry.deleted, dry.candidates, set(dry.examples)) == (0, len(unreferenced), unreferenced)
    assert stored(store) == before

    done = sweep(store, found, prefixes, later, six_hours, batch_size=2)  # several delete calls
    after = stored(store)
    assert before - after == unreferenced
    assert done.deleted == len(before - after) and done.bytes_freed == sum(len(key) for key in unreferenced)
    assert set(OUTSIDE_KEYS) <= after and not done.failures
    assert done.scanned == len(REFERENCED_KEYS) + len(unreferenced) and done.tally[OUTSIDE] == 0


def test_a_blob_only_another_partitions_row_refers_to_is_kept(store, warehouse):
    """glass-door's frames are replaced without FRAME_30; door-handle's row still refers to it."""
    seed(warehouse)
    put_all(store)
    for attempt in warehouse.retrying(lease="glass-door"):
        with attempt as conn:
            conn.execute("DELETE FROM frames WHERE partition_key = 'glass-door'")
    result = sweep(store, references(warehouse), list(RECORDED_PREFIXES), datetime.now(UTC) + timedelta(days=1),
                   timedelta(hours=6))  # fmt: skip
    assert FRAME_30 in stored(store) and FRAME_0 in stored(store)  # FRAME_0: video_frames still has it
    assert FRAME_30 not in result.examples


def test_every_table_with_a_blob_key_column_counts(warehouse, tmp_path):
    """A table the DDL files do not declare (an earlier model's, not yet migrated) still protects its blobs."""
    store = LocalBlobStore(root=str(tmp_path / "blobs"))
    put_all(store)
    age(store, OLD_GARBAGE)
    warehouse.execute("CREATE TABLE legacy_videos (partition_key VARCHAR, blob_key VARCHAR)")
    warehouse.execute("INSERT INTO legacy_videos VALUES ('glass-door', 'videos/yt-gone.mp4')")
    for attempt in warehouse.retrying():
        with attempt as conn:
            columns = reference_columns(conn)
    declared = {(t, c) for t, spec in tables().items() for c in spec["columns"] if c in ("blob_key", "sidecar_key")}
    assert declared | {("legacy_videos", "blob_key")} == set(columns)
    assert {("media", "blob_key"), ("video_frames", "blob_key"), ("frames", "blob_key")} <= declared
    meta, _ = materialize(store, warehouse)
    assert "videos/yt-gone.mp4" in stored(store) and meta["deleted"] == len(OLD_GARBAGE) - 1


def test_references_are_read_in_chunks_and_only_under_the_prefixes(warehouse):
    seed(warehouse)
    for attempt in warehouse.retrying():
        with attempt as conn:
            found, _ = read_references(conn, ["frames/", "photos/"], fetch_rows=1)
    assert len(found) == 3  # FRAME_0 (twice in the tables), FRAME_30, the photo
    assert FRAME_0 in found and FRAME_30 in found and "photos/pexels-1.jpg" in found
    assert "videos/yt-a.mp4" not in found


# ---------------------------------------------------------------------- the pure decision
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SIX_HOURS = timedelta(hours=6)


@pytest.mark.parametrize(
    ("key", "modified", "expected"),
    [
        ("frames/yt-a/s1/0000000.jpg", NOW - timedelta(days=30), REFERENCED),  # referenced: kept however old
        ("videos/yt-old.mp4", NOW - timedelta(hours=7), GARBAGE),
        ("videos/yt-old.mp4", NOW - SIX_HOURS, GARBAGE),  # exactly the minimum age
        ("videos/yt-old.mp4", NOW - SIX_HOURS + timedelta(seconds=1), YOUNG),
        ("videos/yt-old.mp4", NOW + timedelta(hours=1), YOUNG),  # a store clock ahead of ours
        ("coco/glass-door/instances.json", NOW - timedelta(days=30), OUTSIDE),
        ("framesets/x.jpg", NOW - timedelta(days=30), OUTSIDE),
        ("frames/a b.jpg", NOW - timedelta(days=30), INVALID),  # the store could not be asked to delete it
    ],
)
def test_classify_at_explicit_times(key, modified, expected):
    found = ReferenceSet.from_keys(["frames/yt-a/s1/0000000.jpg", "photos/p.jpg"])
    assert classify(BlobEntry(key, modified, 10), found, ["frames/", "photos/", "videos/"], NOW - SIX_HOURS) == expected


def test_collect_garbage_counts_every_listed_blob():
    entries = [
        BlobEntry("videos/old.mp4", NOW - timedelta(hours=8), 5),
        BlobEntry("videos/new.mp4", NOW - timedelta(hours=1), 5),
        BlobEntry("videos/kept.mp4", NOW - timedelta(days=9), 5),
    ]
    tally = Counter()
    garbage = list(collect_garbage(entries, ReferenceSet.from_keys(["videos/kept.mp4"]), ["videos/"], NOW,
                                   SIX_HOURS, tally))  # fmt: skip
    assert [entry.key for entry in garbage] == ["videos/old.mp4"]
    assert tally == Counter({GARBAGE: 1, YOUNG: 1, REFERENCED: 1})


def test_a_reference_set_has_no_false_negatives():
    keys = [f"frames/m{i}/s1/{i:07d}.jpg" for i in range(20_000)]
    found = ReferenceSet.from_chunks([keys[:7_000], keys[7_000:]])
    assert len(found) == 20_000 and all(key in found for key in keys)
    assert sum(f"frames/other{i}.jpg" in found for i in range(20_000)) == 0
    assert "x" not in ReferenceSet.from_keys([])


def test_prefixes_are_folders_without_overlap():
    assert normalized_prefixes(["frames", "frames/yt-a/", "/videos/", "videos"]) == ["frames/", "videos/"]


# ---------------------------------------------------------------------- S3 refusing some deletes


def test_s3_keys_the_store_refuses_are_recorded_and_not_counted(stubbed_s3):
    store, stubber = stubbed_s3
    old = NOW - timedelta(days=1)
    listing = {"IsTruncated": False, "KeyCount": 3, "Contents": [
        {"Key": "mining/videos/a.mp4", "LastModified": old, "Size": 100},
        {"Key": "mining/videos/b.mp4", "LastModified": old, "Size": 200},
        {"Key": "mining/videos/c.mp4", "LastModified": old, "Size": 400},
    ]}  # fmt: skip
    stubber.add_response("list_objects_v2", listing, {"Bucket": "b", "Prefix": "mining/videos/"})
    refused = {"Key": "mining/videos/b.mp4", "Code": "AccessDenied", "Message": "Access Denied"}
    objects = [{"Key": f"mining/videos/{name}.mp4"} for name in "abc"]
    stubber.add_response("delete_objects", {"Errors": [refused]},
                         {"Bucket": "b", "Delete": {"Objects": objects, "Quiet": True}})  # fmt: skip
    result = sweep(store, ReferenceSet.from_keys([]), ["videos/"], NOW, SIX_HOURS)
    assert (result.deleted, result.bytes_freed) == (2, 500)
    assert result.failures == [("videos/b.mp4", "AccessDenied", "Access Denied")]
    assert sorted(result.examples) == ["videos/a.mp4", "videos/c.mp4"]


def test_the_asset_check_fails_when_deletes_are_refused(stubbed_s3, warehouse):
    store, stubber = stubbed_s3
    entry = {"Key": "mining/videos/a.mp4", "LastModified": NOW - timedelta(days=1), "Size": 100}
    listing = {"IsTruncated": False, "KeyCount": 1, "Contents": [entry]}
    stubber.add_response("list_objects_v2", listing, {"Bucket": "b", "Prefix": "mining/videos/"})
    stubber.add_response("delete_objects", {"Errors": [{"Key": "mining/videos/a.mp4", "Code": "AccessDenied",
                                                        "Message": "Access Denied"}]})  # fmt: skip
    meta, checks = materialize(store, warehouse, prefixes=["videos/"])
    assert (meta["deleted"], meta["failed"], meta["bytes_freed"]) == (0, 1, 0)
    assert meta["problems"] == [{"key": "videos/a.mp4", "code": "AccessDenied", "reason": "Access Denied"}]
    assert checks == {"deletes_succeeded": False}


def test_a_negative_minimum_age_is_refused(warehouse, tmp_path):
    store = LocalBlobStore(root=str(tmp_path / "blobs"))
    put_all(store)
    with pytest.raises(Exception, match="min_age_hours must be 0 or more"):
        materialize(store, warehouse, min_age_hours=-1.0)
    assert stored(store) == set(REFERENCED_KEYS + OLD_GARBAGE + YOUNG_GARBAGE + OUTSIDE_KEYS)
