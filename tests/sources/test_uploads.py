"""media_uploads through Dagster: a local collection and an S3 bucket (moto on loopback) with photos, videos and
files that are neither, told apart by content; then the videos' frames and the photos in the frames catalog."""

import hashlib
import os
import shutil
import uuid

import boto3
import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource
from harness import meta, query, query_dicts
from vision_support import encode, rotated_jpeg, scene

from mining_assets.frames import frames
from mining_assets.images.uploads import Rejected, inspect_media, media_uploads
from mining_assets.video.frames import video_frames
from mining_assets.video.synthetic import make_video
from resources.blob_store import check_key
from resources.uploads import UploadBucket

CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
KEY = "glass-door"
MEDIA_ID = r"^(s3|local)-[0-9a-f]{16}$"


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


def make_bucket(endpoint: str, tmp_path) -> UploadBucket:
    name = f"uploads-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS).create_bucket(Bucket=name)
    return UploadBucket(bucket=name, prefix="uploads", s3=S3Resource(endpoint_url=endpoint, **CREDENTIALS))


def put(bucket: UploadBucket, key: str, data: bytes) -> None:
    bucket.s3.get_client().put_object(Bucket=bucket.bucket, Key=key, Body=data)


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
    bucket = make_bucket(s3_endpoint, tmp_path)
    put(bucket, "uploads/glass door/beach.jpg", encode(scene(7, size=(120, 80))))
    put(bucket, "uploads/glass door/phone/VID_0001.dat", video_bytes(tmp_path, "phone", frames=20, fps=10))
    put(bucket, "uploads/robot arm/other.jpg", encode(scene(8)))  # another keyword's upload
    put(bucket, "uploads/stray.jpg", encode(scene(9)))  # in no keyword folder
    return bucket


def run(instance, resources, selection, partition_key=KEY, **config):
    if partition_key not in instance.get_dynamic_partitions("keyword"):
        instance.add_dynamic_partitions("keyword", [partition_key])
    result = dg.materialize(
        selection,
        partition_key=partition_key,
        resources=resources,
        instance=instance,
        run_config={"ops": {name: {"config": value} for name, value in config.items()}},
    )
    assert result.success
    return result


def ingest_all(instance, resources, collection):
    uploads_config = {"local_dir": str(collection), "keyword": "glass door", "license": "CC BY 4.0"}
    result = run(instance, resources, [media_uploads], media_uploads=uploads_config)
    run(instance, resources, [video_frames, frames], video_frames={"strategy": "interval", "every_n_frames": 10})
    return result


def snapshot(resources) -> dict:
    """Every row this path writes, without the time stamps, and every stored file."""
    tables = {
        "uploads": "SELECT * EXCLUDE (registered_at) FROM uploads ORDER BY location",
        "photos": "SELECT * EXCLUDE (stored_at) FROM photos ORDER BY media_id",
        "videos": "SELECT * EXCLUDE (discovered_at, updated_at) FROM videos ORDER BY media_id",
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
    assert all(check.passed for check in result.get_asset_check_evaluations())

    rows = {r[0]: r[1:] for r in query(resources, "SELECT location, media_type, status, error, media_id FROM uploads")}
    local = {(collection / name).as_uri(): name for name in
             ["grace.jpg", "trip/day 1/copy of grace.jpeg", "trip/clip.mp4", "holiday.png", "portrait.bin",
              "notes.jpg", "empty.mov"]}  # fmt: skip
    s3 = {bucket.location(f"uploads/glass door/{name}"): name for name in ["beach.jpg", "phone/VID_0001.dat"]}
    assert set(rows) == set(local) | set(s3)  # no hidden files, no other keyword's or stray objects
    by_name = {**{local[loc]: row for loc, row in rows.items() if loc in local},
               **{s3[loc]: row for loc, row in rows.items() if loc in s3}}  # fmt: skip
    kinds = {name: row[:2] for name, row in by_name.items()}
    assert kinds == {
        "grace.jpg": ("photo", "stored"),
        "trip/day 1/copy of grace.jpeg": ("photo", "duplicate"),
        "trip/clip.mp4": ("video", "stored"),
        "holiday.png": ("video", "stored"),
        "portrait.bin": ("photo", "stored"),
        "notes.jpg": (None, "failed"),
        "empty.mov": (None, "failed"),
        "beach.jpg": ("photo", "stored"),
        "phone/VID_0001.dat": ("video", "stored"),
    }
    assert by_name["notes.jpg"][2] == "neither an image nor a video: not a video: the file holds text"
    assert by_name["empty.mov"][2] == "neither an image nor a video: empty file (0 bytes)"
    assert by_name["trip/day 1/copy of grace.jpeg"][2] == f"same content as {(collection / 'grace.jpg').as_uri()}"
    grace_sha = hashlib.sha256((collection / "grace.jpg").read_bytes()).hexdigest()
    assert by_name["grace.jpg"][3] == f"local-{grace_sha[:16]}" == by_name["trip/day 1/copy of grace.jpeg"][3]
    assert by_name["beach.jpg"][3].startswith("s3-")

    columns = "media_id, source, source_id, query, page_url, image_url, photographer, license, status, width, height"
    photos = {r[0]: r[1:] for r in query(resources, f"SELECT {columns}, blob_key FROM photos")}
    grace = photos[by_name["grace.jpg"][3]]
    location = (collection / "grace.jpg").as_uri()
    assert grace[:8] == ("local", grace_sha[:16], "", location, location, None, "CC BY 4.0", "stored")
    assert grace[10] == f"photos/local-{grace_sha[:16]}.jpg"
    assert photos[by_name["portrait.bin"][3]][8:10] == (64, 96)  # EXIF orientation applied to the recorded size
    assert len(photos) == 3

    videos = query(resources, "SELECT media_id, source, url, status, blob_key, codec, width FROM videos ORDER BY url")
    assert {(v[1], v[3]) for v in videos} == {("local", "complete"), ("s3", "complete")} and len(videos) == 3
    assert all(v[4] == f"videos/{v[0]}.mp4" for v in videos)  # the suffix comes from the content, not the name
    holiday = next(v for v in videos if v[2].endswith("holiday.png"))
    assert holiday[5] == "mpeg4" and holiday[6] == 320

    catalog = query(resources, "SELECT media_id, media_type, count(*), min(source_url) FROM frames GROUP BY ALL")
    per_media = {r[0]: r[1:] for r in catalog}
    assert {m for m, (t, *_) in per_media.items() if t == "photo"} == {
        by_name[n][3] for n in ("grace.jpg", "portrait.bin", "beach.jpg")
    }
    assert {m for m, (t, *_) in per_media.items() if t == "video"} == {v[0] for v in videos}
    assert per_media[by_name["trip/clip.mp4"][3]][1] == 3  # 30 frames, one in every 10
    assert per_media[by_name["phone/VID_0001.dat"][3]][2] == bucket.location("uploads/glass door/phone/VID_0001.dat")

    errors = dict(query(resources, "SELECT item, reason FROM ingest_errors WHERE stage = 'media_uploads'"))
    assert set(errors) == {(collection / "notes.jpg").as_uri(), (collection / "empty.mov").as_uri()}
    assert query(resources, "SELECT partition_key, keyword FROM keywords") == [(KEY, "glass door")]

    # storage keys are made of ids only; nothing lands outside the store
    store = resources["blob_store"]
    assert all(check_key(key) for key in snapshot(resources)["files"])
    assert sorted(p.name for p in (tmp_path / "data" / "blobs").iterdir()) == ["frames", "photos", "videos"]

    # the same input again: the same rows and files, nothing doubled
    before = snapshot(resources)
    ingest_all(instance, resources, collection)
    assert snapshot(resources) == before
    assert len(store.list_keys("photos")) == 3 and len(store.list_keys("videos")) == 3


def test_runs_upsert_their_items_and_keep_earlier_errors(instance, resources, collection, s3_endpoint, tmp_path):
    local_only = {**resources, "uploads": UploadBucket.unconfigured()}
    shutil.rmtree(collection / "trip")
    first = run(instance, local_only, [media_uploads],
                media_uploads={"local_dir": str(collection), "s3_keys": ["uploads/glass door/a.jpg"],
                               "keyword": "robot arm"})  # fmt: skip
    assert first.success
    errors = dict(query(local_only, "SELECT item, reason FROM ingest_errors"))
    assert errors["s3"] == "no upload bucket configured: 1 S3 keys skipped"
    assert query(local_only, "SELECT count(*) FROM keywords")[0][0] == 0  # 'robot arm' is not this partition's text
    local_rows = query(local_only, "SELECT * EXCLUDE (registered_at) FROM uploads ORDER BY location")
    assert len(local_rows) == 5

    bucket = make_bucket(s3_endpoint, tmp_path)
    put(bucket, "uploads/glass door/page.jpg", b"<html><body>Access denied</body></html>")
    put(bucket, "uploads/glass door/tiny.png", encode(scene(2).resize((16, 12)), "PNG"))
    put(bucket, "uploads/robot arm/arm.jpg", encode(scene(4)))
    keys = ["uploads/glass door/page.jpg", "uploads/glass door/tiny.png", "uploads/glass door/gone.jpg",
            "uploads/robot arm/arm.jpg"]  # fmt: skip
    run(instance, {**resources, "uploads": bucket}, [media_uploads], media_uploads={"s3_keys": keys})

    rows = {r[0]: r[1:] for r in query(resources, "SELECT location, media_type, status, error FROM uploads")}
    assert query(resources, "SELECT * EXCLUDE (registered_at) FROM uploads WHERE source = 'local' ORDER BY location") \
        == local_rows  # fmt: skip
    assert rows[bucket.location("uploads/glass door/page.jpg")] == (
        None, "failed", "neither an image nor a video: not a video: the file holds an HTML page"
    )  # fmt: skip
    tiny = rows[bucket.location("uploads/glass door/tiny.png")]
    assert tiny[:2] == ("photo", "failed") and tiny[2].startswith("too small: 16x12")  # a PNG, never a "video"
    assert rows[bucket.location("uploads/glass door/gone.jpg")][1:] == (
        "failed", "not found in the bucket (deleted since it was listed?)"
    )  # fmt: skip
    assert bucket.location("uploads/robot arm/arm.jpg") not in rows
    errors = dict(query(resources, "SELECT item, reason FROM ingest_errors WHERE stage = 'media_uploads'"))
    assert "s3" not in errors  # the bucket was looked at again: that reason no longer holds
    assert (collection / "notes.jpg").as_uri() in errors and (collection / "empty.mov").as_uri() in errors
    assert "not an upload of this keyword" in errors[bucket.location("uploads/robot arm/arm.jpg")]
    assert len(errors) == 6
    assert query(resources, "SELECT count(*) FROM photos WHERE status = 'failed'")[0][0] == 1


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
    resources = {**resources, "uploads": UploadBucket.unconfigured()}  # a local collection needs no bucket
    run(instance, resources, [media_uploads], media_uploads={"local_dir": str(folder), "keyword": "glass door"})
    ((location, status, blob_key),) = query(
        resources,
        "SELECT u.location, u.status, p.blob_key FROM uploads u JOIN photos p USING (partition_key, media_id)",
    )
    assert status == "stored" and location.endswith("/caf%E9%20%3Cb%3E%27q%27.jpg")
    assert blob_key.startswith("photos/local-") and blob_key.endswith(".jpg")


def test_metadata_counts_the_partition_and_the_table(instance, resources, collection):
    resources = {**resources, "uploads": UploadBucket.unconfigured()}
    first = run(instance, resources, [media_uploads], media_uploads={"local_dir": str(collection)})
    second = run(instance, resources, [media_uploads], partition_key="robot-arm",
                 media_uploads={"local_dir": str(collection), "keyword": "robot arm"})  # fmt: skip
    # the collection's 7 visible files, one uploads row each, in each partition
    metadata = meta(second, "media_uploads")
    assert metadata["dagster/table_name"] == "lake.main.uploads"
    assert (metadata["dagster/partition_row_count"], metadata["dagster/row_count"]) == (7, 14)
    assert meta(first, "media_uploads")["dagster/row_count"] == 7
    for result in (first, second):
        assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
            "stored_files_exist": True,
            "unique_key": True,
        }
    # a run again upserts by location: nothing doubles
    again = run(instance, resources, [media_uploads], media_uploads={"local_dir": str(collection)})
    assert (meta(again, "media_uploads")["dagster/partition_row_count"], meta(again, "media_uploads")[
        "dagster/row_count"]) == (7, 14)  # fmt: skip
    photos = query_dicts(resources, "SELECT partition_key, count(*) AS n FROM photos GROUP BY ALL ORDER BY 1")
    videos = query_dicts(resources, "SELECT partition_key, count(*) AS n FROM videos GROUP BY ALL ORDER BY 1")
    assert photos == videos == [{"partition_key": KEY, "n": 2}, {"partition_key": "robot-arm", "n": 2}]


def test_unique_key_fails_on_a_doubled_upload(instance, resources, collection):
    resources = {**resources, "uploads": UploadBucket.unconfigured()}
    # an earlier S3 item recorded twice; this run looks only at the local folder, so it stays as it is
    resources["warehouse"].execute(
        "INSERT INTO uploads (partition_key, keyword, media_id, source, location, status, registered_at) "
        "SELECT ?, 'glass door', 's3-0123456789abcdef', 's3', 's3://old/uploads/glass door/a.jpg', 'stored', "
        "now()::TIMESTAMP FROM range(2)",
        [KEY],
    )
    result = run(instance, resources, [media_uploads], media_uploads={"local_dir": str(collection)})
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "unique_key"]
    assert not evaluation.passed and evaluation.metadata["duplicated_keys"].value == {"uploads": 1}
    assert meta(result, "media_uploads")["dagster/partition_row_count"] == 7 + 2
