"""s3_uploads_sensor against a moto S3 server on loopback and the test's lake: new objects become slug partitions
with one run per keyword; what is new is decided by (key, ETag) against ``upload_objects`` (media_registry's
record), so a multipart upload dated before objects seen earlier is still picked up exactly once, and an object
overwritten is new again; listings go page by page, folder by folder; a run request's config drives
upload_pipeline (media_registry -> media -> video_frames -> frames)."""

import datetime as dt
import functools
import json
import time
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
from resources.uploads import UploadBucket, readable_text
from resources.warehouse import Warehouse
from sensors.s3_uploads import REGISTERED, UploadCursor, s3_uploads_sensor

CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
T0 = dt.datetime(2026, 5, 1, 12, 0, 0, 250000)  # moto keeps whole seconds: LastModified 12:00:00


@pytest.fixture
def clock(monkeypatch):
    """moto's clock for new objects (its server runs in this process), so 'the same second' is arranged, not raced."""
    import moto.s3.models

    now = {"time": T0}
    monkeypatch.setattr(moto.s3.models, "utcnow", lambda: now["time"])
    return now


def make_bucket(endpoint: str, **settings) -> UploadBucket:
    name = f"uploads-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS).create_bucket(Bucket=name)
    return UploadBucket(bucket=name, prefix="uploads", s3=S3Resource(endpoint_url=endpoint, **CREDENTIALS), **settings)


@pytest.fixture
def bucket(s3_endpoint) -> UploadBucket:
    return make_bucket(s3_endpoint)


@functools.cache
def client_of(endpoint: str):
    """One client per endpoint for the test's own writes (making a client costs more than a write)."""
    return boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)


def put(bucket: UploadBucket, key: str, data: bytes = b"x") -> str:
    """Write an object; returns its ETag."""
    return client_of(bucket.s3.endpoint_url).put_object(Bucket=bucket.bucket, Key=key, Body=data)["ETag"].strip('"')


@pytest.fixture
def env(resources, instance) -> dict:
    """The test's resources (its lake) and Dagster instance, which a tick and the runs it requests share."""
    return {"resources": resources, "instance": instance}


def tick(env: dict, bucket: UploadBucket, cursor: str | None = None) -> dg.SensorResult | dg.SkipReason:
    resources = {"uploads": bucket, "warehouse": env["resources"]["warehouse"]}
    with dg.build_sensor_context(instance=env["instance"], cursor=cursor, resources=resources) as context:
        return s3_uploads_sensor(context)


def registry_config(request: dg.RunRequest) -> dict:
    return request.run_config["ops"]["media_registry"]["config"]


def requested(result) -> dict[str, list[str]]:
    """partition -> keys requested (none for a skipped tick)."""
    return {r.partition_key: [o["key"] for o in registry_config(r)["s3_objects"]] for r in result.run_requests}


def register(env: dict, bucket: UploadBucket, result: dg.SensorResult) -> None:
    """Run media_registry for each request as upload_pipeline would (its tag asks the upload bucket only)."""
    for request in result.run_requests:
        if request.partition_key not in env["instance"].get_dynamic_partitions("keyword"):
            env["instance"].add_dynamic_partitions("keyword", [request.partition_key])
        outcome = dg.materialize([media_registry], partition_key=request.partition_key, run_config=request.run_config,
                                 resources={**env["resources"], "uploads": bucket}, instance=env["instance"],
                                 tags=upload_pipeline.tags)  # fmt: skip
        assert outcome.success


def test_new_uploads_become_slug_partitions_with_one_run_per_keyword(env, bucket, clock, capsys):
    keys = ["uploads/glass door/a.jpg", "uploads/glass door/phone/clip.mp4", "uploads/../etc/x.jpg",
            'uploads/<b>"q"</b>/x.jpg', "uploads/café ☕/y.jpg", "uploads/readme.txt", "uploads/glass door/",
            "uploads//no-folder.jpg", "uploads/\x07bell/z.jpg", "elsewhere/glass door/b.jpg"]  # fmt: skip
    etags = {key: put(bucket, key, key.encode()) for key in keys}
    result = tick(env, bucket)

    folders = {"glass door": keys[:2], "..": [keys[2]], '<b>"q"<': [keys[3]], "café ☕": [keys[4]]}
    expected = {keyword_slug(folder): objects for folder, objects in folders.items()}
    assert sorted(result.dynamic_partitions_requests[0].partition_keys) == sorted(expected)
    assert requested(result) == expected
    assert all(is_slug(key) and "/" not in key and ".." not in key for key in expected)
    keywords = {r.partition_key: registry_config(r)["keyword"] for r in result.run_requests}
    assert keywords == {keyword_slug(folder): folder for folder in folders}
    # the registry asks the upload bucket only (the job's sources): nothing but the new objects, with the ETags
    # the listing gave
    assert all(registry_config(r) == {"s3_objects": [{"key": k, "etag": etags[k]} for k in expected[r.partition_key]],
                                      "keyword": keywords[r.partition_key]} for r in result.run_requests)  # fmt: skip
    asked = resolved(MediaRegistryConfig(**registry_config(result.run_requests[0])), upload_pipeline.tags)
    assert (asked.youtube_search, asked.uploads, asked.stock_sources) == (False, True, [])
    assert upload_pipeline.tags[SOURCES_TAG] == "uploads"
    assert all(set(r.run_config["ops"]) == {"media_registry"} for r in result.run_requests)
    assert len({r.run_key for r in result.run_requests}) == 4
    assert all(r.run_key.startswith("s3-uploads-") for r in result.run_requests)
    log = capsys.readouterr().err  # the empty folder and the control character are logged, not fatal
    assert "folder '' refused" in log and "folder '\\x07bell' refused" in log

    # nothing new: the requested objects wait to be registered, nothing is requested twice, a refused folder is
    # not warned about again, and a known keyword is not added again
    env["instance"].add_dynamic_partitions("keyword", list(expected))
    idle = tick(env, bucket, result.cursor)
    assert (
        idle.run_requests == []
        and idle.skip_reason.skip_message == "no new uploads (5 requested earlier, not registered yet)"
    )
    assert "refused" not in capsys.readouterr().err
    clock["time"] = T0 + dt.timedelta(seconds=5)
    put(bucket, "uploads/glass door/b.jpg")
    later = tick(env, bucket, idle.cursor)
    assert requested(later) == {"glass-door": ["uploads/glass door/b.jpg"]}
    assert later.dynamic_partitions_requests == []


def test_a_late_multipart_upload_is_requested_exactly_once(env, bucket, clock):
    """S3 dates a multipart upload by its start: one started before ``a.jpg`` was written and completed after the
    tick that saw ``a.jpg`` lists as older than it. moto dates it by its completion, so its clock is set back to
    the start when the upload completes, as S3 would date it."""
    client = client_of(bucket.s3.endpoint_url)
    late = "uploads/door/late.mp4"
    upload_id = client.create_multipart_upload(Bucket=bucket.bucket, Key=late)["UploadId"]
    part = client.upload_part(Bucket=bucket.bucket, Key=late, UploadId=upload_id, PartNumber=1, Body=b"late")
    clock["time"] = T0 + dt.timedelta(seconds=10)
    put(bucket, "uploads/door/a.jpg")
    first = tick(env, bucket)
    assert requested(first) == {"door": ["uploads/door/a.jpg"]}
    register(env, bucket, first)
    assert tick(env, bucket, first.cursor).skip_reason.skip_message == "no new uploads"

    clock["time"] = T0  # S3 stamps the upload with its start
    client.complete_multipart_upload(Bucket=bucket.bucket, Key=late, UploadId=upload_id,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})  # fmt: skip
    listed = {obj.key: obj for obj in bucket.list_objects()}
    assert listed[late].last_modified < listed["uploads/door/a.jpg"].last_modified  # a time cursor would skip it
    assert "-" in listed[late].etag  # a multipart ETag

    second = tick(env, bucket, first.cursor)
    assert requested(second) == {"door": [late]}
    assert registry_config(second.run_requests[0])["s3_objects"] == [{"key": late, "etag": listed[late].etag}]
    assert tick(env, bucket, second.cursor).run_requests == []  # requested, not registered yet: not again
    register(env, bucket, second)
    done = tick(env, bucket, second.cursor)
    assert done.skip_reason.skip_message == "no new uploads" and json.loads(done.cursor)["pending"] == []
    assert query(env["resources"], "SELECT key FROM upload_objects ORDER BY key") == [("uploads/door/a.jpg",), (late,)]


def test_objects_written_in_the_same_second_are_picked_up_exactly_once(env, bucket, clock):
    put(bucket, "uploads/door/a.jpg")
    first = tick(env, bucket)
    assert requested(first) == {"door": ["uploads/door/a.jpg"]}

    clock["time"] = T0 + dt.timedelta(milliseconds=600)  # still 12:00:00 for S3
    put(bucket, "uploads/door/b.jpg")
    put(bucket, "uploads/door/c.jpg")
    second = tick(env, bucket, first.cursor)
    assert requested(second) == {"door": ["uploads/door/b.jpg", "uploads/door/c.jpg"]}
    assert tick(env, bucket, first.cursor).run_requests[0].run_key == second.run_requests[0].run_key
    assert tick(env, bucket, second.cursor).run_requests == []


def test_an_overwritten_object_is_requested_again_and_a_run_gets_only_its_new_keys(env, bucket, clock):
    put(bucket, "uploads/door/a.jpg")
    put(bucket, "uploads/door/b.jpg")
    first = tick(env, bucket)
    register(env, bucket, first)
    assert tick(env, bucket, first.cursor).skip_reason.skip_message == "no new uploads"

    # b.jpg replaced with new content (a new ETag), c.jpg new: the run brings these two, not a.jpg
    etag = put(bucket, "uploads/door/b.jpg", b"new content")
    put(bucket, "uploads/door/c.jpg")
    second = tick(env, bucket, first.cursor)
    assert requested(second) == {"door": ["uploads/door/b.jpg", "uploads/door/c.jpg"]}
    assert registry_config(second.run_requests[0])["s3_objects"][0] == {"key": "uploads/door/b.jpg", "etag": etag}
    assert second.run_requests[0].run_key != first.run_requests[0].run_key
    register(env, bucket, second)
    assert tick(env, bucket, second.cursor).skip_reason.skip_message == "no new uploads"
    versions = query(env["resources"], "SELECT count(*) FROM upload_objects WHERE key = 'uploads/door/b.jpg'")
    assert versions == [(2,)]  # each content of the key, registered once


@pytest.fixture
def s3_calls(monkeypatch) -> list[dict]:
    """Every ListObjectsV2 request the upload bucket's clients send (its parameters) and how many keys and folders
    its answer held."""
    calls: list[dict] = []
    original = S3Resource.get_client

    def params(params, **_):
        calls.append({"params": dict(params)})

    def answered(parsed, **_):
        calls[-1].update(keys=len(parsed.get("Contents", [])), folders=len(parsed.get("CommonPrefixes", [])))

    def get_client(self):
        client = original(self)
        client.meta.events.register("provide-client-params.s3.ListObjectsV2", params)
        client.meta.events.register("after-call.s3.ListObjectsV2", answered)
        return client

    monkeypatch.setattr(S3Resource, "get_client", get_client)
    return calls


@pytest.fixture
def registered_queries(monkeypatch) -> list[int]:
    """How many keys each of the sensor's queries of ``upload_objects`` asked about."""
    sizes: list[int] = []
    original = Warehouse.execute

    def execute(self, sql, params=()):
        if sql == REGISTERED:
            sizes.append(len(params[1]))
        return original(self, sql, params)

    monkeypatch.setattr(Warehouse, "execute", execute)
    return sizes


def test_listing_goes_page_by_page_and_the_sensor_holds_little(env, s3_endpoint, s3_calls, registered_queries):
    bucket = make_bucket(s3_endpoint, page_size=2, max_pending=3)
    keys = [f"uploads/{folder}/{name}.jpg" for folder in ("door", "glass door", "window") for name in "abc"]
    for key in [*keys, "uploads/stray.jpg", "uploads/door/"]:
        put(bucket, key)
    first = tick(env, bucket)
    assert requested(first) == {"door": keys[:3]}  # at most max_pending requested and not registered
    assert [key for key, *_ in json.loads(first.cursor)["pending"]] == keys[:3]
    # every request asks for a page of 2; the upload prefix is listed only for its folders (never all its objects)
    assert s3_calls and all(call["params"]["MaxKeys"] == 2 for call in s3_calls)
    assert all(call["keys"] <= 2 and call["folders"] <= 2 for call in s3_calls)
    tops = [call for call in s3_calls if call["params"]["Prefix"] == bucket.root]
    assert tops and all(call["params"].get("Delimiter") == "/" for call in tops)
    assert {call["params"]["Prefix"] for call in s3_calls} - {bucket.root} == {"uploads/door/"}  # stopped when full
    assert registered_queries and max(registered_queries) <= 2  # one query per page of keys

    # the cursor is full: nothing is listed until runs register what was asked
    s3_calls.clear()
    full = tick(env, bucket, first.cursor)
    assert full.run_requests == [] and "no more are requested until runs register them" in full.skip_reason.skip_message
    assert s3_calls == []
    register(env, bucket, first)
    registered_queries.clear()
    second = tick(env, bucket, full.cursor)
    assert requested(second) == {"glass-door": keys[3:6]}
    assert max(registered_queries) <= 2 and len(json.loads(second.cursor)["pending"]) == 3
    register(env, bucket, second)
    third = tick(env, bucket, second.cursor)
    assert requested(third) == {"window": keys[6:]}
    register(env, bucket, third)
    assert tick(env, bucket, third.cursor).skip_reason.skip_message == "no new uploads"


def test_an_object_never_registered_is_asked_for_again_after_the_timeout(env, bucket):
    put(bucket, "uploads/door/a.jpg")
    first = tick(env, bucket)
    assert tick(env, bucket, first.cursor).run_requests == []
    # the run failed before registering it; a day later it is asked for again, under a run key of its own
    cursor = UploadCursor.parse(first.cursor)
    day_old = UploadCursor({ident: (at - 24 * 3600, attempt) for ident, (at, attempt) in cursor.pending.items()})
    again = tick(env, bucket, day_old.dumps())
    assert requested(again) == requested(first)
    assert again.run_requests[0].run_key != first.run_requests[0].run_key
    assert [attempt for *_, attempt in json.loads(again.cursor)["pending"]] == [1]
    assert tick(env, bucket, again.cursor).run_requests == []
    register(env, bucket, again)
    assert (
        tick(env, bucket, day_old.dumps()).skip_reason.skip_message == "no new uploads"
    )  # registered: never asked again


def test_a_run_request_drives_the_upload_pipeline(env, bucket, clock, tmp_path):
    resources = env["resources"]
    video = make_video(tmp_path / "clip.mp4", frames=20, fps=10).read_bytes()
    put(bucket, "uploads/glass door/IMG_0001.jpg", encode(scene(1)))
    put(bucket, "uploads/glass door/VID_0001.jpg", video)  # a video, whatever its name says
    put(bucket, "uploads/../etc/passwd", encode(scene(2)))
    result = tick(env, bucket)
    instance = env["instance"]
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
    assert tick(env, bucket, result.cursor).skip_reason.skip_message == "no new uploads"  # the runs registered them

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


def test_without_a_bucket_the_sensor_skips(env):
    assert "no upload bucket" in tick(env, UploadBucket.unconfigured()).skip_message


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


def test_cursor_round_trip():
    now = time.time()
    cursor = UploadCursor({("uploads/a/x.jpg", "e1"): (now, 0), ("uploads/a/y.jpg", "e2"): (now - 5, 2)},
                          frozenset({"uploads//"}))  # fmt: skip
    assert UploadCursor.parse(cursor.dumps()) == cursor
    assert UploadCursor.parse(None) == UploadCursor() == UploadCursor.parse(UploadCursor().dumps())
    # a cursor of the earlier sensor (newest LastModified) holds nothing pending: upload_objects decides what is new
    earlier = json.dumps({"newest": "2026-05-01T12:00:00+00:00", "keys_at_newest": ["uploads/a/x.jpg"]})
    assert UploadCursor.parse(earlier) == UploadCursor()
