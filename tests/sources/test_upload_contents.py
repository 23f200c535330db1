"""An upload already read is not read again: an upload-bucket object by its key and ETag, a local file by its path,
size and modification time, whatever keyword lists it; new content under the same key is read again."""

import hashlib
import os

import pytest
from harness import meta, query_dicts
from test_uploads import SOURCE_ASSETS, make_bucket, put, run
from vision_support import encode, scene

from mining_assets.sources import media as media_module


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The files media hashes: every upload it reads."""
    real = media_module.file_sha256
    seen: list[str] = []

    def counting(path):
        seen.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(media_module, "file_sha256", counting)
    return seen


def media_of(resources, partition_key: str) -> list[str]:
    rows = query_dicts(
        resources, "SELECT media_id FROM keyword_media WHERE partition_key = ? ORDER BY 1", partition_key
    )
    return [row["media_id"] for row in rows]


def test_an_s3_upload_is_read_once_and_again_when_its_content_changes(instance, resources, s3_endpoint, reads):
    bucket = make_bucket(s3_endpoint)
    resources = {**resources, "uploads": bucket}
    first, second = encode(scene(1)), encode(scene(2))
    put(bucket, "uploads/glass door/door.jpg", first)
    run(instance, resources, registry={"keyword": "glass door"})
    assert len(reads) == 1
    again = run(instance, resources, registry={"keyword": "glass door"})
    assert len(reads) == 1 and meta(again, "media")["fetched_now"] == 0  # same key and ETag: not read

    put(bucket, "uploads/glass door/door.jpg", second)  # new content under the same key: a new ETag
    replaced = run(instance, resources, registry={"keyword": "glass door"})
    assert len(reads) == 2 and meta(replaced, "media")["fetched_now"] == 1
    new_id = f"s3-{hashlib.sha256(second).hexdigest()[:16]}"
    assert media_of(resources, "glass-door") == [new_id]
    catalog = query_dicts(resources, "SELECT frame_id, sha256 FROM frames WHERE partition_key = 'glass-door'")
    assert catalog == [{"frame_id": new_id, "sha256": hashlib.sha256(second).hexdigest()}]
    contents = query_dicts(resources, "SELECT location, media_id FROM upload_contents ORDER BY recorded_at")
    assert [row["media_id"] for row in contents] == [f"s3-{hashlib.sha256(first).hexdigest()[:16]}", new_id]

    put(bucket, "uploads/glass door/door.jpg", first)  # the first content back: known, not read
    back = run(instance, resources, registry={"keyword": "glass door"})
    assert len(reads) == 2 and meta(back, "media")["fetched_now"] == 0
    assert media_of(resources, "glass-door") == [f"s3-{hashlib.sha256(first).hexdigest()[:16]}"]


def test_a_local_folder_another_keyword_reads_is_not_read_again(instance, resources, tmp_path, reads):
    folder = tmp_path / "shared"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.jpg").write_bytes(encode(scene(i)))
    run(instance, resources, registry={"local_dir": str(folder), "uploads": False})
    assert len(reads) == 3
    other = run(instance, resources, "door", registry={"local_dir": str(folder), "uploads": False})
    assert len(reads) == 3  # path, size and modification time known: nothing read
    assert meta(other, "media")["fetched_now"] == 0
    assert meta(other, "media")["reused_from_other_keywords"] == 3
    assert media_of(resources, "door") == media_of(resources, "glass-door")

    (folder / "p0.jpg").write_bytes(encode(scene(9)))  # rewritten in place with other content
    changed = run(instance, resources, "door", registry={"local_dir": str(folder), "uploads": False})
    assert len(reads) == 4 and meta(changed, "media")["fetched_now"] == 1
    assert len(set(media_of(resources, "door")) - set(media_of(resources, "glass-door"))) == 1


def test_two_keywords_reading_one_upload_record_it_once(instance, resources, tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "p.jpg").write_bytes(encode(scene(4)))
    for key in ("glass-door", "door", "glass-door"):
        run(instance, resources, key, SOURCE_ASSETS, registry={"local_dir": str(folder), "uploads": False})
    rows = query_dicts(resources, "SELECT location, etag, count(*) AS n FROM upload_contents GROUP BY ALL")
    assert [row["n"] for row in rows] == [1]


def test_the_same_content_at_another_location_is_read_but_not_stored_again(instance, resources, tmp_path, monkeypatch):
    from resources.blob_store import LocalBlobStore

    photo = encode(scene(5))
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.jpg").write_bytes(photo)
    run(instance, resources, registry={"local_dir": str(tmp_path / "a"), "uploads": False})
    stored: list[str] = []
    real_put = LocalBlobStore.put_file
    monkeypatch.setattr(
        LocalBlobStore, "put_file", lambda self, key, path: stored.append(key) or real_put(self, key, path)
    )
    other = run(instance, resources, "door", registry={"local_dir": str(tmp_path / "b"), "uploads": False})
    assert stored == [] and meta(other, "media")["fetched_now"] == 0
    assert meta(other, "media")["reused_from_other_keywords"] == 1
    assert media_of(resources, "door") == media_of(resources, "glass-door")
