import boto3
import pytest
from dagster_aws.s3 import S3Resource

from resources.blob_store import LocalBlobStore, S3BlobStore, check_key

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

    assert store.delete(["frames/k/m/0000001.jpg", "frames/k/m/missing.jpg"]) == 2
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
    for key in UNSAFE_KEYS:
        with pytest.raises(ValueError):
            store.put_bytes(key, b"x")
    assert not (tmp_path / "x").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
