"""The video path end to end through Dagster: keyword -> registry -> downloads -> frames -> catalog."""

import io
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest
from harness import query
from PIL import Image

from mining_assets.frames import frames
from mining_assets.keywords import add_keyword_partitions, register_keywords
from mining_assets.video.downloads import raw_videos
from mining_assets.video.frames import video_frames
from mining_assets.video.registry import video_registry
from mining_assets.video.synthetic import read_frame_index
from mining_assets.warehouse import warehouse_connection
from resources.youtube import YouTubeResource

VIDEO_ASSETS = [video_registry, raw_videos, video_frames, frames]


def add_keyword(instance, resources, text: str) -> str:
    with warehouse_connection(resources["warehouse"]) as conn:
        pairs, rejected = register_keywords(conn, [text])
    assert not rejected
    add_keyword_partitions(instance, [pairs[0][0]])
    return pairs[0][0]


def materialize(instance, resources, key, ops=None, selection=VIDEO_ASSETS):
    result = dg.materialize(
        selection, partition_key=key, resources=resources, instance=instance, run_config=dg.RunConfig(ops=ops or {})
    )
    assert result.success
    return result


def test_search_download_sample_and_catalog(instance, resources, media_server):
    key = add_keyword(instance, resources, "glass door")
    result = materialize(
        instance, resources, key, {"video_frames": {"config": {"strategy": "interval", "every_n_frames": 30}}}
    )

    videos = query(resources, "SELECT media_id, source, status, codec, width, fps FROM videos ORDER BY codec")
    assert [(v[1], v[2], v[3]) for v in videos] == [("web", "complete", "h264"), ("web", "complete", "mpeg4")]
    assert all(v[4] == 320 and v[5] == 30 for v in videos)

    rows = query(
        resources,
        "SELECT media_id, frame_index, timestamp_s, blob_key, source_url, media_type FROM frames "
        "WHERE partition_key = ? ORDER BY media_id, frame_index",
        key,
    )
    # 90 frames -> 0, 30, 60; 60 frames -> 0, 30
    assert sorted(r[1] for r in rows) == [0, 0, 30, 30, 60]
    store = resources["blob_store"]
    for _, index, timestamp, blob_key, source_url, media_type in rows:
        image = Image.open(io.BytesIO(store.get_bytes(blob_key)))
        assert read_frame_index(np.asarray(image.convert("RGB"))) == index
        assert timestamp == pytest.approx(index / 30, abs=1e-3)
        assert source_url.startswith(media_server) and media_type == "video"

    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "sources_answered": True,
        "downloads_succeeded": True,
        "frames_stored": True,
        "unique_frame_ids": True,
        "traceable_to_source": True,
    }
    frames_meta = result.asset_materializations_for_node("frames")[0].metadata
    assert frames_meta["frames"].value == 5


def test_rerun_replaces_rows_and_files(instance, resources, tmp_path):
    key = add_keyword(instance, resources, "glass door")
    materialize(instance, resources, key, {"video_frames": {"config": {"strategy": "interval", "every_n_frames": 10}}})
    first = query(resources, "SELECT count(*) FROM frames")[0][0]
    assert first == 9 + 6
    materialize(instance, resources, key, {"video_frames": {"config": {"strategy": "interval", "every_n_frames": 10}}})
    assert query(resources, "SELECT count(*) FROM frames")[0][0] == first
    assert query(resources, "SELECT count(*) FROM video_frames")[0][0] == first
    assert query(resources, "SELECT count(*) FROM videos")[0][0] == 2

    # a coarser sampling leaves no frame of the earlier run behind, in the warehouse or the store
    materialize(instance, resources, key, {"video_frames": {"config": {"strategy": "keyframes"}}})
    keys = set(resources["blob_store"].list_keys(f"frames/{key}"))
    rows = {r[0] for r in query(resources, "SELECT blob_key FROM frames")}
    assert keys == rows and len(rows) == 3 + 4  # h264 gop 30 over 90 frames; mp4v gop 15 over 60 frames


def test_a_video_found_by_two_keywords_is_downloaded_once(instance, resources):
    first = add_keyword(instance, resources, "glass door")
    second = add_keyword(instance, resources, "sliding door")
    materialize(instance, resources, first, selection=[video_registry, raw_videos])
    result = materialize(instance, resources, second, selection=[video_registry, raw_videos])
    metadata = result.asset_materializations_for_node("raw_videos")[0].metadata
    assert metadata["reused_from_other_keywords"].value == 2 and metadata["downloaded_now"].value == 0
    assert len(resources["blob_store"].list_keys("videos")) == 2
    rows = query(
        resources, "SELECT partition_key, status, blob_key, codec FROM videos ORDER BY blob_key, partition_key"
    )
    assert [r[1] for r in rows] == ["downloaded"] * 4 and rows[0][2:] == rows[1][2:]


def test_known_videos_keep_their_status(instance, resources):
    key = add_keyword(instance, resources, "glass door")
    materialize(instance, resources, key)
    materialize(instance, resources, key, selection=[video_registry])
    assert {r[0] for r in query(resources, "SELECT status FROM videos")} == {"complete"}


def test_bad_inputs_are_recorded_and_the_rest_goes_on(instance, resources, media_server, media_dir, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    for name in ("clip_mp4v.mp4", "zero.mp4", "text.mp4", "audio_only.mp4", "truncated.mp4"):
        (local / name).write_bytes((media_dir / name).read_bytes())
    key = add_keyword(instance, resources, "glass door")
    ops = {
        "video_registry": {
            "config": {
                "search": True,
                "urls": [f"{media_server}/missing.mp4", f"{media_server}/one.html"],
                "local_dir": str(local),
            }
        }
    }
    resources["youtube"] = YouTubeResource(search_url_template=media_server + "/no-such-search?q={query}", retries=0)
    result = materialize(instance, resources, key, ops)
    videos = dict(query(resources, "SELECT coalesce(title, url), status || ': ' || coalesce(error, '') FROM videos"))
    assert videos["A door (1)"].startswith("complete")
    assert videos["clip_mp4v.mp4"].startswith("complete")
    assert videos["zero.mp4"] == "failed: empty file (0 bytes)"
    assert videos["text.mp4"] == "failed: not a video: the file holds text"
    assert videos["audio_only.mp4"] == "failed: audio only: the file has no video stream"
    assert videos["truncated.mp4"].startswith("failed: unreadable or truncated video container")
    assert videos[f"{media_server}/missing.mp4"].startswith("failed: not found (HTTP 404)")
    errors = {
        (stage, item): reason
        for stage, item, reason in query(resources, "SELECT * EXCLUDE (partition_key, recorded_at) FROM ingest_errors")
    }
    assert errors[("video_registry", "search")].startswith("search failed: not found (HTTP 404)")
    assert errors[("video_registry", f"{media_server}/missing.mp4")].startswith("not found (HTTP 404)")
    assert len([k for k in errors if k[0] == "raw_videos"]) == 5
    assert query(resources, "SELECT count(DISTINCT media_id) FROM frames")[0][0] == 2
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["sources_answered"] is False and checks["downloads_succeeded"] is False
    assert checks["frames_stored"] is True


@pytest.mark.parametrize(
    "keyword",
    ["../../etc/passwd", "say \"cheese\" 'now'", "<script>alert(1)</script><b>door</b>", "🚪 door 🚪", "x" * 200],
)
def test_hostile_keywords_stay_inside_the_store(instance, resources, tmp_path, keyword):
    key = add_keyword(instance, resources, keyword)
    materialize(instance, resources, key, {"video_frames": {"config": {"strategy": "keyframes"}}})
    assert query(resources, "SELECT DISTINCT keyword FROM frames") == [(keyword,)]
    root = Path(resources["blob_store"].root).resolve()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".jpg", ".mp4")]
    stored = [p for p in written if root in p.resolve().parents]
    assert stored and all(p.resolve().is_relative_to(root) for p in stored)
    assert not [p for p in written if "local" not in p.parts and p not in stored]


def test_video_path_on_s3(instance, resources, s3_endpoint):
    import boto3
    from dagster_aws.s3 import S3Resource

    from resources.blob_store import S3BlobStore

    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
    boto3.client("s3", endpoint_url=s3_endpoint, **credentials).create_bucket(Bucket="mining-e2e")
    resources["blob_store"] = S3BlobStore(
        bucket="mining-e2e", prefix="data", s3=S3Resource(endpoint_url=s3_endpoint, **credentials)
    )
    key = add_keyword(instance, resources, "glass door")
    materialize(instance, resources, key, {"video_frames": {"config": {"strategy": "keyframes"}}})
    uris = [r[0] for r in query(resources, "SELECT uri FROM frames ORDER BY uri")]
    assert len(uris) == 3 + 4 and all(u.startswith("s3://mining-e2e/data/frames/glass-door/") for u in uris)
    video_uris = [r[0] for r in query(resources, "SELECT uri FROM videos")]
    assert all(u.startswith("s3://mining-e2e/data/videos/web-") for u in video_uris)
    objects = boto3.client("s3", endpoint_url=s3_endpoint, **credentials).list_objects_v2(Bucket="mining-e2e")
    assert objects["KeyCount"] == 2 + 7


def test_partition_added_by_hand_in_the_ui_uses_its_key_as_keyword(instance, resources):
    instance.add_dynamic_partitions("keyword", ["Glass Door!"])
    materialize(instance, resources, "Glass Door!", {"video_frames": {"config": {"strategy": "keyframes"}}})
    assert query(resources, "SELECT DISTINCT keyword FROM videos") == [("Glass Door!",)]
    keys = resources["blob_store"].list_keys("frames")
    assert keys and all(k.startswith("frames/glass-door_") for k in keys)


class _ReaderDuringDownload(YouTubeResource):
    """Opens the warehouse read-only in the middle of each download, as `mining registry status` would."""

    database: str

    def download(self, url, dest_dir):
        with duckdb.connect(self.database, read_only=True) as conn:
            conn.execute("SELECT count(*) FROM videos").fetchone()
        return super().download(url, dest_dir)


def test_warehouse_is_readable_while_videos_download(instance, resources, media_server):
    resources["youtube"] = _ReaderDuringDownload(
        search_url_template=media_server + "/search.html?q={query}", retries=0, database=resources["warehouse"].database
    )
    key = add_keyword(instance, resources, "glass door")
    materialize(instance, resources, key, selection=[video_registry, raw_videos])
    assert [r[0] for r in query(resources, "SELECT status FROM videos")] == ["downloaded", "downloaded"]
