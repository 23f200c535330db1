"""s3_uploads_sensor against a moto S3 server on loopback: new objects become slug partitions with one run per
keyword, objects written in the same second as the cursor's newest are picked up exactly once, and a run request's
config drives upload_pipeline (media_registry -> media -> video_frames -> frames)."""

import datetime as dt
import json
import uuid

import boto3
import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource
from harness import query, query_dicts
from vision_support import encode, scene

from mining_assets.frames import frames
from mining_assets.jobs import upload_pipeline
from mining_assets.partitions import is_slug, keyword_slug
from mining_assets.sources.media import media
from mining_assets.sources.media_registry import SOURCES_TAG, MediaRegistryConfig, media_registry, resolved
from mining_assets.video.frames import video_frames
from mining_assets.video.synthetic import make_video
from resources.blob_store import check_key
from resources.uploads import UploadBucket, UploadedObject, readable_text
from sensors.s3_uploads import UploadCursor, s3_uploads_sensor

CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
T0 = dt.datetime(2026, 5, 1, 12, 0, 0, 250000)  # moto keeps whole seconds: LastModified 12:00:00


@pytest.fixture
def clock(monkeypatch):
    """moto's clock for new objects (its server runs in this process), so 'the same second' is arranged, not raced."""
    import moto.s3.models

    now = {"time": T0}
    monkeypatch.setattr(moto.s3.models, "utcnow", lambda: now["time"])
    return now


@pytest.fixture
def bucket(s3_endpoint) -> UploadBucket:
    name = f"uploads-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS).create_bucket(Bucket=name)
    return UploadBucket(bucket=name, prefix="uploads", s3=S3Resource(endpoint_url=s3_endpoint, **CREDENTIALS))


def put(bucket: UploadBucket, key: str, data: bytes = b"x") -> None:
    bucket.s3.get_client().put_object(Bucket=bucket.bucket, Key=key, Body=data)


def tick(instance, bucket, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"uploads": bucket}) as context:
        return s3_uploads_sensor(context)


def registry_config(request: dg.RunRequest) -> dict:
    return request.run_config["ops"]["media_registry"]["config"]


def requested(result) -> dict[str, list[str]]:
    return {r.partition_key: registry_config(r)["s3_keys"] for r in result.run_requests}


def test_new_uploads_become_slug_partitions_with_one_run_per_keyword(instance, bucket, clock, capsys):
    keys = ["uploads/glass door/a.jpg", "uploads/glass door/phone/clip.mp4", "uploads/../etc/x.jpg",
            'uploads/<b>"q"</b>/x.jpg', "uploads/café ☕/y.jpg", "uploads/readme.txt", "uploads/glass door/",
            "uploads//no-folder.jpg", "uploads/\x07bell/z.jpg", "elsewhere/glass door/b.jpg"]  # fmt: skip
    for key in keys:
        put(bucket, key)
    result = tick(instance, bucket)

    folders = {"glass door": keys[:2], "..": [keys[2]], '<b>"q"<': [keys[3]], "café ☕": [keys[4]]}
    expected = {keyword_slug(folder): objects for folder, objects in folders.items()}
    assert sorted(result.dynamic_partitions_requests[0].partition_keys) == sorted(expected)
    assert requested(result) == expected
    assert all(is_slug(key) and "/" not in key and ".." not in key for key in expected)
    keywords = {r.partition_key: registry_config(r)["keyword"] for r in result.run_requests}
    assert keywords == {keyword_slug(folder): folder for folder in folders}
    # the registry asks the upload bucket only (the job's sources): no YouTube search, no stock photos, nothing but
    # the new objects
    assert all(registry_config(r) == {"s3_keys": requested(result)[r.partition_key],
                                      "keyword": keywords[r.partition_key]} for r in result.run_requests)  # fmt: skip
    asked = resolved(MediaRegistryConfig(**registry_config(result.run_requests[0])), upload_pipeline.tags)
    assert (asked.youtube_search, asked.uploads, asked.stock_sources) == (False, True, [])
    assert upload_pipeline.tags[SOURCES_TAG] == "uploads"
    assert all(set(r.run_config["ops"]) == {"media_registry"} for r in result.run_requests)
    assert len({r.run_key for r in result.run_requests}) == 4
    assert all(r.run_key.startswith("s3-uploads-") for r in result.run_requests)
    log = capsys.readouterr().err  # the empty folder and the control character are logged, not fatal
    assert "folder '' refused" in log and "folder '\\x07bell' refused" in log

    # nothing new: nothing requested, and a known keyword is not added again
    instance.add_dynamic_partitions("keyword", list(expected))
    assert isinstance(tick(instance, bucket, result.cursor), dg.SkipReason)
    clock["time"] = T0 + dt.timedelta(seconds=5)
    put(bucket, "uploads/glass door/b.jpg")
    later = tick(instance, bucket, result.cursor)
    assert requested(later) == {"glass-door": ["uploads/glass door/b.jpg"]}
    assert later.dynamic_partitions_requests == []


def test_objects_written_in_the_same_second_are_picked_up_exactly_once(instance, bucket, clock):
    put(bucket, "uploads/door/a.jpg")
    first = tick(instance, bucket)
    assert requested(first) == {"door": ["uploads/door/a.jpg"]}
    assert json.loads(first.cursor)["keys_at_newest"] == ["uploads/door/a.jpg"]

    clock["time"] = T0 + dt.timedelta(milliseconds=600)  # still 12:00:00 for S3
    put(bucket, "uploads/door/b.jpg")
    put(bucket, "uploads/door/c.jpg")
    second = tick(instance, bucket, first.cursor)
    assert requested(second) == {"door": ["uploads/door/b.jpg", "uploads/door/c.jpg"]}
    assert tick(instance, bucket, first.cursor).run_requests[0].run_key == second.run_requests[0].run_key
    assert isinstance(tick(instance, bucket, second.cursor), dg.SkipReason)

    # an object replaced later is new content: it runs again, under another run key
    clock["time"] = T0 + dt.timedelta(seconds=2)
    put(bucket, "uploads/door/b.jpg", b"new content")
    third = tick(instance, bucket, second.cursor)
    assert requested(third) == {"door": ["uploads/door/b.jpg"]}
    assert third.run_requests[0].run_key != second.run_requests[0].run_key
    assert isinstance(tick(instance, bucket, third.cursor), dg.SkipReason)


def test_a_run_request_drives_the_upload_pipeline(instance, resources, bucket, clock, tmp_path):
    video = make_video(tmp_path / "clip.mp4", frames=20, fps=10).read_bytes()
    put(bucket, "uploads/glass door/IMG_0001.jpg", encode(scene(1)))
    put(bucket, "uploads/glass door/VID_0001.jpg", video)  # a video, whatever its name says
    put(bucket, "uploads/../etc/passwd", encode(scene(2)))
    result = tick(instance, bucket)
    instance.add_dynamic_partitions("keyword", result.dynamic_partitions_requests[0].partition_keys)
    resources = {**resources, "uploads": bucket}
    # the sensor's job as the definitions hold it, with the request's own config
    job = dg.Definitions(
        assets=[media_registry, media, video_frames, frames], jobs=[upload_pipeline], resources=resources
    ).resolve_job_def("upload_pipeline")
    for request in result.run_requests:
        outcome = job.execute_in_process(run_config=request.run_config, partition_key=request.partition_key,
                                         instance=instance)  # fmt: skip
        assert outcome.success

    rows = query_dicts(resources, "SELECT partition_key, item, source, media_type, status, media_id FROM media_status")
    keywords = {r["partition_key"]: r["keyword"] for r in query_dicts(resources, "SELECT * FROM keywords")}
    by_item = {row["item"]: row for row in rows}
    assert set(by_item) == {bucket.location(key) for key in
                            ["uploads/glass door/IMG_0001.jpg", "uploads/glass door/VID_0001.jpg",
                             "uploads/../etc/passwd"]}  # fmt: skip

    def described(key: str) -> tuple:
        row = by_item[bucket.location(key)]
        return row["partition_key"], row["source"], row["media_type"], row["status"]

    assert described("uploads/glass door/IMG_0001.jpg") == ("glass-door", "s3", "photo", "complete")
    assert described("uploads/glass door/VID_0001.jpg") == ("glass-door", "s3", "video", "complete")
    assert described("uploads/../etc/passwd") == (keyword_slug(".."), "s3", "photo", "complete")
    video_id = by_item[bucket.location("uploads/glass door/VID_0001.jpg")]["media_id"]
    videos = query_dicts(resources, "SELECT media_id, source, blob_key FROM media WHERE media_type = 'video'")
    assert videos == [{"media_id": video_id, "source": "s3", "blob_key": f"videos/{video_id}.mp4"}]
    sampled = query_dicts(resources, "SELECT partition_key, media_id FROM keyword_samples")
    assert sampled == [{"partition_key": "glass-door", "media_id": video_id}]
    assert keywords == {"glass-door": "glass door", keyword_slug(".."): ".."}
    assert query(resources, "SELECT count(*) FROM ingest_errors")[0][0] == 0
    store = resources["blob_store"]
    stored = store.list_keys("photos") + store.list_keys("videos")
    assert len(stored) == 3 and all(check_key(key) and "etc" not in key for key in stored)
    assert all(check_key(key) and "etc" not in key for key in store.list_keys("frames"))
    assert sorted(p.name for p in (tmp_path / "data" / "blobs").iterdir()) == ["frames", "photos", "videos"]


def test_without_a_bucket_the_sensor_skips(instance):
    assert "no upload bucket" in tick(instance, UploadBucket.unconfigured()).skip_message


@pytest.mark.parametrize(
    ("prefix", "key", "folder"),
    [
        ("uploads", "uploads/glass door/a.jpg", "glass door"),
        ("uploads", "uploads/glass door/deep/a.jpg", "glass door"),
        ("uploads", "uploads/a.jpg", None),  # no folder
        ("uploads", "uploads/glass door/", None),  # a folder marker
        ("uploads", "other/glass door/a.jpg", None),  # outside the prefix
        ("uploads", "uploadsx/glass door/a.jpg", None),
        ("uploads", "uploads//a.jpg", ""),  # an empty folder: refused later as a keyword
        ("uploads", "uploads/../etc/x.jpg", ".."),
        ("uploads", 'uploads/<b>"q"</b>/x.jpg', '<b>"q"<'),
        ("uploads", "uploads/a\udcffb/x.jpg", "a\ufffdb"),  # an undecodable byte
        ("/uploads/", "uploads/glass door/a.jpg", "glass door"),
        ("", "glass door/a.jpg", "glass door"),
    ],
)
def test_keyword_folder(prefix, key, folder):
    assert UploadBucket(bucket="b", prefix=prefix, s3=S3Resource()).keyword_folder(key) == folder


def test_readable_text():
    assert readable_text(b"caf\xe9") == "caf\ufffd"
    assert readable_text("caf\udce9") == "caf\ufffd"
    assert readable_text("café") == "café"


def test_cursor_round_trip_and_same_second_rule():
    second = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.UTC)

    def obj(key: str, at: dt.datetime) -> UploadedObject:
        return UploadedObject(key=key, size=1, etag="e", last_modified=at)

    cursor = UploadCursor().advance([obj("a", second - dt.timedelta(seconds=1)), obj("b", second)])
    cursor = UploadCursor.parse(cursor.dumps())
    assert cursor == UploadCursor(second, frozenset({"b"}))
    assert [cursor.is_new(obj(k, second)) for k in ("a", "b", "c")] == [True, False, True]
    assert not cursor.is_new(obj("z", second - dt.timedelta(seconds=1)))
    assert cursor.advance([obj("c", second)]).keys_at_newest == {"b", "c"}
    assert cursor.advance([obj("d", second + dt.timedelta(seconds=1))]).keys_at_newest == {"d"}
    assert UploadCursor.parse(None) == UploadCursor() and UploadCursor().advance([]) == UploadCursor()
