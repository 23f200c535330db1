"""quality_scores -> poses through Dagster, on real photos of a person with the real MediaPipe bundles: bad frames
recorded and the rest going on, a video tracked in time order, re-runs replacing rows."""

import numpy as np
import pytest
from harness import materialize_partition, meta, query, query_dicts
from PIL import Image
from pose_support import encode, on_canvas, seed_catalog

from mining_assets import warehouse as warehouse_module
from mining_assets.poses.poses import estimate_poses, landmark_problems, poses, video_timestamps_ms
from mining_assets.poses.quality import quality_scores
from mining_assets.warehouse import insert_rows
from resources.models.pose import LEFT_SHOULDER, LEFT_WRIST, NOSE, RIGHT_SHOULDER, RIGHT_WRIST, PoseEstimator

POSES = [quality_scores, poses]
VIDEO_TIMES = (0.0, 0.5, 1.0, 1.5, 2.0)


def run(resources, instance, partition_key, **config):
    return materialize_partition(resources, instance, partition_key, POSES, **config)


@pytest.fixture
def portrait_keyword(pose_resources, person_photo) -> str:
    """Photos of a person in several encodings, bad files, a blank frame, and a 5-frame video of the person
    walking right, catalogued out of time order under frame ids that sort against it."""
    grey = person_photo.convert("L")
    sixteen_bit = Image.fromarray(np.asarray(grey, np.uint16) * 257)
    photos = {
        "hopper": encode(person_photo),
        "hopper-grey": encode(grey, "PNG"),
        "hopper-rgba": encode(person_photo.convert("RGBA"), "PNG"),
        "hopper-16bit": encode(sixteen_bit, "PNG"),
        "blank": encode(Image.new("RGB", (320, 240), (128, 128, 128))),
        "zero": b"",
        "html": b"<!doctype html><html><body>404 not found</body></html>",
        "tiny": encode(Image.new("RGB", (8, 8)), "PNG"),
    }
    video = [(f"walk-{'edcba'[i]}", t, encode(on_canvas(person_photo, 40 * i))) for i, t in enumerate(VIDEO_TIMES)]
    return seed_catalog(pose_resources, "grace hopper", photos, {"clip-1": video[::-1][1:] + video[-1:]})


def test_quality_then_poses_end_to_end(pose_resources, instance, portrait_keyword):
    result, checks = run(pose_resources, instance, portrait_keyword, quality_scores={"threshold": 40})
    assert checks == {"every_frame_scored": True, "landmarks_well_formed": True, "unique_key": True,
                      "produced_output": True}  # fmt: skip

    errors = dict(query(pose_resources, "SELECT item, reason FROM ingest_errors WHERE stage = 'quality_scores'"))
    assert errors.keys() == {"zero", "html", "tiny"}
    assert errors["zero"] == "empty file (0 bytes)"
    assert errors["html"].startswith("not an image")
    assert errors["tiny"].startswith("too small: 8x8 px (minimum 64 px per side)")

    scores = {row["frame_id"]: row for row in query_dicts(pose_resources, """
        SELECT frame_id, score, rating, accepted, pose_points, hand_points, lighting_points, sharpness_points,
               resolution_points, pose_visibility, hands_found, megapixels, models
        FROM quality_scores ORDER BY frame_id""")}  # fmt: skip
    assert len(scores) == 10  # 5 photos that decode + 5 video frames; grey, RGBA and 16-bit converted to RGB
    hopper = scores["hopper"]
    points = ("pose_points", "hand_points", "lighting_points", "sharpness_points", "resolution_points")
    assert hopper["score"] == pytest.approx(sum(hopper[name] for name in points)) and 40 <= hopper["score"] < 50
    assert (hopper["rating"], hopper["accepted"], hopper["hand_points"], hopper["hands_found"]) == ("poor", True, 0, 0)
    visibility = hopper["pose_visibility"]
    assert 0.3 < visibility < 0.6 and hopper["pose_points"] == pytest.approx(50 * visibility)
    assert (hopper["lighting_points"], hopper["sharpness_points"]) == (15.0, 10.0)
    assert hopper["megapixels"] == pytest.approx(0.3072)
    models = hopper["models"]
    assert models == "mediapipe:pose_landmarker_full.task@38d550e3056d+hand_landmarker.task@699166a05fdc"
    # converted to RGB and scored like the colour photo: same lighting, sharpness and resolution points
    image_points = ("lighting_points", "sharpness_points", "resolution_points")
    for variant in ("hopper-grey", "hopper-rgba", "hopper-16bit"):
        assert [scores[variant][name] for name in image_points] == pytest.approx(
            [hopper[name] for name in image_points], abs=0.1
        )
    assert scores["hopper-rgba"]["score"] == pytest.approx(hopper["score"], abs=2) and scores["hopper-rgba"]["accepted"]
    # the full model's person detector misses the grey portrait at the default 0.5 confidence (it finds it at 0.3)
    assert scores["hopper-grey"] | {"frame_id": None} == scores["hopper-16bit"] | {"frame_id": None}
    assert scores["hopper-grey"]["pose_points"] == 0.0
    blank = scores["blank"]
    assert (blank["accepted"], blank["pose_points"], blank["pose_visibility"]) == (False, 0.0, None)
    assert blank["rating"] == "poor" and blank["score"] < 1

    quality = meta(result, "quality_scores")
    assert (quality["frames"], quality["scored"], quality["accepted"], quality["failed"]) == (13, 10, 7, 3)
    labels = [row["rating"] for row in scores.values()]
    assert quality["ratings"] == {name: labels.count(name) for name in ("excellent", "good", "fair", "poor")}
    assert quality["score_quantiles"]["max"] == pytest.approx(max(row["score"] for row in scores.values()), abs=0.01)
    assert quality["score_quantiles"]["max"] < 70  # head and shoulders, no hands: never "good"

    rows = query_dicts(pose_resources, """
        SELECT frame_id, media_id, media_type, sequence_index, timestamp_s, image_width, image_height, pose_found,
               pose_landmarks, pose_world_landmarks, left_hand, right_hand, models
        FROM poses ORDER BY media_id, sequence_index""")  # fmt: skip
    assert len(rows) == 7 and all(row["pose_found"] for row in rows)  # every accepted frame, each with a pose
    video = [row for row in rows if row["media_id"] == "clip-1"]
    assert [row["frame_id"] for row in video] == ["walk-e", "walk-d", "walk-c", "walk-b", "walk-a"]  # time order
    assert [row["sequence_index"] for row in video] == [0, 1, 2, 3, 4]
    assert [row["timestamp_s"] for row in video] == list(VIDEO_TIMES)
    noses = [row["pose_landmarks"][NOSE * 4] for row in video]
    assert np.all(np.diff(noses) > 0)  # the person walks right

    # the hand model takes her white tie for a right hand (handedness score ~0.6) in the first, JPEG-encoded video
    # frame; wherever a hand is written it is 21 x 3 finite values
    hands = [(row["left_hand"], row["right_hand"]) for row in rows]
    written = [np.array(hand) for pair in hands for hand in pair if hand is not None]
    assert all(hand.shape == (21 * 3,) and np.isfinite(hand).all() for hand in written)

    photo = next(row for row in rows if row["frame_id"] == "hopper")
    assert {name: photo[name] for name in ("media_type", "sequence_index", "timestamp_s", "image_width",
                                           "image_height")} == {
        "media_type": "photo", "sequence_index": 0, "timestamp_s": None, "image_width": 512, "image_height": 600,
    }  # fmt: skip
    landmarks = np.array(photo["pose_landmarks"]).reshape(33, 4)
    assert len(photo["pose_world_landmarks"]) == 33 * 3
    assert photo["left_hand"] is None and photo["right_hand"] is None  # no hands in view: NULL
    y = landmarks[:, 1]
    assert y[NOSE] < min(y[LEFT_SHOULDER], y[RIGHT_SHOULDER], y[LEFT_WRIST], y[RIGHT_WRIST])
    assert photo["models"] == models

    pose_meta = meta(result, "poses")
    assert (pose_meta["frames"], pose_meta["with_pose"]) == (7, 7)
    assert pose_meta["with_hands"] == sum(left is not None or right is not None for left, right in hands)
    assert (pose_meta["media_items"], pose_meta["video_sequences"], pose_meta["failed"]) == (3, 1, 0)
    assert "walk-e" in pose_meta["sample"]

    # a re-run replaces the partition's rows: nothing duplicated
    tables = (("quality_scores", "frame_id"), ("poses", "frame_id"), ("ingest_errors", "item"))

    def counts():
        sql = "SELECT count(*), count(DISTINCT {}) FROM {}"
        return [query(pose_resources, sql.format(column, table))[0] for table, column in tables]

    before = counts()
    assert before == [(10, 10), (7, 7), (3, 3)]
    _, checks = run(pose_resources, instance, portrait_keyword, quality_scores={"threshold": 40})
    assert all(checks.values()) and counts() == before

    # the default threshold (70) accepts no head-and-shoulders portrait: poses is emptied, not left stale
    result, checks = run(pose_resources, instance, portrait_keyword)
    assert checks.pop("produced_output") is False and all(checks.values())  # accepting nothing is warned of
    assert meta(result, "quality_scores")["accepted"] == 0 and meta(result, "poses")["frames"] == 0
    assert query(pose_resources, "SELECT count(*) FROM poses")[0][0] == 0


def test_keyword_without_frames_needs_no_model(resources, instance, tmp_path):
    missing = PoseEstimator(pose_model_path=str(tmp_path / "none.task"), hand_model_path=str(tmp_path / "none.task"))
    partition_key = seed_catalog(resources, "empty keyword", {}, {})
    result, checks = run(resources | {"pose_estimator": missing}, instance, partition_key)
    assert checks.pop("produced_output") is False and all(checks.values())  # no input is warned of
    assert meta(result, "quality_scores")["frames"] == 0 and meta(result, "poses")["frames"] == 0


def test_a_missing_blob_is_recorded_and_the_rest_goes_on(pose_resources, instance, person_photo):
    partition_key = seed_catalog(pose_resources, "lost", {"kept": encode(person_photo), "lost": encode(person_photo)},
                                 {})  # fmt: skip
    store = pose_resources["blob_store"]
    store.delete([key for key in store.list_keys("frames/lost") if key.endswith("lost.jpg")])
    _, checks = run(pose_resources, instance, partition_key, quality_scores={"threshold": 40})
    assert all(checks.values())
    reasons = dict(query(pose_resources, "SELECT item, reason FROM ingest_errors WHERE stage = 'quality_scores'"))
    assert list(reasons) == ["lost"] and reasons["lost"].startswith("could not read the frame: BlobNotFound")
    assert query(pose_resources, "SELECT frame_id FROM poses") == [("kept",)]


@pytest.mark.parametrize("writer", ["quality_scores", "poses"])
def test_per_frame_outputs_name_the_frames_content(pose_resources, instance, person_photo, writer):
    """quality_scores and poses rows carry their frame's content hash from the catalog (frames.sha256): photos of
    equal content and video frames (tracked, not copied from quality_scores) alike."""
    photo = encode(person_photo)
    video = [(f"step-{i}", 0.5 * i, encode(on_canvas(person_photo, 40 * i))) for i in range(2)]
    partition_key = seed_catalog(pose_resources, "content", {"portrait": photo, "again": photo}, {"clip": video})
    assets = [quality_scores] if writer == "quality_scores" else POSES
    _, checks = materialize_partition(pose_resources, instance, partition_key, assets,
                                      quality_scores={"threshold": 40})  # fmt: skip
    assert all(checks.values())
    catalog = {row["frame_id"]: row["sha256"] for row in query_dicts(
        pose_resources, "SELECT frame_id, sha256 FROM frames WHERE partition_key = ?", partition_key)}  # fmt: skip
    rows = query_dicts(pose_resources, f"SELECT frame_id, frame_sha256 FROM {writer} WHERE partition_key = ?",
                       partition_key)  # fmt: skip
    assert {row["frame_id"] for row in rows} == set(catalog)
    assert {row["frame_id"]: row["frame_sha256"] for row in rows} == catalog


def checks_of(result) -> dict[tuple[str, str], bool]:
    """(asset, check) -> passed: both assets have a `unique_key` check."""
    return {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}


def test_metadata_counts_the_partition_and_the_whole_table(pose_resources, instance, person_photo):
    photo = encode(person_photo)
    first = seed_catalog(pose_resources, "grace hopper", {"portrait": photo, "again": photo}, {})
    second = seed_catalog(pose_resources, "admiral", {"portrait": photo}, {})  # the same frame id, another key
    result, _ = run(pose_resources, instance, first, quality_scores={"threshold": 40})
    for asset in ("quality_scores", "poses"):
        counts = meta(result, asset)
        assert (counts["dagster/partition_row_count"], counts["dagster/row_count"]) == (2, 2), asset
    result, _ = run(pose_resources, instance, second, quality_scores={"threshold": 40})
    assert all(checks_of(result).values()) and ("poses", "unique_key") in checks_of(result)
    for asset in ("quality_scores", "poses"):
        counts = meta(result, asset)
        assert (counts["dagster/partition_row_count"], counts["dagster/row_count"]) == (1, 3), asset
        assert counts["dagster/table_name"] == f"lake.main.{asset}"


@pytest.mark.parametrize("writer", ["quality_scores", "poses"])
def test_unique_key_fails_when_a_row_is_written_twice(pose_resources, instance, person_photo, monkeypatch, writer):
    real_replace = warehouse_module.replace_partition_rows

    def writes_one_twice(conn, table, key, rows, *args):  # a writer bug, planted before the check runs
        written = real_replace(conn, table, key, rows, *args)
        return written + (insert_rows(conn, table, rows.head(1)) if table == writer else 0)

    monkeypatch.setattr(warehouse_module, "replace_partition_rows", writes_one_twice)
    partition_key = seed_catalog(pose_resources, "twice", {"portrait": encode(person_photo)}, {})
    assets = [quality_scores] if writer == "quality_scores" else POSES
    result, _ = materialize_partition(pose_resources, instance, partition_key, assets,
                                      quality_scores={"threshold": 40})  # fmt: skip
    (check,) = [e for e in result.get_asset_check_evaluations()
                if e.check_name == "unique_key" and e.asset_key.to_user_string() == writer]  # fmt: skip
    assert not check.passed and check.metadata["duplicated_keys"].value == {writer: 1}
    assert query_dicts(pose_resources, f"SELECT count(*) AS n FROM {writer}") == [{"n": 2}]
    assert checks_of(result).get(("quality_scores", "unique_key")) is (writer != "quality_scores")


@pytest.mark.parametrize(
    ("seconds", "stamps"),
    [
        ([0.0, 0.5, 1.0], [0, 500, 1000]),
        ([0.0, 0.0, 0.0004], [0, 1, 2]),  # equal after rounding: nudged 1 ms apart
        ([None, 1.0, None], [0, 1000, 1001]),  # no time: just after the previous frame
        ([float("nan"), 0.25], [0, 250]),
    ],
)
def test_video_timestamps_strictly_increase(seconds, stamps):
    assert video_timestamps_ms(seconds) == stamps


def test_landmark_problems_name_the_frame_and_column():
    good = {"frame_id": "ok", "pose_found": True, "pose_landmarks": [0.5] * 132, "pose_world_landmarks": [0.0] * 99,
            "left_hand": None, "right_hand": [0.1] * 63}  # fmt: skip
    assert landmark_problems([good]) == []
    short = good | {"frame_id": "short", "left_hand": [0.1] * 60}
    nan = good | {"frame_id": "nan", "pose_landmarks": [float("nan")] + [0.5] * 131}
    missing = good | {"frame_id": "missing", "pose_world_landmarks": None}
    assert landmark_problems([short, nan, missing]) == [
        "short: left_hand has 60 values, expected 63",
        "nan: pose_landmarks has non-finite x or y",
        "missing: pose_world_landmarks missing although a pose was found",
    ]


def test_each_video_gets_its_own_clock(pose_estimator, person_photo):
    """Two videos whose timestamps both start at 0 and a photo between them: every sequence tracks on fresh
    landmarkers, so the second clock starting again is fine."""
    frames = [{"frame_id": f"{media}-{i}", "media_id": media, "media_type": "video", "timestamp_s": i * 0.5,
               "image": on_canvas(person_photo, 30 * i)} for media in ("a", "b") for i in range(3)]  # fmt: skip
    photo = {"frame_id": "p", "media_id": "p", "media_type": "photo", "timestamp_s": None, "image": person_photo}
    rows, errors = estimate_poses([*frames[:3], photo, *frames[3:]], pose_estimator, lambda frame: frame["image"])
    assert errors == []
    assert [(row["frame_id"], row["sequence_index"]) for row in rows] == [
        ("a-0", 0), ("a-1", 1), ("a-2", 2), ("p", 0), ("b-0", 0), ("b-1", 1), ("b-2", 2)
    ]  # fmt: skip
    assert all(row["pose_found"] and len(row["pose_landmarks"]) == 132 for row in rows)
