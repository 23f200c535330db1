"""The video path end to end through Dagster: keyword -> registry -> downloads -> frames -> catalog."""

import io
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from harness import checks_by_asset, meta, nothing_written_beside, query, query_dicts
from PIL import Image

from mining_assets.frames import frames
from mining_assets.keywords import add_keyword_partitions, register_keywords
from mining_assets.sources.media import media
from mining_assets.sources.media_registry import media_registry
from mining_assets.video.frames import video_frames
from mining_assets.video.synthetic import read_frame_index
from mining_assets.warehouse import unique_key_check
from resources.warehouse import Warehouse
from resources.youtube import YouTubeResource

VIDEO_ASSETS = [media_registry, media, video_frames, frames]
VIDEO_ONLY = {"media_registry": {"config": {"uploads": False, "stock_sources": []}}}


def add_keyword(instance, resources, text: str) -> str:
    pairs, rejected = register_keywords(resources["warehouse"], [text])
    assert not rejected
    add_keyword_partitions(instance, [pairs[0][0]])
    return pairs[0][0]


def materialize(instance, resources, key, ops=None, selection=VIDEO_ASSETS):
    ops = {**(VIDEO_ONLY if media_registry in selection else {}), **(ops or {})}
    result = dg.materialize(
        selection, partition_key=key, resources=resources, instance=instance, run_config=dg.RunConfig(ops=ops)
    )
    assert result.success
    return result


def test_search_download_sample_and_catalog(instance, resources, media_server):
    key = add_keyword(instance, resources, "glass door")
    result = materialize(
        instance, resources, key, {"video_frames": {"config": {"strategy": "interval", "every_n_frames": 30}}}
    )

    videos = query_dicts(resources, "SELECT source, status, codec, width, fps FROM media_status ORDER BY codec")
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
        ("media_registry", "sources_answered"): True,
        ("media_registry", "unique_key"): True,
        ("media", "stored_files_exist"): True,
        ("media", "items_fetched"): True,
        ("media", "unique_key"): True,
        ("video_frames", "frames_stored"): True,
        ("video_frames", "unique_key"): True,
        ("frames", "traceable_to_source"): True,
        ("frames", "unique_key"): True,
        **{(asset, "produced_output"): True for asset in ("media_registry", "media", "video_frames", "frames")},
    }
    frames_meta = result.asset_materializations_for_node("frames")[0].metadata
    assert frames_meta["frames"].value == 5


def test_rerun_adds_nothing_and_new_settings_make_a_new_sample(instance, resources, tmp_path):
    key = add_keyword(instance, resources, "glass door")
    ten = {"video_frames": {"config": {"strategy": "interval", "every_n_frames": 10}}}
    materialize(instance, resources, key, ten)
    first = query(resources, "SELECT count(*) FROM frames")[0][0]
    assert first == 9 + 6
    result = materialize(instance, resources, key, ten)
    assert meta(result, "video_frames")["frames_decoded_now"] == 0  # the sample is there: nothing decoded again
    assert query(resources, "SELECT count(*) FROM frames")[0][0] == first
    assert query(resources, "SELECT count(*) FROM video_frames")[0][0] == first
    assert query(resources, "SELECT count(*) FROM media")[0][0] == 2
    assert query(resources, "SELECT count(*) FROM registry")[0][0] == 2

    # a coarser sampling is a new sample; the keyword's catalog holds only it, the earlier one stays for GC
    materialize(instance, resources, key, {"video_frames": {"config": {"strategy": "keyframes"}}})
    rows = {r[0] for r in query(resources, "SELECT blob_key FROM frames")}
    assert len(rows) == 3 + 4  # h264 gop 30 over 90 frames; mp4v gop 15 over 60 frames
    assert all(resources["blob_store"].exists(k) for k in rows)
    assert query(resources, "SELECT count(DISTINCT sampling) FROM video_samples")[0][0] == 2
    assert query(resources, "SELECT count(DISTINCT sampling) FROM keyword_samples")[0][0] == 1


def test_a_video_found_by_two_keywords_is_stored_and_sampled_once(instance, resources):
    first = add_keyword(instance, resources, "glass door")
    second = add_keyword(instance, resources, "sliding door")
    keyframes = {"video_frames": {"config": {"strategy": "keyframes"}}}
    materialize(instance, resources, first, keyframes)
    result = materialize(instance, resources, second, keyframes)
    assert meta(result, "media")["reused_from_other_keywords"] == 2 and meta(result, "media")["fetched_now"] == 0
    assert meta(result, "video_frames")["videos_reused"] == 2
    assert meta(result, "video_frames")["frames_decoded_now"] == 0
    assert len(resources["blob_store"].list_keys("videos")) == 2
    assert query(resources, "SELECT count(*) FROM media")[0][0] == 2
    members = query_dicts(resources, "SELECT partition_key, media_id FROM keyword_media ORDER BY media_id, 1")
    assert [m["partition_key"] for m in members] == [first, second, first, second]
    frames_by_key = {
        k: {
            (r["blob_key"], r["sha256"])
            for r in query_dicts(resources, "SELECT * FROM frames WHERE partition_key = ?", k)
        }
        for k in (first, second)
    }
    assert frames_by_key[first] == frames_by_key[second] and len(frames_by_key[first]) == 7  # the same files
    statuses = query(resources, "SELECT DISTINCT status FROM media_status")
    assert statuses == [("complete",)]


def test_status_follows_the_owners_rows(instance, resources):
    key = add_keyword(instance, resources, "glass door")
    materialize(instance, resources, key, selection=[media_registry])
    assert {r[0] for r in query(resources, "SELECT status FROM media_status")} == {"pending"}
    materialize(instance, resources, key, selection=[media])
    assert {r[0] for r in query(resources, "SELECT status FROM media_status")} == {"downloaded"}
    materialize(instance, resources, key, {"video_frames": {"config": {"strategy": "keyframes"}}}, [video_frames])
    assert {r[0] for r in query(resources, "SELECT status FROM media_status")} == {"framed"}
    materialize(instance, resources, key, selection=[frames])
    assert {r[0] for r in query(resources, "SELECT status FROM media_status")} == {"complete"}
    # the registry again: known items keep what they are
    materialize(instance, resources, key, selection=[media_registry])
    assert {r[0] for r in query(resources, "SELECT status FROM media_status")} == {"complete"}


def test_bad_inputs_are_recorded_and_the_rest_goes_on(instance, resources, media_server, media_dir, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    for name in ("clip_mp4v.mp4", "zero.mp4", "text.mp4", "audio_only.mp4", "truncated.mp4"):
        (local / name).write_bytes((media_dir / name).read_bytes())
    key = add_keyword(instance, resources, "glass door")
    ops = {
        "media_registry": {
            "config": {
                "youtube_search": True,
                "uploads": False,
                "stock_sources": [],
                "urls": [f"{media_server}/missing.mp4", f"{media_server}/one.html"],
                "local_dir": str(local),
            }
        }
    }
    resources["youtube"] = YouTubeResource(search_url_template=media_server + "/no-such-search?q={query}", retries=0)
    result = materialize(instance, resources, key, ops)
    items = {
        r["title"] or r["url"]: f"{r['status']}: {r['error'] or ''}"
        for r in query_dicts(resources, "SELECT title, url, status, error FROM media_status")
    }
    assert items["A door (1)"].startswith("complete")
    assert items["clip_mp4v.mp4"].startswith("complete")
    assert items["zero.mp4"] == "failed: neither an image nor a video: empty file (0 bytes)"
    assert items["text.mp4"] == "failed: neither an image nor a video: not a video: the file holds text"
    assert items["audio_only.mp4"] == "failed: neither an image nor a video: audio only: the file has no video stream"
    assert items["truncated.mp4"].startswith("failed: neither an image nor a video: unreadable or truncated")
    assert items[f"{media_server}/missing.mp4"].startswith("failed: not found (HTTP 404)")
    errors = {
        (row["stage"], row["item"]): row["reason"]
        for row in query_dicts(resources, "SELECT stage, item, reason FROM ingest_errors")
    }
    assert errors[("media_registry", "youtube search")].startswith("search failed: not found (HTTP 404)")
    assert len([k for k in errors if k[0] == "media"]) == 5  # four local files and the missing URL
    assert query(resources, "SELECT count(DISTINCT media_id) FROM frames")[0][0] == 2
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["sources_answered"] is False and checks["items_fetched"] is False
    assert checks["frames_stored"] is True


@pytest.mark.parametrize(
    "keyword",
    ["../../etc/passwd", "say \"cheese\" 'now'", "<script>alert(1)</script><b>door</b>", "🚪 door 🚪", "x" * 200],
)
def test_hostile_keywords_stay_inside_the_store(instance, resources, tmp_path, keyword):
    with nothing_written_beside(tmp_path):
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
    assert len(uris) == 3 + 4 and all(u.startswith("s3://mining-e2e/data/frames/web-") for u in uris)
    video_uris = [r[0] for r in query(resources, "SELECT uri FROM media")]
    assert all(u.startswith("s3://mining-e2e/data/videos/web-") for u in video_uris)
    objects = boto3.client("s3", endpoint_url=s3_endpoint, **credentials).list_objects_v2(Bucket="mining-e2e")
    assert objects["KeyCount"] == 2 + 7


def test_partition_added_by_hand_in_the_ui_uses_its_key_as_keyword(instance, resources):
    instance.add_dynamic_partitions("keyword", ["Glass Door!"])
    materialize(instance, resources, "Glass Door!", {"video_frames": {"config": {"strategy": "keyframes"}}})
    assert query(resources, "SELECT DISTINCT keyword FROM registry") == [("Glass Door!",)]
    assert query(resources, "SELECT DISTINCT keyword FROM frames") == [("Glass Door!",)]


SEEN_DURING_DOWNLOADS: list[int] = []  # Dagster copies resources: what the reader saw is kept out here


class _ReaderDuringDownload(YouTubeResource):
    """Reads the warehouse in the middle of each download, as `mining registry status` would, on its own
    attachment of the lake (another process's view: nothing of the asset's is shared)."""

    catalog: str
    data_path: str

    def download(self, url, dest_dir):
        # a second DuckDB instance on the same catalog and data files: a different fingerprint, another attachment
        reader = Warehouse(catalog=self.catalog, data_path=self.data_path, max_attempts=2)
        SEEN_DURING_DOWNLOADS.append(reader.execute("SELECT count(*) FROM registry")[0][0])
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
    materialize(instance, resources, key, selection=[media_registry, media])
    assert [r[0] for r in query(resources, "SELECT status FROM media_status")] == ["downloaded", "downloaded"]
    assert SEEN_DURING_DOWNLOADS == [2, 2]


def test_owner_assets_report_partition_and_table_row_counts(instance, resources):
    runs = {}
    for text in ("glass door", "sliding door"):
        key = add_keyword(instance, resources, text)
        runs[key] = materialize(instance, resources, key, {"video_frames": {"config": {"strategy": "keyframes"}}})
    second = runs["sliding-door"]
    # both keywords find the same two videos; keyframes: 3 (h264, gop 30) + 4 (mp4v, gop 15) frames each
    for asset, table, per_partition in (("media_registry", "registry", 2), ("media", "keyword_media", 2),
                                        ("video_frames", "keyword_samples", 2), ("frames", "frames", 7)):  # fmt: skip
        metadata = meta(second, asset)
        assert metadata["dagster/table_name"] == f"lake.main.{table}"
        assert metadata["dagster/partition_row_count"] == per_partition
        assert metadata["dagster/row_count"] == 2 * per_partition
    # the table and its columns are shown before any run, from the asset's definition
    definition = media_registry.metadata_by_key[dg.AssetKey("media_registry")]
    assert definition["dagster/table_name"] == "lake.main.registry"
    assert [c.name for c in definition["dagster/column_schema"].columns][:3] == ["partition_key", "keyword", "item"]
    for result in runs.values():
        checks = checks_by_asset(result)
        assert all(checks[(asset, "unique_key")] for asset in ("media_registry", "media", "video_frames", "frames"))


def test_unique_key_fails_when_a_membership_row_is_doubled(instance, resources):
    key = add_keyword(instance, resources, "glass door")
    materialize(instance, resources, key, {"video_frames": {"config": {"strategy": "keyframes"}}})
    # a second membership row for one video, as a writer that skipped its delete would leave it
    ((doubled, frame_count),) = query(
        resources,
        "SELECT media_id, count(*) FROM frames WHERE partition_key = ? GROUP BY ALL ORDER BY 1 LIMIT 1",
        key,
    )
    resources["warehouse"].execute(
        "INSERT INTO keyword_samples SELECT * FROM keyword_samples WHERE partition_key = ? AND media_id = ?",
        [key, doubled],
    )
    result = materialize(instance, resources, key, selection=[frames])
    checks = checks_by_asset(result)
    # the doubled video doubles its frames in the catalog: its frame ids, the key, repeat
    assert checks[("frames", "unique_key")] is False
    evaluation = next(
        e for e in result.get_asset_check_evaluations() if e.asset_key.to_user_string() == "frames"
        and e.check_name == "unique_key"
    )  # fmt: skip
    assert evaluation.metadata["duplicated_keys"].value == {"frames": frame_count}  # each of its frames twice
    for attempt in resources["warehouse"].retrying():
        with attempt as conn:
            assert unique_key_check(conn, key, ["keyword_media"]).passed
            assert not unique_key_check(conn, key, ["keyword_media", "keyword_samples"]).passed
