"""The vision stages through Dagster, with tiny random models: frames -> filter -> embeddings -> unique frames ->
detections -> COCO and drawings, bad frames included."""

import hashlib
import json

import dagster as dg
import pytest
from harness import materialize_partition, meta, nothing_written_beside, query, query_dicts
from PIL import Image
from vision_support import encode, scene, seed_frames

from mining_assets.vision.annotations import coco_annotations
from mining_assets.vision.common import partition_prefix
from mining_assets.vision.detections import detections
from mining_assets.vision.embeddings import frame_embeddings
from mining_assets.vision.filtered import filtered_frames
from mining_assets.vision.unique import unique_frames
from mining_assets.vision.visualizations import detection_visualizations
from mining_assets.warehouse import unique_key_check
from resources.models.text_filter import TextImageFilter

VISION = [filtered_frames, frame_embeddings, unique_frames, detections, coco_annotations, detection_visualizations]
OWNED = {  # each vision asset that owns tables, with its tables (its metadata describes the first)
    "filtered_frames": ["filtered_frames", "frame_scores", "prompt_sets"],
    "frame_embeddings": ["frame_embeddings"],
    "unique_frames": ["unique_frames"],
    "detections": ["detections"],
}
EVERYTHING_PASSES = {"filtered_frames": {"threshold": 0.0}, "unique_frames": {"threshold": 0.9999},
                     "detections": {"threshold": 0.0}}  # fmt: skip


def run(resources, instance, partition_key, assets=VISION, **config):
    return materialize_partition(resources, instance, partition_key, assets, **config)


def evaluations(result) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    """A run's check evaluations by (asset, check): several assets have a check named `unique_key`."""
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def checks_by_asset(result) -> dict[tuple[str, str], bool]:
    return {key: evaluation.passed for key, evaluation in evaluations(result).items()}


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
    result, _ = run(vision_resources, instance, door_frames, **config)
    assert checks_by_asset(result) == {
        ("filtered_frames", "every_frame_accounted"): True,
        ("frame_embeddings", "finite_unit_norm"): True,
        ("unique_frames", "no_frame_kept_twice"): True,
        ("detections", "boxes_inside_image"): True,
        ("coco_annotations", "image_ids_exist"): True,
        **{(asset, "unique_key"): True for asset in OWNED},
        **{(asset.key.to_user_string(), "produced_output"): True for asset in VISION},
    }
    errors = dict(query(vision_resources, "SELECT item, reason FROM ingest_errors WHERE stage = 'filtered_frames'"))
    assert errors.keys() == {"zero", "html", "tiny"}
    assert errors["zero"] == "empty file (0 bytes)"
    assert errors["html"].startswith("not an image")
    assert errors["tiny"].startswith("too small: 8x8 px")

    filtered = meta(result, "filtered_frames")
    assert (filtered["frames"], filtered["passed"], filtered["scored_now"]) == (13, 10, 10)
    prompts = query_dicts(vision_resources, "SELECT kind, label, prompt FROM prompt_sets ORDER BY rowid")
    assert prompts == [
        {"kind": "class", "label": "glass door", "prompt": "a photo of glass door."},
        {"kind": "class", "label": "handle", "prompt": "a photo of handle."},
    ]
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
    path = store.path_for("coco/glass-door/instances.json")
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
    shards = store.list_keys("embeddings/")
    result, _ = run(vision_resources, instance, door_frames, **config)
    assert [check for check, passed in checks_by_asset(result).items() if not passed] == []
    assert counts() == before
    assert store.list_keys("embeddings/") == shards
    assert meta(result, "filtered_frames")["scored_now"] == 0  # same frames, same prompts: scores reused


# each stage that writes per-frame outputs, the assets that run it (and its inputs), and the tables it writes
CONTENT_WRITERS = {
    "filtered_frames": (VISION[:1], ["frame_scores", "filtered_frames"]),
    "frame_embeddings": (VISION[:2], ["frame_embeddings"]),
    "unique_frames": (VISION[:3], ["unique_frames"]),
    "detections": (VISION[:4], ["detections"]),
}


@pytest.mark.parametrize("stage", CONTENT_WRITERS)
def test_per_frame_outputs_name_the_frames_content(vision_resources, instance, door_frames, stage):
    """Every row a stage writes for a frame carries that frame's content hash from the catalog (frames.sha256),
    frames of equal content included, so outputs can later be shared by content."""
    assets, tables = CONTENT_WRITERS[stage]
    names = {asset.key.to_user_string() for asset in assets}
    run(vision_resources, instance, door_frames, assets, **{k: v for k, v in EVERYTHING_PASSES.items() if k in names})
    catalog = {row["frame_id"]: row["sha256"] for row in query_dicts(
        vision_resources, "SELECT frame_id, sha256 FROM frames WHERE partition_key = ?", door_frames)}  # fmt: skip
    for table in tables:
        rows = query_dicts(vision_resources, f"SELECT frame_id, frame_sha256 FROM {table} WHERE partition_key = ?",
                           door_frames)  # fmt: skip
        assert {row["frame_id"] for row in rows} >= {"dup-a", "f1"}, table
        assert [row for row in rows if row["frame_sha256"] != catalog[row["frame_id"]]] == [], table


def test_a_frame_whose_content_changed_is_scored_again_under_its_new_hash(vision_resources, instance, door_frames):
    run(vision_resources, instance, door_frames, [filtered_frames], filtered_frames={"threshold": 0.0})
    store, key = vision_resources["blob_store"], partition_prefix("photos", door_frames) + "/f1.jpg"
    changed = encode(scene(99))
    store.put_bytes(key, changed)
    query(vision_resources, "UPDATE frames SET sha256 = ? WHERE partition_key = ? AND frame_id = 'f1'",
          hashlib.sha256(changed).hexdigest(), door_frames)  # fmt: skip
    result, _ = run(vision_resources, instance, door_frames, [filtered_frames], filtered_frames={"threshold": 0.0})
    assert meta(result, "filtered_frames")["scored_now"] == 1
    for table in ("frame_scores", "filtered_frames"):
        hashes = query(vision_resources, f"SELECT DISTINCT frame_sha256 FROM {table} WHERE frame_id = 'f1'")
        assert hashes == [(hashlib.sha256(changed).hexdigest(),)], table


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
    assert checks.pop("produced_output") is False and all(checks.values())  # nothing passed: warned of
    reasons = query(vision_resources, "SELECT reason FROM ingest_errors WHERE stage = 'filtered_frames'")
    assert any(reason.startswith("no prompts to score against") for (reason,) in reasons)


def test_keyword_without_frames(vision_resources, instance):
    partition_key = seed_frames(vision_resources, "empty keyword", {})
    result, checks = run(vision_resources, instance, partition_key)
    assert checks.pop("produced_output") is False and all(checks.values())  # no input: warned of
    assert meta(result, "coco_annotations")["images"] == 0
    assert meta(result, "unique_frames")["kept"] == 0


def test_detector_that_finds_nothing(vision_resources, instance, door_frames):
    result, checks = run(vision_resources, instance, door_frames,
                         filtered_frames={"threshold": 0.0}, detections={"threshold": 1.0})  # fmt: skip
    assert checks.pop("produced_output") is False and all(checks.values())  # no box: warned of
    assert meta(result, "detections")["detections"] == 0
    coco = meta(result, "coco_annotations")
    assert coco["images"] > 0 and coco["annotations"] == 0
    assert meta(result, "detection_visualizations")["images"] == 0


def test_video_frames_through_every_stage_on_s3(vision_resources, instance, s3_endpoint, media_server):
    """From a keyword's video search to COCO, with the blob store on a real S3 endpoint (moto on loopback)."""
    import boto3
    from dagster_aws.s3 import S3Resource

    from mining_assets.frames import frames
    from mining_assets.sources.media import media
    from mining_assets.sources.media_registry import media_registry
    from mining_assets.video.frames import video_frames
    from resources.blob_store import S3BlobStore

    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **credentials)
    s3.create_bucket(Bucket="vision-e2e")
    store = S3BlobStore(bucket="vision-e2e", prefix="m", s3=S3Resource(endpoint_url=s3_endpoint, **credentials))
    resources = vision_resources | {"blob_store": store}
    partition_key = seed_frames(resources, "robot arm", {})  # registers the keyword; frames come from videos
    everything = [media_registry, media, video_frames, frames, *VISION]
    result, checks = run(resources, instance, partition_key, everything,
                         media_registry={"uploads": False, "stock_sources": []},
                         video_frames={"strategy": "keyframes"}, filtered_frames={"threshold": 0.0},
                         unique_frames={"threshold": 0.9999}, detections={"threshold": 0.0})  # fmt: skip
    checks = checks_by_asset(result)
    assert all(checks.values()) and len(checks) == sum(len(list(asset.check_specs)) for asset in everything)
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
    with nothing_written_beside(tmp_path):
        partition_key = seed_frames(vision_resources, keyword, frames)
        result, checks = run(vision_resources, instance, partition_key,
                             filtered_frames={"threshold": 0.0}, unique_frames={"threshold": 0.9999},
                             detections={"threshold": 0.0})  # fmt: skip
    assert all(checks.values())
    assert meta(result, "coco_annotations")["images"] == 3
    root = vision_resources["blob_store"].path_for("x").parent
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".npy", ".json", ".jpg")]
    assert {p.parts[len(root.parts)] for p in written} == {"photos", "embeddings", "coco", "visualizations"}
    assert all(p.resolve().is_relative_to(root) for p in written)
    coco_key = partition_prefix("coco", partition_key) + "/instances.json"
    coco = json.loads(vision_resources["blob_store"].get_bytes(coco_key))
    assert coco["info"]["description"] == f"detections for {keyword!r}"


def test_owner_metadata_counts_the_partition_and_the_table(vision_resources, instance):
    door = seed_frames(vision_resources, "glass door", {f"d{i}": encode(scene(i)) for i in range(3)})
    arm = seed_frames(vision_resources, "robot arm", {f"a{i}": encode(scene(10 + i)) for i in range(2)})
    run(vision_resources, instance, door, **EVERYTHING_PASSES)
    result, _ = run(vision_resources, instance, arm, **EVERYTHING_PASSES)
    checks = checks_by_asset(result)
    for asset, (table, *_) in OWNED.items():
        counts = query_dicts(vision_resources, f"SELECT count(*) AS total, count(*) FILTER (WHERE partition_key = ?) "
                                               f"AS partition FROM {table}", arm)[0]  # fmt: skip
        assert counts["total"] > counts["partition"] > 0, table
        stored = meta(result, asset)
        assert stored["dagster/table_name"] == f"lake.main.{table}"
        assert stored["dagster/partition_row_count"] == counts["partition"]
        assert stored["dagster/row_count"] == counts["total"]
        assert checks[(asset, "unique_key")]
    assert meta(result, "filtered_frames")["dagster/row_count"] == 5


def test_unique_key_fails_on_a_duplicate_the_asset_does_not_rewrite(vision_resources, instance, door_frames):
    """filtered_frames replaces only its own model's scores: a duplicate of another model's score survives it."""
    for attempt in vision_resources["warehouse"].retrying():
        with attempt as conn:
            for _ in range(2):
                conn.execute(
                    "INSERT INTO frame_scores (partition_key, frame_id, frame_sha256, model, prompt, score, scored_at) "
                    "VALUES (?, 'f1', 'x', 'another model', 'a photo of glass door.', 0.5, now()::TIMESTAMP)",
                    [door_frames],
                )
    result, _ = run(vision_resources, instance, door_frames, [filtered_frames], filtered_frames={"threshold": 0.0})
    check = evaluations(result)[("filtered_frames", "unique_key")]
    assert not check.passed
    assert check.metadata["duplicated_keys"].value == {
        "filtered_frames": 0,
        "frame_scores": 1,
        "prompt_sets": 0,
        "filter_features": 0,
    }


def test_unique_key_check_counts_a_planted_duplicate_in_each_owned_table(vision_resources, instance, door_frames):
    run(vision_resources, instance, door_frames, **EVERYTHING_PASSES)
    tables = [table for owned in OWNED.values() for table in owned]
    for attempt in vision_resources["warehouse"].retrying():
        with attempt as conn:
            before = {asset: unique_key_check(conn, door_frames, owned).passed for asset, owned in OWNED.items()}
            for table in tables:
                conn.execute(f"INSERT INTO {table} SELECT * FROM {table} WHERE partition_key = ? LIMIT 1",
                             [door_frames])  # fmt: skip
    assert all(before.values())
    for attempt in vision_resources["warehouse"].retrying():
        with attempt as conn:
            after = {asset: unique_key_check(conn, door_frames, owned) for asset, owned in OWNED.items()}
            elsewhere = unique_key_check(conn, "another-keyword", tables)
    for asset, owned in OWNED.items():
        assert not after[asset].passed, asset
        assert after[asset].metadata["duplicated_keys"].value == dict.fromkeys(owned, 1)
    assert elsewhere.passed  # counted per partition
