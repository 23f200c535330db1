"""The video path end to end through Dagster: keyword -> registry -> downloads -> frames -> catalog."""

import io
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from harness import meta, query, query_dicts
from PIL import Image

from mining_assets.frames import frames
from mining_assets.keywords import add_keyword_partitions, register_keywords
from mining_assets.video.downloads import raw_videos
from mining_assets.video.frames import video_frames
from mining_assets.video.registry import video_registry
from mining_assets.video.synthetic import read_frame_index
from mining_assets.warehouse import unique_key_check
from resources.warehouse import Warehouse
from resources.youtube import YouTubeResource

VIDEO_ASSETS = [video_registry, raw_videos, video_frames, frames]


def add_keyword(instance, resources, text: str) -> str:
    pairs, rejected = register_keywords(resources["warehouse"], [text])
    assert not rejected
    add_keyword_partitions(instance, [pairs[0][0]])
    return pairs[0][0]


def materialize(instance, resources, key, ops=None, selection=VIDEO_ASSETS):
    result = dg.materialize(
        selection, partition_key=key, resources=resources, instance=instance, run_config=dg.RunConfig(ops=ops or {})
    )
    assert result.success
    return result


def checks_by_asset(result) -> dict[tuple[str, str], bool]:
    """A run's check results by (asset, check): several assets have a check named `unique_key`."""
    return {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}


def test_search_download_sample_and_catalog(instance, resources, media_server):
    key = add_keyword(instance, resources, "glass door")
    result = materialize(
        instance, resources, key, {"video_frames": {"config": {"strategy": "interval", "every_n_frames": 30}}}
    )

    videos = query_dicts(resources, "SELECT source, status, codec, width, fps FROM videos ORDER BY codec")
    assert [(v["source"], v["status"], v["codec"]) for v in videos] == [
        ("web", "complete", "h264"),
        ("web", "complete", "mpeg4"),
    ]
    assert all(v["width"] == 320 and v["fps"] == 30 for v in videos)

    rows = query_dicts(
        resources,
        "SELECT media_id, frame_index, timestamp_s, blob_key, source_url, media_type FROM frames "
        "WHERE partition_key = ? ORDER BY media_id, frame_index",
        key,
    )
    # 90 frames -> 0, 30, 60; 60 frames -> 0, 30
    assert sorted(r["frame_index"] for r in rows) == [0, 0, 30, 30, 60]
    store = resources["blob_store"]
    for row in rows:
        image = Image.open(io.BytesIO(store.get_bytes(row["blob_key"])))
        assert read_frame_index(np.asarray(image.convert("RGB"))) == row["frame_index"]
        assert row["timestamp_s"] == pytest.approx(row["frame_index"] / 30, abs=1e-3)
        assert row["source_url"].startswith(media_server) and row["media_type"] == "video"

    assert checks_by_asset(result) == {
        ("video_registry", "sources_answered"): True,
        ("video_registry", "unique_key"): True,
        ("raw_videos", "downloads_succeeded"): True,
        ("video_frames", "frames_stored"): True,
        ("video_frames", "unique_key"): True,
        ("frames", "unique_frame_ids"): True,
        ("frames", "traceable_to_source"): True,
        ("frames", "unique_key"): True,
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
    rows = query_dicts(
        resources, "SELECT partition_key, status, blob_key, codec FROM videos ORDER BY blob_key, partition_key"
    )
    assert [r["status"] for r in rows] == ["downloaded"] * 4
    assert (rows[0]["blob_key"], rows[0]["codec"]) == (rows[1]["blob_key"], rows[1]["codec"])
    assert rows[0]["partition_key"] != rows[1]["partition_key"]


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
        (row["stage"], row["item"]): row["reason"]
        for row in query_dicts(resources, "SELECT stage, item, reason FROM ingest_errors")
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


SEEN_DURING_DOWNLOADS: list[int] = []  # Dagster copies resources: what the reader saw is kept out here


class _ReaderDuringDownload(YouTubeResource):
    """Reads the warehouse in the middle of each download, as `mining registry status` would, on its own
    attachment of the lake (another process's view: nothing of the asset's is shared)."""

    catalog: str
    data_path: str

    def download(self, url, dest_dir):
        # a second DuckDB instance on the same catalog and data files: a different fingerprint, another attachment
        reader = Warehouse(catalog=self.catalog, data_path=self.data_path, max_attempts=2)
        SEEN_DURING_DOWNLOADS.append(reader.execute("SELECT count(*) FROM videos")[0][0])
        return super().download(url, dest_dir)


def test_warehouse_is_readable_while_videos_download(instance, resources, media_server):
    lake = resources["warehouse"]
    reader = _ReaderDuringDownload(
        search_url_template=media_server + "/search.html?q={query}",
        retries=0,
        catalog=lake.catalog,
        data_path=lake.data_path.rstrip("/"),  # the same folder, spelled so the reader attaches on its own
    )
    resources["youtube"] = reader
    SEEN_DURING_DOWNLOADS.clear()
    key = add_keyword(instance, resources, "glass door")
    materialize(instance, resources, key, selection=[video_registry, raw_videos])
    assert [r[0] for r in query(resources, "SELECT status FROM videos")] == ["downloaded", "downloaded"]
    assert SEEN_DURING_DOWNLOADS == [2, 2]


def test_owner_assets_report_partition_and_table_row_counts(instance, resources):
    runs = {}
    for text in ("glass door", "sliding door"):
        key = add_keyword(instance, resources, text)
        runs[key] = materialize(instance, resources, key, {"video_frames": {"config": {"strategy": "keyframes"}}})
    second = runs["sliding-door"]
    # both keywords find the same two videos; keyframes: 3 (h264, gop 30) + 4 (mp4v, gop 15) frames each
    for asset, table, per_partition in (("video_registry", "videos", 2), ("video_frames", "video_frames", 7),
                                        ("frames", "frames", 7)):  # fmt: skip
        metadata = meta(second, asset)
        assert metadata["dagster/table_name"] == f"lake.main.{table}"
        assert metadata["dagster/partition_row_count"] == per_partition
        assert metadata["dagster/row_count"] == 2 * per_partition
    # the table and its columns are shown before any run, from the asset's definition
    definition = video_registry.metadata_by_key[dg.AssetKey("video_registry")]
    assert definition["dagster/table_name"] == "lake.main.videos"
    assert [c.name for c in definition["dagster/column_schema"].columns][:3] == ["partition_key", "keyword", "media_id"]
    for result in runs.values():
        checks = checks_by_asset(result)
        assert all(checks[(asset, "unique_key")] for asset in ("video_registry", "video_frames", "frames"))


def test_unique_key_fails_when_a_video_row_is_doubled(instance, resources):
    key = add_keyword(instance, resources, "glass door")
    materialize(instance, resources, key, {"video_frames": {"config": {"strategy": "keyframes"}}})
    # a second row for one video, as a writer that skipped the MERGE would leave it
    ((doubled, frame_count),) = query(
        resources,
        "SELECT media_id, count(*) FROM video_frames WHERE partition_key = ? GROUP BY ALL ORDER BY 1 LIMIT 1",
        key,
    )
    resources["warehouse"].execute(
        "INSERT INTO videos SELECT * FROM videos WHERE partition_key = ? AND media_id = ?", [key, doubled]
    )
    result = materialize(instance, resources, key, selection=[video_registry, frames])
    checks = checks_by_asset(result)
    assert checks[("video_registry", "unique_key")] is False
    # the doubled video doubles its frames in the catalog: both frames checks see it
    assert checks[("frames", "unique_key")] is False and checks[("frames", "unique_frame_ids")] is False
    evaluation = next(
        e for e in result.get_asset_check_evaluations() if e.asset_key.to_user_string() == "frames"
        and e.check_name == "unique_key"
    )  # fmt: skip
    assert evaluation.metadata["duplicated_keys"].value == {"frames": frame_count}  # each of its frames twice
    for attempt in resources["warehouse"].retrying():
        with attempt as conn:
            assert unique_key_check(conn, key, ["video_frames"]).passed  # the frames were sampled once
            assert not unique_key_check(conn, key, ["videos", "video_frames"]).passed
