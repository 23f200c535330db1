"""An outage of the blob store is no item's fault: every stage that calls the store fails its step (retried by its
retry policy), records no item as failed and leaves the partition's earlier rows and files as they were; when
the store recovers during the retries, the same run ends green. An item's own fault (a corrupt frame, a video
that is not one) is recorded and the rest of the partition goes on."""

from pathlib import Path

import dagster as dg
import pytest
from harness import FailingStore, store_files, warehouse_rows
from PIL import ImageOps

from mining_assets.frames import frames
from mining_assets.poses.datasets import pose_datasets
from mining_assets.poses.poses import poses
from mining_assets.poses.quality import quality_scores
from mining_assets.sources.media import media
from mining_assets.sources.media_registry import media_registry
from mining_assets.video.frames import video_frames
from mining_assets.vision.annotations import coco_annotations
from mining_assets.vision.detections import detections
from mining_assets.vision.embeddings import frame_embeddings
from mining_assets.vision.filtered import filtered_frames
from mining_assets.vision.unique import unique_frames
from mining_assets.vision.visualizations import detection_visualizations

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
    "quality_scores": {"threshold": 0.0},
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


@pytest.mark.parametrize("calls", ["all", "reads"])
def test_a_store_outage_fails_each_stage_and_leaves_its_outputs(world, calls):
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
        assert len(step_events(result, "STEP_RESTARTED")) == 3, f"{name} was not retried by its retry policy"
        assert warehouse_rows(resources["warehouse"]) == rows, f"{name} changed rows while the store was out"
        after = store_files(Path(root))  # a write before the failed read may add a file no row refers to
        assert {key: after.get(key) for key in files} == files, f"{name} changed files while the store was out"

        outage.write_text(f"{calls}\n2")  # two calls fail, then the store is back: a retry heals the step
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
