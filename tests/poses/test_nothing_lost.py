"""Nothing lost, on one keyword mined end to end (two videos, four photos of a person, a fake JPEG).

An outage of the blob store is no item's fault: every stage that calls the store fails its step (retried by its
retry policy), records no item as failed and leaves the partition's earlier rows and files as they were; when
the store recovers during the retries, the same run ends green. An item's own fault (a corrupt frame, a lost
frame file) is recorded and the rest of the partition goes on. A video whose original was deleted after its
extraction was verified is never downloaded or sampled again, and every deletion is on record, exactly."""

from pathlib import Path

import dagster as dg
import pytest
from harness import FailingStore, meta, store_files, warehouse_rows
from PIL import ImageOps

from mining_assets.frames import frames
from mining_assets.poses.datasets import pose_datasets
from mining_assets.poses.poses import poses
from mining_assets.poses.quality import quality_scores
from mining_assets.retries import STEP_RETRY
from mining_assets.sources.media import media
from mining_assets.sources.media_registry import media_registry
from mining_assets.video.frames import video_frames
from mining_assets.vision.annotations import coco_annotations
from mining_assets.vision.detections import detections
from mining_assets.vision.embeddings import frame_embeddings
from mining_assets.vision.filtered import filtered_frames
from mining_assets.vision.unique import unique_frames
from mining_assets.vision.visualizations import detection_visualizations
from resources.blob_store import BlobDeleteError
from resources.faults import StoreUnavailable

KEY = "door"
PIPELINE = [media_registry, media, video_frames, frames, filtered_frames, frame_embeddings, unique_frames, detections,
            coco_annotations, detection_visualizations, quality_scores, poses, pose_datasets]  # fmt: skip
# every stage that calls the blob store (frames and media_registry read and write only the warehouse)
STORE_STAGES = [media, video_frames, filtered_frames, frame_embeddings, unique_frames, detections, coco_annotations,
                detection_visualizations, quality_scores, poses, pose_datasets]  # fmt: skip
CONFIG = {
    "media_registry": {"youtube_search": True, "stock_sources": [], "uploads": False},
    "video_frames": {"strategy": "interval", "every_n_frames": 30, "max_frames_per_video": 3},
    "filtered_frames": {"threshold": 0.0, "rescore": True},  # every frame on, and read again on every run
    "unique_frames": {"threshold": 1.0},
    "frame_embeddings": {"rescore": True},
    "detections": {"rescore": True},
    "quality_scores": {"threshold": 0.0, "rescore": True},
    "poses": {"rescore": True},
}


@pytest.fixture
def world(tmp_path, vision_resources, pose_estimator, person_photo):
    """The whole path for one keyword, stored once: two videos from the local site and four photos (a person)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for number in range(4):
        ImageOps.mirror(person_photo).crop((number * 8, 0, 500, 560)).save(photos / f"p{number}.jpg", quality=90)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    outage = tmp_path / "outage"
    store = FailingStore(root=vision_resources["blob_store"].root, outage_file=str(outage))
    resources = {**vision_resources, "blob_store": store, "pose_estimator": pose_estimator}
    config = {**CONFIG, "media_registry": {**CONFIG["media_registry"], "local_dir": str(photos)}}
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("keyword", [KEY])
        result = run(PIPELINE, resources, instance, config)
        assert result.success
        yield {"resources": resources, "instance": instance, "config": config, "outage": outage, "result": result}


def run(assets, resources, instance, config):
    ops = {asset.op.name: {"config": config[asset.op.name]} for asset in assets if asset.op.name in config}
    return dg.materialize(assets, partition_key=KEY, resources=resources, instance=instance,
                          run_config={"ops": ops}, raise_on_error=False)  # fmt: skip


def step_events(result, kind: str) -> list:
    return [event for event in result.all_events if event.event_type_value == kind]


def test_a_store_outage_fails_each_stage_and_leaves_its_outputs(world):
    """Reads fail and writes go through (an S3 GET answering 503): a stage may write before it fails, and still no
    file its rows name may change."""
    calls = "reads"
    resources, instance, config, outage = world["resources"], world["instance"], world["config"], world["outage"]
    root = resources["blob_store"].root
    for stage in STORE_STAGES:
        name = stage.op.name
        rows, files = warehouse_rows(resources["warehouse"]), store_files(Path(root))
        outage.write_text(calls)  # until removed: every retry meets it too
        result = run([stage], resources, instance, config)
        outage.unlink()
        assert not result.success, f"{name} succeeded against a store in an outage"
        (failure,) = step_events(result, "STEP_FAILURE")
        assert "StoreUnavailable" in str(failure.event_specific_data.error), name
        assert len(step_events(result, "STEP_RESTARTED")) == STEP_RETRY.max_retries >= 1, f"{name} was not retried"
        assert warehouse_rows(resources["warehouse"]) == rows, f"{name} changed rows while the store was out"
        after = store_files(Path(root))  # a write before the failed read may add a file no row refers to
        assert {key: after.get(key) for key in files} == files, f"{name} changed files while the store was out"

        outage.write_text(f"{calls}\n1")  # one call fails, then the store is back: the retry heals the step
        healed = run([stage], resources, instance, config)
        assert healed.success, f"{name} did not heal when the store came back"
        assert step_events(healed, "STEP_RESTARTED"), name
        outage.unlink()
        assert {t: len(r) for t, r in warehouse_rows(resources["warehouse"]).items()} == {
            t: len(r) for t, r in rows.items()
        }, f"{name} run again changed how many rows there are"


def test_an_item_fault_is_recorded_and_the_rest_goes_on(world):
    resources, instance, config = world["resources"], world["instance"], world["config"]
    store, warehouse = resources["blob_store"], resources["warehouse"]
    errors = dict(warehouse.execute("SELECT item, reason FROM ingest_errors WHERE stage = 'media'"))
    assert any("broken" in item for item in errors), errors  # the fake JPEG among the photos, from the first run

    # a photo's file corrupted, a video frame's gone: the stages that read frames lose those and go on
    ((corrupt,),) = warehouse.execute("SELECT min(blob_key) FROM frames WHERE media_type = 'photo'")
    ((gone,),) = warehouse.execute("SELECT min(blob_key) FROM frames WHERE media_type = 'video'")
    store.put_bytes(corrupt, b"<html>not an image</html>")
    Path(store.root, gone).unlink()
    # poses reads only the video frame: a photo's landmarks are quality_scores' (same frame, same models)
    expected = {"frame_embeddings": 2, "detections": 2, "poses": 1, "filtered_frames": 2, "quality_scores": 2}
    # the stages after the filters read the frames those passed (all of them, at these thresholds); the filters
    # read every frame of the keyword
    for readers in ([frame_embeddings, detections, poses], [filtered_frames, quality_scores]):
        result = run(readers, resources, instance, config)
        assert result.success
        for stage in readers:
            failed = dict(warehouse.execute(
                "SELECT item, reason FROM ingest_errors WHERE stage = ? AND partition_key = ?", [stage.op.name, KEY]
            ))  # fmt: skip
            assert len(failed) == expected[stage.op.name], (stage.op.name, failed)


def videos_of(warehouse) -> dict[str, str]:
    return dict(warehouse.execute("SELECT media_id, blob_key FROM media WHERE media_type = 'video' ORDER BY ALL"))


def statuses(warehouse) -> dict[str, str]:
    return dict(warehouse.execute("SELECT media_id, status FROM media_status WHERE media_type = 'video'"))


def test_a_deleted_original_is_never_fetched_or_sampled_again(world):
    resources, instance, config = world["resources"], world["instance"], world["config"]
    store, warehouse = resources["blob_store"], resources["warehouse"]
    videos = videos_of(warehouse)
    frames_before = warehouse.execute("SELECT * EXCLUDE (created_at) FROM frames ORDER BY frame_id")
    deleting = {**config, "pose_datasets": {"delete_sources": True}}
    result = run([pose_datasets], resources, instance, deleting)
    assert result.success and meta(result, "pose_datasets")["deleted_sources"] == len(videos) == 2
    assert not any(store.exists(key) for key in videos.values()) and store.list_keys("photos")  # photos stay
    assert set(statuses(warehouse).values()) == {"source_deleted"}

    # the whole source path again: nothing is downloaded or sampled, the frames stay as they were
    result = run(PIPELINE[:4], resources, instance, config)
    assert result.success
    assert meta(result, "media")["fetched_now"] == 0 and meta(result, "media")["source_deleted"] == 2
    assert (meta(result, "video_frames")["videos_sampled_now"], meta(result, "video_frames")["videos_reused"]) == (0, 2)
    assert not any(store.exists(key) for key in videos.values())
    assert warehouse.execute("SELECT * EXCLUDE (created_at) FROM frames ORDER BY frame_id") == frames_before
    assert set(statuses(warehouse).values()) == {"source_deleted"}
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks[("media", "stored_files_exist")] and checks[("video_frames", "frames_stored")]

    # other sampling settings can't be served from a deleted original: said so, nothing decoded, nothing failed
    other = {**config, "video_frames": {**config["video_frames"], "every_n_frames": 15}}
    result = run([video_frames], resources, instance, other)
    assert result.success and meta(result, "video_frames")["videos_sampled_now"] == 0
    reasons = {problem["media_id"]: problem["reason"] for problem in meta(result, "video_frames")["problems"]}
    assert reasons.keys() == videos.keys() and all("source deleted" in reason for reason in reasons.values())


def test_a_store_failing_halfway_through_deleting_loses_no_record(world, monkeypatch):
    resources, instance, config = world["resources"], world["instance"], world["config"]
    store, warehouse = resources["blob_store"], resources["warehouse"]
    videos = videos_of(warehouse)
    real_delete, calls = type(store).delete, []

    def delete(self, keys):  # the first delete goes through, then the store fails on every one
        calls.append(list(keys))
        if len(calls) > 1:
            raise StoreUnavailable("blob store: delete failed: 503 SlowDown")
        return real_delete(self, keys)

    monkeypatch.setattr(type(store), "delete", delete)
    deleting = {**config, "pose_datasets": {"delete_sources": True}}
    result = run([pose_datasets], resources, instance, deleting)
    (failure,) = step_events(result, "STEP_FAILURE")
    assert not result.success and "StoreUnavailable" in str(failure.event_specific_data)
    gone = [media_id for media_id, key in videos.items() if not store.exists(key)]
    assert len(gone) == 1  # the first went, the rest stayed
    assert [m for (m,) in warehouse.execute("SELECT media_id FROM deleted_sources")] == gone  # exactly what is gone
    assert statuses(warehouse) == {m: "source_deleted" if m in gone else "complete" for m in videos}

    monkeypatch.setattr(type(store), "delete", real_delete)  # the store is back: the run finishes the work
    result = run([pose_datasets], resources, instance, deleting)
    assert result.success and meta(result, "pose_datasets")["deleted_sources"] == 1
    assert sorted(m for (m,) in warehouse.execute("SELECT media_id FROM deleted_sources")) == sorted(videos)
    assert not any(store.exists(key) for key in videos.values())


def test_a_delete_the_store_refuses_is_reported_never_counted(world, monkeypatch):
    resources, instance, config = world["resources"], world["instance"], world["config"]
    store, warehouse = resources["blob_store"], resources["warehouse"]
    videos = videos_of(warehouse)
    refused_id, refused_key = next(iter(videos.items()))
    real_delete = type(store).delete

    def delete(self, keys):  # what S3BlobStore raises for a DeleteObjects reply that lists the key in Errors
        if refused_key in keys:
            raise BlobDeleteError(0, [(refused_key, "AccessDenied", "Access Denied")], 1)
        return real_delete(self, keys)

    monkeypatch.setattr(type(store), "delete", delete)
    result = run([pose_datasets], resources, instance, {**config, "pose_datasets": {"delete_sources": True}})
    assert result.success
    metadata = meta(result, "pose_datasets")
    assert metadata["deleted_sources"] == 1
    kept = {kept["media_id"]: kept["reason"] for kept in metadata["kept_sources"]}
    assert "delete refused" in kept[refused_id] and "AccessDenied" in kept[refused_id]
    assert store.exists(refused_key)
    assert [m for (m,) in warehouse.execute("SELECT media_id FROM deleted_sources")] == [
        m for m in videos if m != refused_id
    ]
    (reason,) = [r for i, r in warehouse.execute("SELECT item, reason FROM pose_datasets_errors") if i == refused_id]
    assert "AccessDenied" in reason
    assert statuses(warehouse)[refused_id] != "source_deleted"


def test_a_warehouse_fault_inside_a_fetch_fails_the_step_not_the_item(world, monkeypatch):
    """The YouTube budget lives in the warehouse: when it can't be reached while a video is fetched, that is no
    fault of the video's."""
    import mining_assets.sources.media as media_module
    from resources.warehouse import WarehouseUnavailable

    resources, instance, config = world["resources"], world["instance"], world["config"]
    store, warehouse = resources["blob_store"], resources["warehouse"]
    video_key = next(iter(videos_of(warehouse).values()))
    Path(store.root, video_key).unlink()  # lost: media fetches it again

    def fetch_video(*args, **kwargs):
        raise WarehouseUnavailable("warehouse unavailable (embedded lake): database is locked")

    monkeypatch.setattr(media_module, "fetch_video", fetch_video)
    rows = warehouse_rows(warehouse)
    result = run([media], resources, instance, config)
    assert not result.success and "WarehouseUnavailable" in str(
        step_events(result, "STEP_FAILURE")[0].event_specific_data
    )
    assert warehouse_rows(warehouse) == rows  # no item recorded as failed, no membership touched
