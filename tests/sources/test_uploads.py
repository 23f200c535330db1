"""Uploads through the source chain (media_registry -> media -> video_frames -> frames): a local collection and an
S3 bucket (moto on loopback) with photos, videos and files that are neither, told apart by content; then the videos'
frames and the photos in the frames catalog. Reads of the bucket that fail or are cut off (a proxy in front of moto
cuts object bodies halfway) are the item's failure, with a reason that names no credentials."""

import functools
import hashlib
import http.client
import http.server
import os
import re
import shutil
import socket
import tempfile
import threading
import uuid

import boto3
import dagster as dg
import pandas as pd
import pytest
from boto3.exceptions import RetriesExceededError, S3TransferFailedError
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from dagster_aws.s3 import S3Resource
from harness import free_port, meta, query, query_dicts
from s3transfer.exceptions import S3DownloadFailedError
from vision_support import encode, rotated_jpeg, scene

from mining_assets.frames import frames
from mining_assets.sources.media import media
from mining_assets.sources.media_registry import media_registry
from mining_assets.sources.uploads import Rejected, inspect_media
from mining_assets.video.frames import video_frames
from mining_assets.video.synthetic import make_video
from mining_assets.warehouse import insert_rows
from resources.blob_store import check_key
from resources.uploads import UploadBucket, UploadError, UploadMissing

UPLOAD_SOURCES = {"youtube_search": False, "uploads": True, "stock_sources": []}  # what the job's tag asks, spelled out

CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
KEY = "glass-door"
MEDIA_ID = r"^(s3|local)-[0-9a-f]{16}$"
SOURCE_ASSETS = [media_registry, media, video_frames, frames]
EVERY_10 = {"strategy": "interval", "every_n_frames": 10}


def real_photo() -> bytes:
    """A real photograph (matplotlib's sample data) where matplotlib is installed, else a drawn picture."""
    try:
        from matplotlib import cbook
    except ImportError:
        return encode(scene(3, size=(128, 96)))
    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        return handle.read()


def video_bytes(tmp_path, name: str, **options) -> bytes:
    path = make_video(tmp_path / f"{name}.mp4", **options)
    data = path.read_bytes()
    path.unlink()
    return data


def make_bucket(endpoint: str) -> UploadBucket:
    name = f"uploads-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS).create_bucket(Bucket=name)
    return UploadBucket(bucket=name, prefix="uploads", s3=S3Resource(endpoint_url=endpoint, **CREDENTIALS))


@functools.cache
def s3_client(endpoint: str):
    """One client per endpoint: building a boto3 client costs about 0.2 s, and a fixture puts a dozen objects."""
    return boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)


def put(bucket: UploadBucket, key: str, data: bytes) -> None:
    s3_client(bucket.s3.endpoint_url).put_object(Bucket=bucket.bucket, Key=key, Body=data)


@pytest.fixture
def collection(tmp_path):
    """A local folder: a photo (and a copy), two videos (one named .png), a rotated photo named .bin, a text file
    named .jpg, an empty file, and hidden files that must be skipped."""
    root = tmp_path / "collection"
    (root / "trip" / "day 1").mkdir(parents=True)
    (root / ".cache").mkdir()
    photo = real_photo()
    (root / "grace.jpg").write_bytes(photo)
    (root / "trip" / "day 1" / "copy of grace.jpeg").write_bytes(photo)
    (root / "trip" / "clip.mp4").write_bytes(video_bytes(tmp_path, "clip", frames=30, fps=10, gop=10))
    (root / "holiday.png").write_bytes(video_bytes(tmp_path, "holiday", frames=20, fps=10, codec="mp4v"))
    (root / "portrait.bin").write_bytes(rotated_jpeg())
    (root / "notes.jpg").write_text("shopping list: milk, eggs\n")
    (root / "empty.mov").write_bytes(b"")
    (root / ".DS_Store").write_bytes(photo)
    (root / ".cache" / "thumb.jpg").write_bytes(photo)
    return root


@pytest.fixture
def bucket(s3_endpoint, tmp_path):
    bucket = make_bucket(s3_endpoint)
    put(bucket, "uploads/glass door/beach.jpg", encode(scene(7, size=(120, 80))))
    put(bucket, "uploads/glass door/phone/VID_0001.dat", video_bytes(tmp_path, "phone", frames=20, fps=10))
    put(bucket, "uploads/robot arm/other.jpg", encode(scene(8)))  # another keyword's upload
    put(bucket, "uploads/stray.jpg", encode(scene(9)))  # in no keyword folder
    return bucket


def run(instance, resources, partition_key=KEY, selection=SOURCE_ASSETS, registry=None, **ops):
    """Materialize ``selection`` for a keyword partition with the upload sources only (as upload_pipeline asks) and
    ``registry`` on top; ``ops`` are other assets' configs."""
    if partition_key not in instance.get_dynamic_partitions("keyword"):
        instance.add_dynamic_partitions("keyword", [partition_key])
    configs = {"media_registry": {**UPLOAD_SOURCES, **(registry or {})}} if media_registry in selection else {}
    configs.update(ops)
    result = dg.materialize(
        selection,
        partition_key=partition_key,
        resources=resources,
        instance=instance,
        run_config={"ops": {name: {"config": value} for name, value in configs.items()}},
    )
    assert result.success
    return result


def ingest_all(instance, resources, collection):
    registry = {"local_dir": str(collection), "keyword": "glass door", "license": "CC BY 4.0"}
    return run(instance, resources, registry=registry, video_frames=EVERY_10)


def snapshot(resources) -> dict:
    """Every row this path writes, without the time stamps, and every stored file."""
    tables = {
        "registry": "SELECT * EXCLUDE (discovered_at) FROM registry ORDER BY item",
        "keyword_media": "SELECT * EXCLUDE (fetched_at) FROM keyword_media ORDER BY item",
        "media": "SELECT * EXCLUDE (stored_at) FROM media ORDER BY media_id",
        "video_samples": "SELECT * EXCLUDE (sampled_at) FROM video_samples ORDER BY media_id",
        "video_frames": "SELECT * EXCLUDE (created_at) FROM video_frames ORDER BY frame_id",
        "frames": "SELECT * EXCLUDE (created_at) FROM frames ORDER BY frame_id",
        "errors": "SELECT partition_key, stage, item, reason FROM ingest_errors ORDER BY item",
        "keywords": "SELECT partition_key, keyword FROM keywords",
    }
    store = resources["blob_store"]
    files = [key for top in ("photos", "videos", "frames") for key in store.list_keys(top)]
    return {**{name: query(resources, sql) for name, sql in tables.items()}, "files": files}


def test_local_and_s3_uploads_are_told_apart_by_content_and_reach_the_catalog(
    instance, resources, collection, bucket, tmp_path
):
    resources = {**resources, "uploads": bucket}
    result = ingest_all(instance, resources, collection)
    assert all(check.passed for check in result.get_asset_check_evaluations() if check.check_name != "items_fetched")
    (fetched,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "items_fetched"]
    assert not fetched.passed and fetched.metadata["failed"].value == 2  # notes.jpg and empty.mov

    local = {(collection / name).as_uri(): name for name in
             ["grace.jpg", "trip/day 1/copy of grace.jpeg", "trip/clip.mp4", "holiday.png", "portrait.bin",
              "notes.jpg", "empty.mov"]}  # fmt: skip
    s3 = {bucket.location(f"uploads/glass door/{name}"): name for name in ["beach.jpg", "phone/VID_0001.dat"]}
    names = {**local, **s3}  # location -> name
    status = {
        names[row["item"]]: row
        for row in query_dicts(
            resources,
            "SELECT item, source, status, media_type, media_id, error, error_stage, duplicate_of FROM media_status",
        )
    }
    assert set(status) == set(names.values())  # no hidden files, no other keyword's or stray objects
    assert {name: (row["media_type"], row["status"]) for name, row in status.items()} == {
        "grace.jpg": ("photo", "complete"),
        "trip/day 1/copy of grace.jpeg": ("photo", "complete"),  # a membership of grace.jpg's media item
        "trip/clip.mp4": ("video", "complete"),
        "holiday.png": ("video", "complete"),
        "portrait.bin": ("photo", "complete"),
        "notes.jpg": (None, "failed"),
        "empty.mov": (None, "failed"),
        "beach.jpg": ("photo", "complete"),
        "phone/VID_0001.dat": ("video", "complete"),
    }
    assert {name: row["source"] for name, row in status.items()} == {
        **dict.fromkeys(local.values(), "local"),
        **dict.fromkeys(s3.values(), "s3"),
    }
    assert status["notes.jpg"]["error"] == "neither an image nor a video: not a video: the file holds text"
    assert status["empty.mov"]["error"] == "neither an image nor a video: empty file (0 bytes)"
    assert status["notes.jpg"]["error_stage"] == status["empty.mov"]["error_stage"] == "media"
    assert status["trip/day 1/copy of grace.jpeg"]["duplicate_of"] == (collection / "grace.jpg").as_uri()
    assert [name for name, row in status.items() if row["duplicate_of"]] == ["trip/day 1/copy of grace.jpeg"]
    grace_sha = hashlib.sha256((collection / "grace.jpg").read_bytes()).hexdigest()
    grace_id = f"local-{grace_sha[:16]}"
    assert status["grace.jpg"]["media_id"] == grace_id == status["trip/day 1/copy of grace.jpeg"]["media_id"]
    assert status["beach.jpg"]["media_id"].startswith("s3-")
    stored = {name: row["media_id"] for name, row in status.items() if row["media_id"]}
    assert all(re.match(MEDIA_ID, media_id) for media_id in stored.values())

    media_rows = {r["media_id"]: r for r in query_dicts(resources, "SELECT * FROM media")}
    assert set(media_rows) == set(stored.values()) and len(media_rows) == 6  # the copy is no media item of its own
    grace = media_rows[grace_id]
    assert (grace["media_type"], grace["source"], grace["sha256"]) == ("photo", "local", grace_sha)
    assert grace["blob_key"] == f"photos/{grace_id}.jpg"
    assert grace["size_bytes"] == (collection / "grace.jpg").stat().st_size
    portrait = media_rows[stored["portrait.bin"]]
    assert (portrait["width"], portrait["height"]) == (64, 96)  # EXIF orientation applied to the recorded size
    assert portrait["blob_key"].endswith(".jpg")  # the suffix comes from the content, not the name
    assert sum(r["media_type"] == "photo" for r in media_rows.values()) == 3

    # the license and the location are the registry's, the media item's origin is traceable to them
    (registry_grace,) = query_dicts(
        resources, "SELECT * FROM registry WHERE item = ?", (collection / "grace.jpg").as_uri()
    )
    location = (collection / "grace.jpg").as_uri()
    fields = ["source", "url", "page_url", "license", "keyword", "title"]
    assert [registry_grace[name] for name in fields] == ["local", location, location, "CC BY 4.0", "glass door",
                                                         "grace.jpg"]  # fmt: skip
    assert registry_grace["media_id"] is None and registry_grace["media_type"] is None  # named by content later

    videos = [r for r in media_rows.values() if r["media_type"] == "video"]
    assert {v["source"] for v in videos} == {"local", "s3"} and len(videos) == 3
    assert all(v["blob_key"] == f"videos/{v['media_id']}.mp4" for v in videos)  # the suffix comes from the content
    holiday = media_rows[stored["holiday.png"]]
    assert (holiday["codec"], holiday["width"], holiday["frame_count"]) == ("mpeg4", 320, 20)

    catalog = {
        r["media_id"]: r
        for r in query_dicts(
            resources,
            "SELECT media_id, any_value(media_type) AS media_type, count(*) AS n, min(source_url) AS source_url "
            "FROM frames WHERE partition_key = ? GROUP BY media_id",
            KEY,
        )
    }
    assert {m for m, r in catalog.items() if r["media_type"] == "photo"} == {
        stored[n] for n in ("grace.jpg", "portrait.bin", "beach.jpg")
    }
    assert {m for m, r in catalog.items() if r["media_type"] == "video"} == {v["media_id"] for v in videos}
    assert catalog[grace_id]["n"] == 1 and catalog[grace_id]["source_url"] == location  # once, not per copy
    assert catalog[stored["trip/clip.mp4"]]["n"] == 3  # 30 frames, one in every 10
    assert catalog[stored["phone/VID_0001.dat"]]["source_url"] == bucket.location(
        "uploads/glass door/phone/VID_0001.dat"
    )

    errors = query_dicts(resources, "SELECT stage, item, reason FROM ingest_errors")
    assert {(e["stage"], e["item"]) for e in errors} == {
        ("media", (collection / "notes.jpg").as_uri()),
        ("media", (collection / "empty.mov").as_uri()),
    }
    assert query_dicts(resources, "SELECT partition_key, keyword FROM keywords") == [
        {"partition_key": KEY, "keyword": "glass door"}
    ]

    # storage keys are made of ids only; nothing lands outside the store
    store = resources["blob_store"]
    files = snapshot(resources)["files"]
    assert all(check_key(key) for key in files)
    assert all(key.startswith(("photos/", "videos/", "frames/")) and "grace" not in key for key in files)
    assert sorted(p.name for p in (tmp_path / "data" / "blobs").iterdir()) == ["frames", "photos", "videos"]

    # the same input again: the same rows and files, nothing doubled, nothing stored again
    before = snapshot(resources)
    again = ingest_all(instance, resources, collection)
    assert snapshot(resources) == before
    assert meta(again, "media")["fetched_now"] == 0 and meta(again, "media_registry")["new_items"] == 0
    assert len(store.list_keys("photos")) == 3 and len(store.list_keys("videos")) == 3


def test_runs_upsert_their_items_and_keep_earlier_errors(instance, resources, collection, s3_endpoint):
    shutil.rmtree(collection / "trip")
    registry = {"local_dir": str(collection), "s3_keys": ["uploads/glass door/a.jpg"], "keyword": "robot arm"}
    run(instance, resources, selection=[media_registry, media], registry=registry)  # no bucket configured
    errors = {(e["stage"], e["item"]): e["reason"] for e in query_dicts(resources, "SELECT * FROM ingest_errors")}
    assert errors[("media_registry", "s3")] == "no upload bucket configured: 1 S3 keys skipped"
    assert query(resources, "SELECT count(*) FROM keywords")[0][0] == 0  # 'robot arm' is not this partition's text
    local_rows = query_dicts(resources, "SELECT * EXCLUDE (discovered_at) FROM registry ORDER BY item")
    assert len(local_rows) == 5 and {r["source"] for r in local_rows} == {"local"}

    bucket = make_bucket(s3_endpoint)
    put(bucket, "uploads/glass door/page.jpg", b"<html><body>Access denied</body></html>")
    put(bucket, "uploads/glass door/tiny.png", encode(scene(2).resize((16, 12)), "PNG"))
    put(bucket, "uploads/robot arm/arm.jpg", encode(scene(4)))
    keys = ["uploads/glass door/page.jpg", "uploads/glass door/tiny.png", "uploads/glass door/gone.jpg",
            "uploads/robot arm/arm.jpg"]  # fmt: skip
    run(instance, {**resources, "uploads": bucket}, selection=[media_registry, media], registry={"s3_keys": keys})

    # the local items stay as they were recorded: a run adds its items and fills in, it replaces nothing
    assert (
        query_dicts(resources, "SELECT * EXCLUDE (discovered_at) FROM registry WHERE source = 'local' ORDER BY item")
        == local_rows
    )
    status = {r["item"]: r for r in query_dicts(resources, "SELECT * FROM media_status")}
    page = status[bucket.location("uploads/glass door/page.jpg")]
    assert (page["status"], page["error"]) == (
        "failed",
        "neither an image nor a video: not a video: the file holds an HTML page",
    )
    tiny = status[bucket.location("uploads/glass door/tiny.png")]
    assert tiny["status"] == "failed" and tiny["error"].startswith("too small: 16x12")  # a PNG, never a "video"
    gone = status[bucket.location("uploads/glass door/gone.jpg")]
    assert (gone["status"], gone["error"], gone["error_stage"]) == (
        "failed",
        "not found in the bucket (deleted since it was listed?)",
        "media",
    )
    assert bucket.location("uploads/robot arm/arm.jpg") not in status
    assert {r["status"] for r in status.values() if r["source"] == "local"} == {"downloaded", "failed"}

    errors = {(e["stage"], e["item"]): e["reason"] for e in query_dicts(resources, "SELECT * FROM ingest_errors")}
    assert ("media_registry", "s3") not in errors  # the bucket was looked at again: that reason no longer holds
    assert ("media", (collection / "notes.jpg").as_uri()) in errors
    assert ("media", (collection / "empty.mov").as_uri()) in errors
    assert "not an upload of this keyword" in errors[("media_registry", bucket.location("uploads/robot arm/arm.jpg"))]
    assert len(errors) == 6
    assert query(resources, "SELECT count(*) FROM media WHERE source = 's3'")[0][0] == 0  # nothing failed is stored


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("photo.mp4", "photo"),
        ("video.jpg", "video"),
        ("small.png", "too small"),
        ("page.mp4", "neither an image nor a video: not a video: the file holds an HTML page"),
        ("audio.m4a", "neither an image nor a video: audio only: the file has no video stream"),
    ],
)
def test_media_type_is_decided_by_content(tmp_path, media_dir, name, expected):
    contents = {
        "photo.mp4": lambda: encode(scene(1)),
        "video.jpg": lambda: (media_dir / "clip_mp4v.mp4").read_bytes(),
        "small.png": lambda: encode(scene(1).resize((20, 20)), "PNG"),  # FFmpeg would open it as a one-frame video
        "page.mp4": lambda: b"<!DOCTYPE html><html><body>Not found</body></html>",
        "audio.m4a": lambda: (media_dir / "audio_only.mp4").read_bytes(),
    }
    path = tmp_path / name
    path.write_bytes(contents[name]())
    if expected in ("photo", "video"):
        assert inspect_media(path).media_type == expected
    else:
        with pytest.raises(Rejected, match=f"^{expected}"):
            inspect_media(path)


def test_a_file_name_that_is_not_utf8_is_stored_and_recorded_safely(instance, resources, tmp_path):
    folder = tmp_path / "odd names"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9 <b>'q'.jpg")  # a Latin-1 byte no UTF-8 decoder accepts, and markup
    (folder / name).write_bytes(encode(scene(11)))
    run(instance, resources, selection=[media_registry, media],
        registry={"local_dir": str(folder), "keyword": "glass door"})  # fmt: skip
    (row,) = query_dicts(resources, "SELECT item, status, blob_key FROM media_status")
    assert row["status"] == "downloaded" and row["item"].endswith("/caf%E9%20%3Cb%3E%27q%27.jpg")
    assert row["blob_key"].startswith("photos/local-") and row["blob_key"].endswith(".jpg")


def test_metadata_counts_the_partition_and_the_table(instance, resources, collection):
    first = run(instance, resources, selection=[media_registry, media], registry={"local_dir": str(collection)})
    second = run(instance, resources, partition_key="robot-arm", selection=[media_registry, media],
                 registry={"local_dir": str(collection), "keyword": "robot arm"})  # fmt: skip
    # the collection's 7 visible files, one registry row each, in each partition
    registry = meta(second, "media_registry")
    assert registry["dagster/table_name"] == "lake.main.registry"
    assert (registry["dagster/partition_row_count"], registry["dagster/row_count"]) == (7, 14)
    assert meta(first, "media_registry")["dagster/row_count"] == 7
    # 5 of them are media (the copy of grace.jpg a membership of its own): one keyword_media row each
    members = meta(second, "media")
    assert members["dagster/table_name"] == "lake.main.keyword_media"
    assert (members["dagster/partition_row_count"], members["dagster/row_count"]) == (5, 10)
    for result in (first, second):
        assert {
            (e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()
        } == {
            ("media_registry", "sources_answered"): True,
            ("media_registry", "unique_key"): True,
            ("media_registry", "produced_output"): True,
            ("media", "stored_files_exist"): True,
            ("media", "items_fetched"): False,  # notes.jpg and empty.mov
            ("media", "unique_key"): True,
            ("media", "produced_output"): True,
        }
    # a run again upserts by item: nothing doubles
    again = run(instance, resources, selection=[media_registry, media], registry={"local_dir": str(collection)})
    registry = meta(again, "media_registry")
    assert (registry["dagster/partition_row_count"], registry["dagster/row_count"]) == (7, 14)
    assert (meta(again, "media")["dagster/partition_row_count"], meta(again, "media")["dagster/row_count"]) == (5, 10)
    # media items are shared by keywords: the second keyword's are the first's, stored once
    per_keyword = query_dicts(
        resources,
        "SELECT k.partition_key, m.media_type, count(*) AS n FROM keyword_media k JOIN media m USING (media_id) "
        "WHERE k.duplicate_of IS NULL GROUP BY ALL ORDER BY ALL",
    )
    assert per_keyword == [
        {"partition_key": KEY, "media_type": "photo", "n": 2},
        {"partition_key": KEY, "media_type": "video", "n": 2},
        {"partition_key": "robot-arm", "media_type": "photo", "n": 2},
        {"partition_key": "robot-arm", "media_type": "video", "n": 2},
    ]
    assert query(resources, "SELECT count(*) FROM media")[0][0] == 4


def test_unique_key_fails_on_a_doubled_item(instance, resources, collection):
    # an earlier S3 item recorded twice; this run looks only at the local folder, so it stays as it is
    resources["warehouse"].execute(
        "INSERT INTO registry (partition_key, keyword, item, source, url, page_url, discovered_at) "
        "SELECT ?, 'glass door', 's3://old/uploads/glass door/a.jpg', 's3', 's3://old/uploads/glass door/a.jpg', "
        "'s3://old/uploads/glass door/a.jpg', now()::TIMESTAMP FROM range(2)",
        [KEY],
    )
    result = run(instance, resources, selection=[media_registry], registry={"local_dir": str(collection)})
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "unique_key"]
    assert not evaluation.passed
    assert evaluation.metadata["duplicated_keys"].value == {"registry": 1, "upload_objects": 0}
    assert meta(result, "media_registry")["dagster/partition_row_count"] == 7 + 2

    # a membership recorded twice for an item no run fetches: media's own check reports it
    member = {"partition_key": KEY, "item": "file:///gone/a.jpg", "media_id": "local-0123456789abcdef"}
    for attempt in resources["warehouse"].retrying():
        with attempt as conn:
            insert_rows(conn, "keyword_media", pd.DataFrame([member, member]))
    result = run(instance, resources, selection=[media])
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "unique_key"]
    assert not evaluation.passed and evaluation.metadata["duplicated_keys"].value == {"keyword_media": 1, "media": 0}


def test_the_same_photo_uploaded_under_two_keywords_is_stored_once(instance, resources, s3_endpoint):
    bucket = make_bucket(s3_endpoint)
    photo = encode(scene(5))
    put(bucket, "uploads/glass door/door.jpg", photo)
    put(bucket, "uploads/sliding door/IMG_0042.jpg", photo)
    resources = {**resources, "uploads": bucket}
    run(instance, resources, registry={"keyword": "glass door"})
    second = run(instance, resources, partition_key="sliding-door", registry={"keyword": "sliding door"})

    media_id = f"s3-{hashlib.sha256(photo).hexdigest()[:16]}"
    assert query_dicts(resources, "SELECT media_id, media_type, source, blob_key FROM media") == [
        {"media_id": media_id, "media_type": "photo", "source": "s3", "blob_key": f"photos/{media_id}.jpg"}
    ]
    assert resources["blob_store"].list_keys("photos") == [f"photos/{media_id}.jpg"]
    members = query_dicts(resources, "SELECT partition_key, item, media_id, duplicate_of FROM keyword_media ORDER BY 1")
    assert members == [
        {"partition_key": KEY, "item": bucket.location("uploads/glass door/door.jpg"), "media_id": media_id,
         "duplicate_of": None},
        {"partition_key": "sliding-door", "item": bucket.location("uploads/sliding door/IMG_0042.jpg"),
         "media_id": media_id, "duplicate_of": None},
    ]  # fmt: skip
    # each keyword's catalog has the photo, traceable to its own upload
    catalog = query_dicts(
        resources, "SELECT partition_key, keyword, frame_id, media_type, source_url FROM frames ORDER BY 1"
    )
    assert catalog == [
        {"partition_key": KEY, "keyword": "glass door", "frame_id": media_id, "media_type": "photo",
         "source_url": bucket.location("uploads/glass door/door.jpg")},
        {"partition_key": "sliding-door", "keyword": "sliding door", "frame_id": media_id, "media_type": "photo",
         "source_url": bucket.location("uploads/sliding door/IMG_0042.jpg")},
    ]  # fmt: skip
    assert {r["status"] for r in query_dicts(resources, "SELECT status FROM media_status")} == {"complete"}
    # photos only: no video to sample is no warning; every check passes
    warned = [(e.asset_key.path[-1], e.check_name) for e in second.get_asset_check_evaluations() if not e.passed]
    assert warned == []


def test_the_registry_records_each_upload_with_its_etag(instance, resources, bucket):
    """upload_objects (what the uploads sensor compares its listing with): one row per object version the registry
    names, whether the run listed the keyword's folders, was given keys (their ETags asked of S3) or was given the
    listing's keys and ETags."""
    resources = {**resources, "uploads": bucket}
    client = bucket.s3.get_client()

    def etag(key: str) -> str:
        return client.head_object(Bucket=bucket.bucket, Key=key)["ETag"].strip('"')

    def recorded() -> set[tuple]:
        rows = query_dicts(resources, "SELECT bucket, key, etag, partition_key FROM upload_objects")
        assert all(row["bucket"] == bucket.bucket for row in rows)
        return {(row["key"], row["etag"], row["partition_key"]) for row in rows}

    keys = ["uploads/glass door/beach.jpg", "uploads/glass door/phone/VID_0001.dat"]
    first = run(instance, resources, selection=[media_registry], registry={"keyword": "glass door"})  # listed
    assert recorded() == {(key, etag(key), KEY) for key in keys}  # not the other keyword's, not the stray
    assert meta(first, "media_registry")["uploads_recorded"] == 2
    again = run(instance, resources, selection=[media_registry])
    assert len(recorded()) == 2 and all(check.passed for check in again.get_asset_check_evaluations())

    old = etag(keys[0])
    put(bucket, keys[0], encode(scene(12, size=(120, 80))))  # new content under the same key: another version
    run(instance, resources, selection=[media_registry], registry={"s3_keys": [keys[0], "uploads/glass door/gone.jpg"]})
    assert recorded() == {(keys[0], old, KEY), (keys[0], etag(keys[0]), KEY), (keys[1], etag(keys[1]), KEY)}
    assert query(resources, "SELECT count(*) FROM media_registry_errors")[0][0] == 0  # gone.jpg: media's to report

    listed = [{"key": "uploads/robot arm/other.jpg", "etag": "etag-as-listed"}]
    run(instance, resources, partition_key="robot-arm", selection=[media_registry], registry={"s3_objects": listed})
    assert ("uploads/robot arm/other.jpg", "etag-as-listed", "robot-arm") in recorded()
    (registered,) = query_dicts(resources, "SELECT item FROM registry WHERE partition_key = 'robot-arm'")
    assert registered["item"] == bucket.location("uploads/robot arm/other.jpg")


class CuttingProxy(http.server.ThreadingHTTPServer):
    """Relays every request to moto; an object's GET gets the real headers, half the body, then the connection
    closes (``cuts`` counts them)."""

    daemon_threads = True

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), CuttingHandler)
        self.upstream = upstream.removeprefix("http://")
        self.cuts = 0


class CuttingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CuttingProxy

    def log_message(self, format, *args):
        pass

    def relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=30)
        try:
            upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        self.send_response_only(answer.status, answer.reason)
        for name, value in answer.getheaders():
            self.send_header(name, value)
        self.end_headers()
        if not (self.command == "GET" and "?" not in self.path and answer.status == 200 and data):
            self.wfile.write(data)
            return
        self.server.cuts += 1
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = relay


@pytest.fixture
def cutting_proxy(s3_endpoint):
    proxy = CuttingProxy(s3_endpoint)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    """The process's temporary folder, inside the test's: what a download leaves behind is seen (downloads are
    in ``upload-*`` folders)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_a_cut_off_download_is_the_items_failure_and_keeps_nothing(instance, resources, bucket, cutting_proxy,
                                                                   temp_dir):  # fmt: skip
    port = cutting_proxy.server_address[1]
    through = bucket.model_copy(update={"s3": S3Resource(endpoint_url=f"http://127.0.0.1:{port}", **CREDENTIALS)})
    resources = {**resources, "uploads": through}
    key = "uploads/glass door/beach.jpg"
    run(instance, resources, selection=[media_registry, media], registry={"s3_keys": [key]})

    assert cutting_proxy.cuts >= 1  # the body was cut off (boto3 tried again, and was cut off again)
    (row,) = query_dicts(resources, "SELECT item, status, error, error_stage FROM media_status")
    assert (row["item"], row["status"], row["error_stage"]) == (bucket.location(key), "failed", "media")
    assert row["error"].startswith("download failed: cut off before the end: ")
    assert "given up after retries" in row["error"]
    assert query(resources, "SELECT count(*) FROM media")[0][0] == 0
    assert resources["blob_store"].list_keys("photos") == []
    assert list(temp_dir.glob("upload-*")) == []  # no partial file left of the download


URL_WITH_CREDENTIALS = "http://user:secret@127.0.0.1:1"


def failing_client(error: Exception):
    class Client:
        def download_file(self, bucket, key, filename):
            with open(filename + ".part", "wb") as part:  # as boto3 does: a part file, then the failure
                part.write(b"half")
            raise error

    return Client()


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (IncompleteReadError(actual_bytes=5, expected_bytes=10), "download failed: cut off before the end: 5 read"),
        (ResponseStreamingError(error="Connection broken"), "download failed: cut off before the end: An error"),
        (RetriesExceededError(IncompleteReadError(actual_bytes=5, expected_bytes=10)),
         "download failed: cut off before the end: 5 read, but total bytes expected is 10. (given up after retries)"),
        (RetriesExceededError(None), "download failed: failed (given up after retries)"),
        (ReadTimeoutError(endpoint_url=f"{URL_WITH_CREDENTIALS}/b/k", error="timed out"),
         'download failed: timed out: Read timeout on endpoint URL: "http://***@127.0.0.1:1/b/k"'),
        (EndpointConnectionError(endpoint_url=f"{URL_WITH_CREDENTIALS}/b/k"),
         'download failed: bucket unreachable: Could not connect to the endpoint URL: "http://***@127.0.0.1:1/b/k"'),
        (S3TransferFailedError("transfer failed"), "download failed: transfer failed"),
        (S3DownloadFailedError("did not match expected ETag"), "download failed: did not match expected ETag"),
        (ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "GetObject"), "download failed: An error"),
    ],
)  # fmt: skip
def test_a_failed_read_is_an_upload_error_with_its_reason(monkeypatch, temp_dir, error, reason):
    monkeypatch.setattr(S3Resource, "get_client", lambda self: failing_client(error))
    bucket = UploadBucket(bucket="b", s3=S3Resource(endpoint_url=URL_WITH_CREDENTIALS, **CREDENTIALS))
    with pytest.raises(UploadError) as raised, bucket.download("uploads/glass door/a.jpg"):
        pass
    assert str(raised.value).startswith(reason) and "secret" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # the original names the secret
    assert not isinstance(raised.value, UploadMissing)
    assert list(temp_dir.iterdir()) == []  # the part file went with the download's folder


def test_no_error_names_the_credentials_in_the_endpoint_url(temp_dir):
    """botocore quotes the endpoint URL, user-info included, in its connection errors."""
    endpoint = f"http://user:secret@127.0.0.1:{free_port()}"  # nothing listens there
    bucket = UploadBucket(bucket="b", s3=S3Resource(endpoint_url=endpoint, max_attempts=1, **CREDENTIALS))
    for read in (
        lambda: bucket.head("uploads/a/x.jpg"),
        lambda: list(bucket.list_objects()),
        lambda: list(bucket.keyword_folders()),
        lambda: bucket.download("uploads/a/x.jpg").__enter__(),
    ):
        with pytest.raises(UploadError) as raised:
            read()
        assert "bucket unreachable: Could not connect to the endpoint URL" in str(raised.value)
        assert "secret" not in str(raised.value) and "http://***@127.0.0.1:" in str(raised.value)
        assert raised.value.__cause__ is None and raised.value.__suppress_context__
    # without credentials in the URL, the original error stays chained to the reason
    plain = UploadBucket(bucket="b", s3=S3Resource(endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1,
                                                   **CREDENTIALS))  # fmt: skip
    with pytest.raises(UploadError) as raised:
        plain.head("uploads/a/x.jpg")
    assert isinstance(raised.value.__cause__, EndpointConnectionError)
