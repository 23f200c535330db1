"""pose_datasets: HDF5 files and JSON sidecars per media item and per keyword, read back with h5py alone; sources
deleted only after verification; hostile keywords kept inside the store."""

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

import dagster as dg
import h5py
import numpy as np
import pandas as pd
import pytest
from harness import nothing_written_beside, query, query_dicts
from vision_support import seed_media

from mining_assets.partitions import keyword_slug
from mining_assets.poses import datasets as datasets_module
from mining_assets.poses.datasets import pose_datasets
from mining_assets.poses.hdf5 import MediaPoses, hdf5_attribute, pose_arrays, verify, write_media_file
from mining_assets.vision.common import partition_prefix
from mining_assets.warehouse import insert_rows, replace_partition_rows

VIDEO, PHOTO, OTHER_VIDEO = "youtube-vid001", "pexels-42", "youtube-vid002"
VIDEO_URL, PHOTO_URL = "https://www.youtube.com/watch?v=vid001", "https://www.pexels.com/photo/42/"
VIDEO_KEY, PHOTO_KEY = f"videos/{VIDEO}.mp4", f"photos/{PHOTO}.jpg"
MODELS = "mediapipe:pose_landmarker_full.task@3f2a1b0c9d8e+hand_landmarker.task@7a6b5c4d3e2f"


def content(frame_id: str) -> str:
    """A frame's content hash: distinct per frame."""
    return hashlib.sha256(frame_id.encode()).hexdigest()


def landmarks(rng, points: int, dims: int) -> list[float]:
    """Plausible landmarks as float32 values (exactly what a FLOAT[] column holds)."""
    values = rng.uniform(0.05, 0.95, (points, dims)).astype(np.float32)
    if dims == 4:
        values[:, 2] = rng.uniform(-0.3, 0.3, points)  # z relative to the hips
    return values.reshape(-1).tolist()


def pose_row(rng, partition_key, frame_id, media_id, media_type, index, stamp, hands=(True, True), found=True):
    """One poses row; a hand or the whole pose can be missing."""
    left, right = hands
    return {
        "partition_key": partition_key, "frame_id": frame_id, "frame_sha256": content(frame_id),
        "media_id": media_id, "media_type": media_type,
        "sequence_index": index, "timestamp_s": stamp, "image_width": 640, "image_height": 480,
        "pose_found": found, "pose_landmarks": landmarks(rng, 33, 4) if found else None,
        "pose_world_landmarks": landmarks(rng, 33, 3) if found else None,
        "left_hand": landmarks(rng, 21, 3) if left else None, "left_hand_score": 0.97 if left else None,
        "right_hand": landmarks(rng, 21, 3) if right else None, "right_hand_score": 0.88 if right else None,
        "models": MODELS,
    }  # fmt: skip


def video_item(video: str) -> dict:
    """A YouTube video as the registry names it and media stores it."""
    return {"media_id": video, "media_type": "video", "source": "youtube", "blob_key": f"videos/{video}.mp4",
            "url": f"https://www.youtube.com/watch?v={video.removeprefix('youtube-')}", "channel": "Door Channel",
            "title": "A glass door", "duration_s": 2.5}  # fmt: skip


PHOTO_ITEM = {"media_id": PHOTO, "media_type": "photo", "source": "pexels", "blob_key": PHOTO_KEY,
              "url": "https://images.pexels.com/42.jpg", "page_url": PHOTO_URL, "photographer": "Ana",
              "license": "Pexels License"}  # fmt: skip


def seed(resources: dict, keyword: str, seed_value: int = 0, videos=(VIDEO,)) -> tuple[str, list[dict]]:
    """Videos with 5 posed frames each (one without hands, one without a pose) and a photo, as the upstream stages
    leave them: stored originals, source rows (registry, keyword_media, media), catalog rows and poses rows
    (inserted out of order). Returns the partition key and the poses rows."""
    rng = np.random.default_rng(seed_value)
    partition_key, store = keyword_slug(keyword), resources["blob_store"]
    frame = {"partition_key": partition_key, "keyword": keyword, "width": 640, "height": 480}
    hands = [(True, True), (True, False), (False, False), (True, True), (False, True)]
    items, frames, poses = [], [], []
    for video in videos:
        item = video_item(video)
        item |= {"page_url": item["url"], "uri": store.put_bytes(item["blob_key"], b"original video")}
        items.append(item)
        for i in range(5):
            frame_id = f"{video}-{i:05d}"
            frames.append({**frame, "frame_id": frame_id, "media_id": video, "source": "youtube",
                           "media_type": "video", "frame_index": 15 * i, "timestamp_s": 0.5 * i,
                           "source_url": item["url"], "blob_key": f"frames/{video}/s0/{15 * i:07d}.jpg",
                           "uri": "file:///f.jpg", "sha256": content(frame_id)})  # fmt: skip
            poses.append(pose_row(rng, partition_key, frame_id, video, "video", i, 0.5 * i, hands[i], found=i != 3))
    items.append(PHOTO_ITEM | {"uri": store.put_bytes(PHOTO_KEY, b"photo")})
    frames.append({**frame, "frame_id": PHOTO, "media_id": PHOTO, "source": "pexels", "media_type": "photo",
                   "frame_index": None, "timestamp_s": None, "source_url": PHOTO_URL, "blob_key": PHOTO_KEY,
                   "uri": items[-1]["uri"], "sha256": content(PHOTO)})  # fmt: skip
    poses.append(pose_row(rng, partition_key, PHOTO, PHOTO, "photo", 0, None))
    tables = {"keywords": [{"partition_key": partition_key, "keyword": keyword}], "frames": frames,
              "poses": poses[::-1]}  # fmt: skip
    for attempt in resources["warehouse"].retrying():
        with attempt as conn:
            seed_media(conn, partition_key, keyword, items)
            for table, rows in tables.items():
                replace_partition_rows(conn, table, partition_key, pd.DataFrame(rows))
    return partition_key, poses


def run(resources, instance, partition_key, **config):
    instance.add_dynamic_partitions("keyword", [partition_key])
    run_config = {"ops": {"pose_datasets": {"config": config}}} if config else None
    result = dg.materialize([pose_datasets], partition_key=partition_key, resources=resources, instance=instance,
                            run_config=run_config)  # fmt: skip
    # produced_output (does the keyword get any file) is tests/test_checks.py's: these tests look at the files
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations() if e.check_name != "produced_output"}
    meta = {k: v.value for k, v in result.asset_materializations_for_node("pose_datasets")[0].metadata.items()}
    return meta, checks


def stored_path(resources, key: str) -> Path:
    return resources["blob_store"].path_for(key)


def dataset_file(resources, media_id: str, sidecar: bool = False) -> Path:
    """The stored file (or its sidecar) a media item's row names (``keyword``: the keyword's), named by content."""
    column = "sidecar_key" if sidecar else "blob_key"
    ((key,),) = query(resources, f"SELECT {column} FROM pose_datasets WHERE media_id = ?",
                      "*" if media_id == "keyword" else media_id)  # fmt: skip
    return stored_path(resources, key)


def h5_shapes(src: h5py.File) -> dict[str, list[int]]:
    shapes = {}

    def visit(name: str, obj) -> None:  # returning anything but None would stop the walk
        if isinstance(obj, h5py.Dataset):
            shapes["/" + name] = list(obj.shape)

    src.visititems(visit)
    return shapes


def test_files_hold_exactly_the_pose_rows_with_provenance(resources, instance):
    partition_key, poses = seed(resources, "glass door")
    meta, checks = run(resources, instance, partition_key)
    assert checks == {"files_verified": True, "unique_key": True}
    assert (meta["files"], meta["frames"], meta["media_items"], meta["deleted_sources"]) == (3, 6, 2, 0)
    assert meta["problems"] == [] and re.search(
        r"pose_datasets/glass-door/keyword\.[0-9a-f]{12}\.h5$", meta["keyword_file"]
    )
    prefix = partition_prefix("pose_datasets", partition_key)
    expected = pose_arrays([p for p in poses if p["media_id"] == VIDEO])
    with h5py.File(dataset_file(resources, VIDEO), "r") as video:
        assert video["pose_landmarks"].shape == (5, 33, 4) and video["pose_landmarks"].dtype == np.float32
        assert video["pose_world_landmarks"].shape == (5, 33, 3)
        assert video["left_hand"].shape == video["right_hand"].shape == (5, 21, 3)
        assert video["pose_landmarks"].compression == "gzip"
        assert list(video["frame_ids"].asstr()[()]) == [f"{VIDEO}-{i:05d}" for i in range(5)]
        assert video["timestamps_s"][()].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
        assert video["pose_found"][()].tolist() == [True, True, True, False, True]
        assert np.array_equal(video["pose_landmarks"][0].reshape(-1), np.float32(poses[0]["pose_landmarks"]))
        assert np.isnan(video["pose_landmarks"][3]).all()  # no pose found in that frame
        assert np.isnan(video["left_hand"][2]).all() and np.isnan(video["right_hand"][2]).all()  # no hands
        assert np.isfinite(video["left_hand"][1]).all() and np.isnan(video["right_hand"][1]).all()
        assert np.array_equal(video["hand_scores"][()], expected["hand_scores"], equal_nan=True)
        for name in ("pose_world_landmarks", "left_hand", "right_hand", "image_size"):
            assert np.array_equal(video[name][()], expected[name], equal_nan=True), name
        attrs = dict(video.attrs)
    assert {k: attrs[k] for k in ("media_id", "media_type", "source", "source_url", "license", "creator")} == {
        "media_id": VIDEO, "media_type": "video", "source": "youtube", "source_url": VIDEO_URL,
        "license": "", "creator": "Door Channel",
    }  # fmt: skip
    assert (attrs["keyword"], attrs["partition_key"], attrs["frames"], attrs["schema_version"]) == (
        "glass door", "glass-door", 5, 1)  # fmt: skip
    assert json.loads(attrs["models"]) == [MODELS] and datetime.fromisoformat(attrs["created_at"]).tzinfo

    with h5py.File(dataset_file(resources, PHOTO), "r") as photo:
        assert photo["pose_landmarks"].shape == (1, 33, 4) and np.isnan(photo["timestamps_s"][()]).all()
        assert (photo.attrs["license"], photo.attrs["creator"], photo.attrs["source_url"]) == (
            "Pexels License", "Ana", PHOTO_URL)  # fmt: skip

    with h5py.File(dataset_file(resources, "keyword"), "r") as whole:
        assert sorted(whole["media"]) == sorted([VIDEO, PHOTO])
        assert (whole.attrs["frames"], whole.attrs["media_items"], whole.attrs["file_kind"]) == (6, 2, "keyword")
        group = whole["media"][VIDEO]
        assert dict(group.attrs) == attrs
        assert np.array_equal(group["pose_landmarks"][()], expected["pose_landmarks"], equal_nan=True)

    for name in (VIDEO, PHOTO, "keyword"):
        data = dataset_file(resources, name).read_bytes()
        document = json.loads(dataset_file(resources, name, sidecar=True).read_text())
        assert document["sha256"] == hashlib.sha256(data).hexdigest() and document["size_bytes"] == len(data)
        with h5py.File(dataset_file(resources, name), "r") as src:
            assert {k: hdf5_attribute(v) for k, v in document["attributes"].items()} == dict(src.attrs)
            shapes = h5_shapes(src)
        assert {path: entry["shape"] for path, entry in document["datasets"].items()} == shapes
    assert document["media"][VIDEO]["license"] is None and document["media"][PHOTO]["license"] == "Pexels License"

    rows = query(resources, "SELECT media_id, frames, blob_key, sidecar_key, source_deleted FROM pose_datasets "
                 "ORDER BY media_id")  # fmt: skip
    named = [(m, n, re.sub(r"\.[0-9a-f]{12}\.", ".", k), re.sub(r"\.[0-9a-f]{12}\.", ".", s), d)
             for m, n, k, s, d in rows]  # fmt: skip
    assert named == [("*", 6, f"{prefix}/keyword.h5", f"{prefix}/keyword.json", False),
                     (PHOTO, 1, f"{prefix}/{PHOTO}.h5", f"{prefix}/{PHOTO}.json", False),
                     (VIDEO, 5, f"{prefix}/{VIDEO}.h5", f"{prefix}/{VIDEO}.json", False)]  # fmt: skip
    assert all(k.removesuffix(".h5") == s.removesuffix(".json") for _, _, k, s, _ in rows)  # a pair per file
    assert resources["blob_store"].exists(VIDEO_KEY) and resources["blob_store"].exists(PHOTO_KEY)


def test_rerun_replaces_rows_and_removes_orphaned_files(resources, instance):
    partition_key, _ = seed(resources, "glass door")
    prefix = partition_prefix("pose_datasets", partition_key)
    run(resources, instance, partition_key)
    first = set(resources["blob_store"].list_keys(prefix))
    resources["blob_store"].put_bytes(f"{prefix}/youtube-gone.h5", b"stale")
    resources["blob_store"].put_bytes(f"{prefix}/youtube-gone.json", b"{}")
    query(resources, "DELETE FROM poses WHERE media_id = ?", PHOTO)
    meta, checks = run(resources, instance, partition_key)
    assert checks == {"files_verified": True, "unique_key": True}
    kept = {key for pair in query(resources, "SELECT blob_key, sidecar_key FROM pose_datasets") for key in pair}
    assert resources["blob_store"].list_keys(prefix) == sorted(kept)
    # the stale pair, and every earlier file no row names now: the photo's pair and the keyword's (it holds one
    # item less); the video's file holds what it held and is kept as it was
    assert meta["orphans_removed"] == 2 + len(first - kept) and len(first - kept) == 4
    assert meta["files_written_now"] == 1
    assert query(resources, "SELECT media_id, frames FROM pose_datasets ORDER BY media_id") == [("*", 5), (VIDEO, 5)]


def test_an_unchanged_rerun_writes_no_file_and_a_changed_item_only_its_own(resources, instance):
    partition_key, _ = seed(resources, "glass door")
    prefix = partition_prefix("pose_datasets", partition_key)
    first_meta, _ = run(resources, instance, partition_key)
    assert first_meta["files_written_now"] == 3
    rows = query(resources, "SELECT * FROM pose_datasets ORDER BY ALL")
    files = resources["blob_store"].list_keys(prefix)
    meta, checks = run(resources, instance, partition_key)
    assert all(checks.values()) and (meta["files_written_now"], meta["orphans_removed"]) == (0, 0)
    assert query(resources, "SELECT * FROM pose_datasets ORDER BY ALL") == rows
    assert resources["blob_store"].list_keys(prefix) == files

    query(resources, "UPDATE poses SET image_width = 800 WHERE media_id = ?", PHOTO)
    meta, checks = run(resources, instance, partition_key)
    assert all(checks.values()) and meta["files_written_now"] == 2  # the photo's file and the keyword's
    after = dict(query(resources, "SELECT media_id, blob_key FROM pose_datasets"))
    assert after[VIDEO] == dict((row[1], row[3]) for row in rows)[VIDEO]
    assert after[PHOTO] != dict((row[1], row[3]) for row in rows)[PHOTO]
    assert resources["blob_store"].list_keys(prefix) == sorted(
        key for pair in query(resources, "SELECT blob_key, sidecar_key FROM pose_datasets") for key in pair
    )

    resources["blob_store"].delete([after[VIDEO]])  # a file gone from the store is written again
    meta, _ = run(resources, instance, partition_key)
    assert meta["files_written_now"] == 1


def kept_sources(meta) -> dict[str, str]:
    return {kept["media_id"]: kept["reason"] for kept in meta["kept_sources"]}


PHOTO_KEPT = "a photo: only videos' originals are deleted"


def test_delete_sources_deletes_videos_only_after_verification(resources, instance):
    partition_key, _ = seed(resources, "glass door")
    meta, checks = run(resources, instance, partition_key, delete_sources=True)
    assert checks == {"files_verified": True, "unique_key": True} and meta["deleted_sources"] == 1
    assert not resources["blob_store"].exists(VIDEO_KEY) and resources["blob_store"].exists(PHOTO_KEY)
    assert kept_sources(meta) == {PHOTO: PHOTO_KEPT}
    (record,) = query_dicts(resources, "SELECT * FROM deleted_sources")
    assert {k: record[k] for k in ("media_id", "blob_key", "verified_by")} == {
        "media_id": VIDEO, "blob_key": VIDEO_KEY, "verified_by": partition_key}  # fmt: skip
    assert record["deleted_at"] is not None
    deleted = "SELECT media_id, source_deleted FROM pose_datasets ORDER BY media_id"
    expected = [{"media_id": "*", "source_deleted": False}, {"media_id": PHOTO, "source_deleted": False},
                {"media_id": VIDEO, "source_deleted": True}]  # fmt: skip
    assert query_dicts(resources, deleted) == expected
    assert query_dicts(resources, "SELECT item, status FROM media_status ORDER BY item") == [
        {"item": PHOTO, "status": "complete"}, {"item": VIDEO, "status": "source_deleted"}]  # fmt: skip
    assert query_dicts(resources, "SELECT * FROM pose_datasets_errors") == []  # keeping a photo is no error
    assert all(dataset_file(resources, n).is_file() for n in (VIDEO, PHOTO, "keyword"))
    meta, _ = run(resources, instance, partition_key)  # a later run still knows the original is gone
    assert query_dicts(resources, deleted) == expected and meta["deleted_sources"] == 0
    meta, _ = run(resources, instance, partition_key, delete_sources=True)
    assert kept_sources(meta) == {PHOTO: PHOTO_KEPT, VIDEO: "deleted by an earlier run (deleted_sources)"}
    assert query_dicts(resources, "SELECT media_id FROM deleted_sources") == [{"media_id": VIDEO}]


@pytest.mark.parametrize("how", ["problems", "raises", "store_fails"])
def test_no_source_is_deleted_when_verification_fails(resources, instance, monkeypatch, how):
    partition_key, _ = seed(resources, "glass door", videos=(VIDEO, OTHER_VIDEO))
    real_verify = datasets_module.verify

    def failing_verify(path, expected):
        if isinstance(expected, MediaPoses) and expected.attributes["media_id"] == VIDEO:
            if how == "raises":
                raise OSError("disk went away")
            return ["forced: values differ"]
        return real_verify(path, expected)

    if how == "store_fails":  # the video's HDF5 never reaches the store intact
        store = resources["blob_store"]
        monkeypatch.setattr(type(store), "put_file", lambda self, key, path: store.put_bytes(key, b"x") if VIDEO in
                            key else type(store).put_bytes(self, key, Path(path).read_bytes()))  # fmt: skip
    else:
        monkeypatch.setattr(datasets_module, "verify", failing_verify)
    meta, checks = run(resources, instance, partition_key, delete_sources=True)
    assert checks == {"files_verified": False, "unique_key": True}
    assert resources["blob_store"].exists(VIDEO_KEY), "the video must survive its file's failed verification"
    assert not resources["blob_store"].exists(f"videos/{OTHER_VIDEO}.mp4") and meta["deleted_sources"] == 1
    assert kept_sources(meta) == {VIDEO: "its HDF5 files were not all verified", PHOTO: PHOTO_KEPT}
    assert [p["item"] for p in meta["problems"]] == [VIDEO]
    assert query(resources, "SELECT media_id FROM pose_datasets ORDER BY media_id") == [
        ("*",), (PHOTO,), (OTHER_VIDEO,)]  # fmt: skip
    assert query(resources, "SELECT item FROM ingest_errors WHERE stage = 'pose_datasets'") == [(VIDEO,)]
    assert query(resources, "SELECT media_id FROM deleted_sources") == [(OTHER_VIDEO,)]
    prefix = partition_prefix("pose_datasets", partition_key)
    # an unverified file is not left behind
    assert not [key for key in resources["blob_store"].list_keys(prefix) if key.startswith(f"{prefix}/{VIDEO}.")]


def test_nothing_is_deleted_when_the_keyword_file_fails(resources, instance, monkeypatch):
    partition_key, _ = seed(resources, "glass door")
    real_verify = datasets_module.verify
    monkeypatch.setattr(datasets_module, "verify", lambda path, expected: ["forced"] if
                        not isinstance(expected, MediaPoses) else real_verify(path, expected))  # fmt: skip
    meta, checks = run(resources, instance, partition_key, delete_sources=True)
    assert checks == {"files_verified": False, "unique_key": True} and meta["deleted_sources"] == 0
    assert resources["blob_store"].exists(VIDEO_KEY) and resources["blob_store"].exists(PHOTO_KEY)
    assert query(resources, "SELECT count(*) FROM deleted_sources") == [(0,)]


@pytest.mark.parametrize(
    ("user", "reason"),
    [
        ("keyword_media", "keyword_media of partition 'door-handle'"),  # another keyword's item is this video
        ("registry", "registry of partition 'door-handle'"),  # another keyword names it, not fetched yet
        ("media", "media item 'youtube-copy' (the same file)"),  # another media item stored in the same blob
    ],
)
def test_a_video_something_else_needs_is_kept(resources, instance, user, reason):
    partition_key, _ = seed(resources, "glass door")
    for attempt in resources["warehouse"].retrying():
        with attempt as conn:
            if user == "keyword_media":
                seed_media(conn, "door-handle", "door handle", [video_item(VIDEO) | {"page_url": VIDEO_URL}])
            elif user == "registry":
                named = {"partition_key": "door-handle", "keyword": "door handle", "item": VIDEO, "source": "youtube",
                         "media_id": VIDEO, "url": VIDEO_URL, "page_url": VIDEO_URL}  # fmt: skip
                insert_rows(conn, "registry", pd.DataFrame([named]))
            else:
                copy = video_item("youtube-copy") | {"blob_key": VIDEO_KEY, "page_url": VIDEO_URL}
                seed_media(conn, "door-handle", "door handle", [copy])
    meta, checks = run(resources, instance, partition_key, delete_sources=True)
    assert checks == {"files_verified": True, "unique_key": True} and meta["deleted_sources"] == 0
    assert resources["blob_store"].exists(VIDEO_KEY) and resources["blob_store"].exists(PHOTO_KEY)
    kept = kept_sources(meta)
    assert kept.keys() == {VIDEO, PHOTO} and reason in kept[VIDEO] and kept[VIDEO].startswith("still needed by")
    errors = query_dicts(resources, "SELECT item, reason FROM pose_datasets_errors WHERE partition_key = ?",
                         partition_key)  # fmt: skip
    assert errors == [{"item": VIDEO, "reason": kept[VIDEO]}]  # recorded, so the status shows why it stayed
    assert query_dicts(resources, "SELECT source_deleted FROM pose_datasets WHERE media_id = ?", VIDEO) == [
        {"source_deleted": False}]  # fmt: skip
    assert query(resources, "SELECT count(*) FROM deleted_sources") == [(0,)]


def test_provenance_is_the_first_registry_item_else_the_catalog(resources, instance):
    """A duplicate registry item of the photo (another page, another license) is not its provenance; a video with
    no registry item takes its source URL from the frames catalog and its source from media."""
    partition_key, _ = seed(resources, "glass door")
    elsewhere = "https://elsewhere.test/42"
    duplicate = PHOTO_ITEM | {"item": f"{elsewhere}.jpg", "source": "url", "duplicate_of": PHOTO,
                              "page_url": elsewhere, "license": "unknown", "photographer": "Bo"}  # fmt: skip
    for attempt in resources["warehouse"].retrying():
        with attempt as conn:
            seed_media(conn, partition_key, "glass door", [duplicate])
            conn.execute("DELETE FROM registry WHERE item = ?", [VIDEO])
            conn.execute("DELETE FROM keyword_media WHERE item = ?", [VIDEO])
            conn.execute("UPDATE frames SET source_url = 'https://catalog.test/v' WHERE media_id = ?", [VIDEO])
    _, checks = run(resources, instance, partition_key)
    assert checks == {"files_verified": True, "unique_key": True}
    names = ("source", "source_url", "license", "creator")
    with h5py.File(dataset_file(resources, PHOTO), "r") as photo:
        assert {name: photo.attrs[name] for name in names} == {
            "source": "pexels", "source_url": PHOTO_URL, "license": "Pexels License", "creator": "Ana"}  # fmt: skip
    with h5py.File(dataset_file(resources, VIDEO), "r") as video:
        assert {name: video.attrs[name] for name in names} == {
            "source": "youtube", "source_url": "https://catalog.test/v", "license": "", "creator": ""}  # fmt: skip


def test_unusable_pose_rows_are_recorded_and_the_rest_goes_on(resources, instance):
    partition_key, _ = seed(resources, "glass door")
    query(resources, "UPDATE poses SET pose_landmarks = [0.5, 0.5] WHERE media_id = ?", PHOTO)
    meta, checks = run(resources, instance, partition_key)
    assert checks == {"files_verified": False, "unique_key": True} and meta["files"] == 2
    (problem,) = meta["problems"]
    assert problem["item"] == PHOTO and "pose_landmarks has 2 values, expected 132" in problem["reason"]


@pytest.mark.parametrize("keyword", ["../x", "say \"cheese\" 'now'", "<script>alert(1)</script><b>door</b>"])
def test_hostile_keywords_stay_inside_the_store(resources, instance, tmp_path, keyword):
    with nothing_written_beside(tmp_path):
        partition_key, _ = seed(resources, keyword)
        _, checks = run(resources, instance, partition_key)
    assert checks == {"files_verified": True, "unique_key": True}
    root = Path(resources["blob_store"].root).resolve()
    written = [p for p in tmp_path.rglob("*") if p.suffix in (".h5", ".json")]
    assert len(written) == 6 and all(p.resolve().is_relative_to(root / "pose_datasets" / partition_key)
                                     for p in written)  # fmt: skip
    with h5py.File(dataset_file(resources, "keyword"), "r") as whole:
        assert whole.attrs["keyword"] == keyword and whole["media"][VIDEO].attrs["keyword"] == keyword
    document = json.loads(dataset_file(resources, VIDEO, sidecar=True).read_text())
    assert document["attributes"]["keyword"] == keyword


def test_pose_datasets_on_s3(resources, instance, s3_endpoint):
    import boto3
    from dagster_aws.s3 import S3Resource

    from resources.blob_store import S3BlobStore

    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
    boto3.client("s3", endpoint_url=s3_endpoint, **credentials).create_bucket(Bucket="poses-e2e")
    resources["blob_store"] = S3BlobStore(
        bucket="poses-e2e", prefix="m", s3=S3Resource(endpoint_url=s3_endpoint, **credentials)
    )
    partition_key, _ = seed(resources, "glass door")
    meta, checks = run(resources, instance, partition_key, delete_sources=True)
    assert checks == {"files_verified": True, "unique_key": True} and meta["deleted_sources"] == 1
    assert re.fullmatch(r"s3://poses-e2e/m/pose_datasets/glass-door/keyword\.[0-9a-f]{12}\.h5", meta["keyword_file"])
    keys = resources["blob_store"].list_keys("pose_datasets")
    assert len(keys) == 6 and not resources["blob_store"].exists(VIDEO_KEY)
    assert resources["blob_store"].exists(PHOTO_KEY)


def test_metadata_counts_the_partition_and_the_whole_table(resources, instance):
    first, _ = seed(resources, "glass door")
    second, _ = seed(resources, "door handle", seed_value=1)
    meta, _ = run(resources, instance, first)
    assert (meta["dagster/partition_row_count"], meta["dagster/row_count"]) == (3, 3)
    meta, checks = run(resources, instance, second)
    assert checks == {"files_verified": True, "unique_key": True}
    assert (meta["dagster/partition_row_count"], meta["dagster/row_count"]) == (3, 6)
    assert meta["dagster/table_name"] == "lake.main.pose_datasets"
    assert "source_deleted" in [column.name for column in meta["dagster/column_schema"].columns]


def test_unique_key_fails_when_a_row_is_written_twice(resources, instance, monkeypatch):
    partition_key, _ = seed(resources, "glass door")
    real_replace = datasets_module.replace_partition_rows

    def writes_one_twice(conn, table, key, rows, *args):  # a writer bug, planted before the check runs
        written = real_replace(conn, table, key, rows, *args)
        return written + insert_rows(conn, table, rows.head(1))

    monkeypatch.setattr(datasets_module, "replace_partition_rows", writes_one_twice)
    instance.add_dynamic_partitions("keyword", [partition_key])
    result = dg.materialize([pose_datasets], partition_key=partition_key, resources=resources, instance=instance)
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "unique_key"]
    assert not check.passed and check.metadata["duplicated_keys"].value == {"pose_datasets": 1, "deleted_sources": 0}
    assert query_dicts(resources, "SELECT count(*) AS n FROM pose_datasets") == [{"n": 4}]


def test_verify_finds_a_changed_value_attribute_or_shape(tmp_path):
    rng = np.random.default_rng(3)
    rows = [pose_row(rng, "k", f"f{i}", "m", "video", i, float(i), (i % 2 == 0, True)) for i in range(3)]
    item = MediaPoses({"media_id": "m", "media_type": "video", "license": None, "models": [MODELS]}, pose_arrays(rows))
    path = tmp_path / "m.h5"
    write_media_file(path, item)
    assert verify(path, item) == []
    with h5py.File(path, "r+") as out:
        out["pose_landmarks"][1, 5, 0] = 0.123
        out.attrs["media_type"] = "photo"
    problems = verify(path, item)
    assert any("pose_landmarks: values differ" in p for p in problems)
    assert any("attribute media_type" in p for p in problems)
    with h5py.File(path, "r+") as out:
        del out["left_hand"]
        out.create_dataset("left_hand", data=np.zeros((2, 21, 3), np.float32))
    assert any("left_hand: shape (2, 21, 3)" in p for p in verify(path, item))
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    assert verify(tmp_path / "junk.h5", item)[0].startswith("cannot open as HDF5")


def test_non_finite_landmarks_of_a_found_pose_are_refused():
    rng = np.random.default_rng(4)
    row = pose_row(rng, "k", "f0", "m", "video", 0, 0.0)
    row["pose_landmarks"][7] = float("nan")
    from mining_assets.poses.hdf5 import content_problems

    assert content_problems(pose_arrays([row]), "video") == ["pose_landmarks: non-finite values in frames with a pose"]


def test_a_full_local_disk_fails_the_step_and_blames_no_item(resources, instance, monkeypatch):
    partition_key, _ = seed(resources, "glass door")
    run(resources, instance, partition_key)
    before = query(resources, "SELECT * FROM pose_datasets ORDER BY ALL")
    query(resources, "UPDATE poses SET image_width = image_width + 1")  # new content: the files are written again

    def full_disk(path, content):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datasets_module, "write_media_file", full_disk)
    result = dg.materialize([pose_datasets], partition_key=partition_key, resources=resources, instance=instance,
                            raise_on_error=False)  # fmt: skip
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert not result.success and "LocalDiskError" in str(failure.event_specific_data.error)
    assert query(resources, "SELECT * FROM pose_datasets ORDER BY ALL") == before
    assert query(resources, "SELECT count(*) FROM pose_datasets_errors") == [(0,)]
