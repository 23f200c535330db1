import os
import socket
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from dagster_aws.s3 import S3Resource
from harness import nothing_written_beside

from resources.blob_store import BlobDeleteError, BlobNotFound, LocalBlobStore, S3BlobStore, check_key
from resources.faults import StoreUnavailable

UNSAFE_KEYS = ["", "/abs", "../x", "a/../../x", "a//b", ".hidden", "a/ b", 'a/"q"', "a/<b>", "a\\b", "a/\x00"]


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalBlobStore(root=str(tmp_path / "blobs"))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"bucket-{abs(hash(str(tmp_path))) % 10**8}"
    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
    boto3.client("s3", endpoint_url=endpoint, **credentials).create_bucket(Bucket=bucket)
    return S3BlobStore(bucket=bucket, prefix="mining", s3=S3Resource(endpoint_url=endpoint, **credentials))


def test_round_trip(store, tmp_path):
    uri = store.put_bytes("frames/k/m/0000001.jpg", b"one")
    assert uri.endswith("frames/k/m/0000001.jpg")
    source = tmp_path / "video.mp4"
    source.write_bytes(b"video bytes")
    store.put_file("videos/k/m.mp4", source)
    store.put_bytes("frames/k/m/0000001.jpg", b"one again")

    assert store.get_bytes("frames/k/m/0000001.jpg") == b"one again"
    assert store.exists("videos/k/m.mp4") and not store.exists("videos/k/other.mp4")
    assert store.list_keys("frames/k") == ["frames/k/m/0000001.jpg"]
    assert store.list_keys("frames/nothing") == []
    with store.local_path("videos/k/m.mp4") as path:
        assert path.read_bytes() == b"video bytes"

    # S3 answers a missing key as deleted; a local store counts only the files it removed
    missing_counts = 0 if isinstance(store, LocalBlobStore) else 1
    assert store.delete(["frames/k/m/0000001.jpg", "frames/k/m/missing.jpg"]) == 1 + missing_counts
    assert store.list_keys("frames") == []
    assert store.list_keys("videos") == ["videos/k/m.mp4"]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_refused(store, key):
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        check_key(key)


def test_s3_uris_name_bucket_and_prefix(s3_endpoint):
    store = S3BlobStore(bucket="b", prefix="/p/", s3=S3Resource(endpoint_url=s3_endpoint))
    assert store.uri("frames/a.jpg") == "s3://b/p/frames/a.jpg"


def test_local_store_writes_nothing_outside_its_root(tmp_path):
    store = LocalBlobStore(root=str(tmp_path / "root"))
    with nothing_written_beside(tmp_path):
        for key in UNSAFE_KEYS:
            with pytest.raises(ValueError):
                store.put_bytes(key, b"x")
    assert not (tmp_path / "x").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_list_entries_streams_keys_times_and_sizes(store):
    start = datetime.now(UTC) - timedelta(seconds=2)  # S3 keeps LastModified to the second
    store.put_bytes("frames/m/s1/0000000.jpg", b"12345")
    store.put_bytes("frames/m/s1/0000030.jpg", b"123")
    store.put_bytes("framesets/other.jpg", b"1")
    store.put_bytes("videos/m.mp4", b"1")
    entries = store.list_entries("frames/")
    assert not isinstance(entries, list | tuple)  # a stream, not the whole listing at once
    found = sorted(entries)
    assert [(entry.key, entry.size) for entry in found] == [("frames/m/s1/0000000.jpg", 5),
                                                            ("frames/m/s1/0000030.jpg", 3)]  # fmt: skip
    for entry in found:
        assert entry.modified.tzinfo is not None and entry.modified.utcoffset() == timedelta(0)
        assert start <= entry.modified <= datetime.now(UTC) + timedelta(seconds=2)
    assert [entry.key for entry in store.list_entries("frames/m")] != [] and list(store.list_entries("nothing")) == []
    assert store.list_keys("frames/") == store.list_keys("frames") == [entry.key for entry in found]
    with pytest.raises(ValueError):
        list(store.list_entries("../x"))


def test_delete_counts_only_what_it_removed(store):
    for name in "abc":
        store.put_bytes(f"photos/{name}.jpg", b"x")
    assert store.delete(["photos/a.jpg", "photos/b.jpg", "photos/a.jpg"]) == 2  # a key twice is one object
    assert store.list_keys("photos") == ["photos/c.jpg"]
    with pytest.raises(ValueError):
        store.delete(["photos/c.jpg", "../escape"])  # every key is checked before anything is deleted
    assert store.list_keys("photos") == ["photos/c.jpg"]


def test_local_listing_skips_writes_under_way_and_links(tmp_path):
    store = LocalBlobStore(root=str(tmp_path / "blobs"))
    store.put_bytes("frames/a.jpg", b"x")
    (store.path_for("frames/a.jpg").parent / ".tmp-123").write_bytes(b"partial")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"x")
    os.symlink(outside, store.path_for("frames/linked"))
    os.symlink(store.path_for("frames/a.jpg"), store.path_for("frames/b.jpg"))
    assert [entry.key for entry in store.list_entries("frames")] == ["frames/a.jpg"]


def test_a_local_delete_that_fails_names_the_key_and_deletes_the_rest(tmp_path):
    store = LocalBlobStore(root=str(tmp_path / "blobs"))
    store.put_bytes("frames/a.jpg", b"x")
    store.put_bytes("frames/dir/b.jpg", b"x")
    with pytest.raises(
        BlobDeleteError, match=r"1 of 3 blob\(s\) could not be deleted \(1 deleted\).*frames/dir: EISDIR"
    ) as caught:
        store.delete(["frames/dir", "frames/a.jpg", "frames/missing.jpg"])
    assert caught.value.deleted == 1 and [key for key, _, _ in caught.value.failures] == ["frames/dir"]
    assert store.list_keys("frames") == ["frames/dir/b.jpg"]


CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}


def delete_request(keys: list[str]) -> dict:
    return {"Bucket": "b", "Delete": {"Objects": [{"Key": f"mining/{key}"} for key in keys], "Quiet": True}}


def test_s3_per_key_delete_errors_are_raised_after_the_rest_is_deleted(stubbed_s3):
    store, stubber = stubbed_s3
    keys = ["frames/a.jpg", "frames/b.jpg", "frames/c.jpg"]
    errors = [
        {"Key": "mining/frames/b.jpg", "Code": "AccessDenied", "Message": "Access Denied"},
        {"Key": "mining/frames/c.jpg", "Code": "InternalError", "Message": "We encountered an internal error"},
    ]
    stubber.add_response("delete_objects", {"Errors": errors}, delete_request(keys))
    with pytest.raises(
        BlobDeleteError, match=r"2 of 3 blob\(s\) could not be deleted \(1 deleted\).*AccessDenied"
    ) as caught:
        store.delete(keys)
    assert caught.value.deleted == 1
    assert [(key, code) for key, code, _ in caught.value.failures] == [("frames/b.jpg", "AccessDenied"),
                                                                       ("frames/c.jpg", "InternalError")]  # fmt: skip


def test_s3_deletes_in_batches_of_1000_and_a_refused_batch_does_not_stop_the_next(stubbed_s3):
    store, stubber = stubbed_s3
    keys = [f"frames/m/{i:07d}.jpg" for i in range(2001)]
    stubber.add_response("delete_objects", {}, delete_request(keys[:1000]))
    stubber.add_client_error("delete_objects", "SlowDown", "Please reduce your request rate.", 503,
                             expected_params=delete_request(keys[1000:2000]))  # fmt: skip
    stubber.add_response("delete_objects", {"Deleted": [{"Key": f"mining/{keys[2000]}"}]}, delete_request(keys[2000:]))
    with pytest.raises(BlobDeleteError, match="1000 of 2001") as caught:
        store.delete(keys)
    assert caught.value.deleted == 1001
    assert {code for _, code, _ in caught.value.failures} == {"SlowDown"}
    assert [key for key, _, _ in caught.value.failures] == keys[1000:2000]


def test_s3_listing_fetches_a_page_only_when_it_is_reached(stubbed_s3):
    store, stubber = stubbed_s3
    when = datetime(2026, 12, 1, tzinfo=UTC)
    page = {"IsTruncated": True, "NextContinuationToken": "t2", "KeyCount": 1,
            "Contents": [{"Key": "mining/videos/a.mp4", "LastModified": when, "Size": 7}]}  # fmt: skip
    stubber.add_response("list_objects_v2", page, {"Bucket": "b", "Prefix": "mining/videos/"})
    entries = store.list_entries("videos")
    assert next(entries) == ("videos/a.mp4", when, 7)  # the second page is not asked for yet (Stubber would fail)
    last = {"IsTruncated": False, "KeyCount": 1,
            "Contents": [{"Key": "mining/videos/b.mp4", "LastModified": when, "Size": 9}]}  # fmt: skip
    stubber.add_response(
        "list_objects_v2", last, {"Bucket": "b", "Prefix": "mining/videos/", "ContinuationToken": "t2"}
    )
    assert [entry.key for entry in entries] == ["videos/b.mp4"]


def test_s3_failures_are_the_stores_and_a_missing_key_is_the_items(stubbed_s3):
    store, stubber = stubbed_s3
    key = {"Bucket": "b", "Key": "mining/videos/v.mp4"}
    stubber.add_client_error("get_object", "SlowDown", "Please reduce your request rate.", 503, expected_params=key)
    stubber.add_client_error("get_object", "NoSuchKey", "The specified key does not exist.", 404, expected_params=key)
    stubber.add_client_error("head_object", "404", "Not Found", 404, expected_params=key)
    stubber.add_client_error("head_object", "500", "Internal Error", 500, expected_params=key)
    stubber.add_client_error("put_object", "ServiceUnavailable", "Service Unavailable", 503)
    with pytest.raises(StoreUnavailable, match=r"read s3://b/mining/videos/v.mp4 failed: SlowDown"):
        store.get_bytes("videos/v.mp4")
    with pytest.raises(BlobNotFound):
        store.get_bytes("videos/v.mp4")
    assert store.exists("videos/v.mp4") is False
    with pytest.raises(StoreUnavailable, match="look up"):
        store.exists("videos/v.mp4")
    with pytest.raises(StoreUnavailable, match="ServiceUnavailable"):
        store.put_bytes("videos/v.mp4", b"x")


def test_an_unreachable_s3_store_fails_without_naming_its_credentials():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s3 = S3Resource(endpoint_url=f"http://robot:s3cret-pw@127.0.0.1:{port}", max_attempts=1, region_name="us-east-1",
                    aws_access_key_id="AKIDTEST", aws_secret_access_key="test-secret")  # fmt: skip
    store = S3BlobStore(bucket="b", s3=s3)
    for call in (lambda: store.get_bytes("a.jpg"), lambda: store.put_bytes("a.jpg", b"x"), lambda: store.exists("a")):
        with pytest.raises(StoreUnavailable) as caught:
            call()
        assert "s3cret-pw" not in str(caught.value) and "test-secret" not in str(caught.value)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_local_disk_failures_are_the_stores(tmp_path):
    (tmp_path / "root").write_text("a file where the store's folder should be")
    store = LocalBlobStore(root=str(tmp_path / "root"))
    with pytest.raises(StoreUnavailable, match="write"):
        store.put_bytes("frames/a.jpg", b"x")
    with pytest.raises(StoreUnavailable, match="read"):
        store.get_bytes("frames/a.jpg")
    missing = LocalBlobStore(root=str(tmp_path / "empty"))
    with pytest.raises(BlobNotFound):
        missing.get_bytes("frames/a.jpg")
    with pytest.raises(BlobNotFound), missing.local_path("frames/a.jpg"):
        pass
