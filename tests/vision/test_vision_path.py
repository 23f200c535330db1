"""The vision stages through Dagster, with tiny random models: frames -> filter -> embeddings -> unique frames ->
detections -> COCO and drawings, bad frames included."""

import json

import pytest
from harness import materialize_partition, meta, query
from PIL import Image
from vision_support import encode, scene, seed_frames

from mining_assets.vision.annotations import coco_annotations
from mining_assets.vision.common import partition_prefix
from mining_assets.vision.detections import detections
from mining_assets.vision.embeddings import frame_embeddings
from mining_assets.vision.filtered import filtered_frames
from mining_assets.vision.unique import unique_frames
from mining_assets.vision.visualizations import detection_visualizations
from resources.models.text_filter import TextImageFilter

VISION = [filtered_frames, frame_embeddings, unique_frames, detections, coco_annotations, detection_visualizations]


def run(resources, instance, partition_key, assets=VISION, **config):
    return materialize_partition(resources, instance, partition_key, assets, **config)


@pytest.fixture
def door_frames(vision_resources) -> str:
    same = encode(scene(0))
    frames = {f"f{i}": encode(scene(i)) for i in range(1, 6)}
    frames |= {"dup-a": same, "dup-b": same, "dup-c": same}
    frames |= {
        "zero": b"",
        "html": b"<html><body>not found</body></html>",
        "tiny": encode(Image.new("RGB", (8, 8)), "PNG"),
        "gray": encode(scene(7).convert("L"), "PNG"),
        "rgba": encode(scene(8).convert("RGBA"), "PNG"),
    }
    return seed_frames(vision_resources, "glass door", frames)


def test_vision_path_end_to_end(vision_resources, instance, door_frames):
    config = {
        "filtered_frames": {"threshold": 0.0, "classes": ["handle"]},
        "unique_frames": {"threshold": 0.9999},
        "detections": {"threshold": 0.0},
    }
    result, checks = run(vision_resources, instance, door_frames, **config)
    assert checks == {
        "every_frame_accounted": True,
        "finite_unit_norm": True,
        "no_frame_kept_twice": True,
        "boxes_inside_image": True,
        "image_ids_exist": True,
    }
    errors = dict(query(vision_resources, "SELECT item, reason FROM ingest_errors WHERE stage = 'filtered_frames'"))
    assert errors.keys() == {"zero", "html", "tiny"}
    assert errors["zero"] == "empty file (0 bytes)"
    assert errors["html"].startswith("not an image")
    assert errors["tiny"].startswith("too small: 8x8 px")

    filtered = meta(result, "filtered_frames")
    assert (filtered["frames"], filtered["passed"], filtered["scored_now"]) == (13, 10, 10)
    prompts = query(vision_resources, "SELECT kind, label, prompt FROM prompt_sets ORDER BY rowid")
    assert prompts == [("class", "glass door", "a photo of glass door."), ("class", "handle", "a photo of handle.")]
    assert query(vision_resources, "SELECT count(*) FROM frame_scores")[0][0] == 20  # every frame x every prompt

    assert meta(result, "frame_embeddings")["embedded"] == 10
    unique = dict(query(vision_resources, "SELECT frame_id, representative_id FROM unique_frames"))
    assert unique["dup-b"] == unique["dup-c"] == unique["dup-a"] == "dup-a"  # equal scores: the lowest id stays
    assert meta(result, "unique_frames")["kept"] == 8

    boxes = query(vision_resources, "SELECT DISTINCT label FROM detections")
    assert boxes and {label for (label,) in boxes} <= {"glass door", "handle"}
    coco_meta = meta(result, "coco_annotations")
    assert coco_meta["count_frames"] == 13 and coco_meta["count_unique"] == 8
    pycocotools = pytest.importorskip("pycocotools.coco", reason="pycocotools is not installed")
    store = vision_resources["blob_store"]
    path = store._path("coco/glass-door/instances.json")
    coco = pycocotools.COCO(str(path))
    assert len(coco.getImgIds()) == 8 and len(coco.getAnnIds()) == coco_meta["annotations"] > 0
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} >= {"glass door", "handle"}
    images = json.loads(path.read_text())["images"]
    assert all(image["source_url"].startswith("http://photos.test/") for image in images)
    drawn = store.list_keys("visualizations/glass-door")
    assert len(drawn) == meta(result, "detection_visualizations")["images"] > 0

    # a re-run replaces rows and files: nothing duplicated, nothing orphaned
    tables = ("frame_scores", "filtered_frames", "frame_embeddings", "unique_frames", "detections")

    def counts():
        return [query(vision_resources, f"SELECT count(*) FROM {table}")[0][0] for table in tables]

    before = counts()
    shards = store.list_keys("embeddings/glass-door")
    result, checks = run(vision_resources, instance, door_frames, **config)
    assert all(checks.values())
    assert counts() == before
    assert store.list_keys("embeddings/glass-door") == shards
    assert meta(result, "filtered_frames")["scored_now"] == 0  # same frames, same prompts: scores reused


def test_new_threshold_needs_no_model(vision_resources, instance, door_frames, tiny_models, tmp_path):
    import shutil

    from resources.models import base

    copy = shutil.copytree(tiny_models["siglip"], tmp_path / "siglip-copy")
    text_filter = TextImageFilter(backend="siglip", model_id=str(copy), offline=True)
    resources = vision_resources | {"text_filter": text_filter}
    run(resources, instance, door_frames, [filtered_frames], filtered_frames={"threshold": 0.0})
    shutil.rmtree(copy)  # the model is gone: only stored scores can answer now
    base._CACHE.clear()
    result, _ = run(resources, instance, door_frames, [filtered_frames], filtered_frames={"threshold": 1.0})
    assert meta(result, "filtered_frames")["scored_now"] == 0
    assert meta(result, "filtered_frames")["scores_reused"] == 10
    assert meta(result, "filtered_frames")["passed"] == 0
    with pytest.raises(Exception, match="no model directory"):  # new prompts do need the model
        run(resources, instance, door_frames, [filtered_frames], filtered_frames={"classes": ["handle"]})


def test_empty_prompt_list_is_recorded_and_the_rest_goes_on(vision_resources, instance, door_frames):
    result, checks = run(vision_resources, instance, door_frames,
                         filtered_frames={"include_keyword": False, "classes": [" "], "captions": []})  # fmt: skip
    assert meta(result, "filtered_frames")["passed"] == 0
    assert meta(result, "coco_annotations")["images"] == 0
    assert all(checks.values())
    reasons = query(vision_resources, "SELECT reason FROM ingest_errors WHERE stage = 'filtered_frames'")
    assert any(reason.startswith("no prompts to score against") for (reason,) in reasons)


def test_keyword_without_frames(vision_resources, instance):
    partition_key = seed_frames(vision_resources, "empty keyword", {})
    result, checks = run(vision_resources, instance, partition_key)
    assert all(checks.values())
    assert meta(result, "coco_annotations")["images"] == 0
    assert meta(result, "unique_frames")["kept"] == 0


def test_detector_that_finds_nothing(vision_resources, instance, door_frames):
    result, checks = run(vision_resources, instance, door_frames,
                         filtered_frames={"threshold": 0.0}, detections={"threshold": 1.0})  # fmt: skip
    assert all(checks.values())
    assert meta(result, "detections")["detections"] == 0
    coco = meta(result, "coco_annotations")
    assert coco["images"] > 0 and coco["annotations"] == 0
    assert meta(result, "detection_visualizations")["images"] == 0


def test_video_frames_through_every_stage_on_s3(vision_resources, instance, s3_endpoint, media_server):
    """From a keyword's video search to COCO, with the blob store on a real S3 endpoint (moto on loopback)."""
    import boto3
    from dagster_aws.s3 import S3Resource

    from mining_assets.frames import frames
    from mining_assets.video.downloads import raw_videos
    from mining_assets.video.frames import video_frames
    from mining_assets.video.registry import video_registry
    from resources.blob_store import S3BlobStore

    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **credentials)
    s3.create_bucket(Bucket="vision-e2e")
    store = S3BlobStore(bucket="vision-e2e", prefix="m", s3=S3Resource(endpoint_url=s3_endpoint, **credentials))
    resources = vision_resources | {"blob_store": store}
    partition_key = seed_frames(resources, "robot arm", {})  # registers the keyword; frames come from videos
    everything = [video_registry, raw_videos, video_frames, frames, *VISION]
    result, checks = run(resources, instance, partition_key, everything,
                         video_frames={"strategy": "keyframes"}, filtered_frames={"threshold": 0.0},
                         unique_frames={"threshold": 0.9999}, detections={"threshold": 0.0})  # fmt: skip
    assert all(checks.values()) and len(checks) == 10
    coco = json.loads(store.get_bytes("coco/robot-arm/instances.json"))
    assert len(coco["images"]) == meta(result, "unique_frames")["kept"] > 0
    assert all(image["source_url"].startswith(media_server) for image in coco["images"])
    assert all(image["timestamp_s"] is not None and image["file_name"].startswith("s3://vision-e2e/m/frames/")
               for image in coco["images"])  # fmt: skip
    keys = {obj["Key"].split("/")[1] for obj in s3.list_objects_v2(Bucket="vision-e2e")["Contents"]}
    assert keys == {"videos", "frames", "embeddings", "coco", "visualizations"}


@pytest.mark.parametrize("keyword", ["../../etc/passwd", '<b>door</b> "quoted" x'])
def test_hostile_keywords_keep_every_output_inside_the_store(vision_resources, instance, tmp_path, keyword):
    frames = {f"f{i}": encode(scene(i)) for i in range(3)}
    partition_key = seed_frames(vision_resources, keyword, frames)
    result, checks = run(vision_resources, instance, partition_key,
                         filtered_frames={"threshold": 0.0}, unique_frames={"threshold": 0.9999},
                         detections={"threshold": 0.0})  # fmt: skip
    assert all(checks.values())
    assert meta(result, "coco_annotations")["images"] == 3
    root = vision_resources["blob_store"]._path("x").parent
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".npy", ".json", ".jpg")]
    assert {p.parts[len(root.parts)] for p in written} == {"photos", "embeddings", "coco", "visualizations"}
    assert all(p.resolve().is_relative_to(root) for p in written)
    coco_key = partition_prefix("coco", partition_key) + "/instances.json"
    coco = json.loads(vision_resources["blob_store"].get_bytes(coco_key))
    assert coco["info"]["description"] == f"detections for {keyword!r}"
