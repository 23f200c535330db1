"""quality_scores and poses do only what is new: results are keyed by content and settings (``work_key``), reused
from any partition's rows, and computed again exactly where content, the settings or the accepted sequence of a
video changed. MediaPipe calls are counted at the estimator's public methods (IMAGE and VIDEO mode)."""

from collections import Counter

import pytest
from harness import materialize_partition, meta, query_dicts
from PIL import Image
from pose_support import encode, on_canvas, seed_catalog

from mining_assets.poses.poses import poses, sequence_work_key
from mining_assets.poses.quality import image_work_key, landmarker_settings, quality_scores
from resources.models.pose import PoseEstimator, VideoSequence

POSES = [quality_scores, poses]
THRESHOLD = {"quality_scores": {"threshold": 40}}  # a head-and-shoulders portrait scores ~47
QUALITY_COUNTS = ("scored", "computed_now", "reused", "failed")
POSE_COUNTS = ("frames", "computed_now", "reused", "video_sequences_computed_now", "video_sequences_reused")


@pytest.fixture
def mediapipe_calls(monkeypatch) -> Counter:
    """How many images went through MediaPipe, by mode (``image``, ``video``), counted from the fixture on."""
    calls: Counter = Counter()
    real_image, real_video = PoseEstimator.detect, VideoSequence.detect

    def detect_image(self, image):
        calls["image"] += 1
        return real_image(self, image)

    def detect_video(self, image, timestamp_ms):
        calls["video"] += 1
        return real_video(self, image, timestamp_ms)

    monkeypatch.setattr(PoseEstimator, "detect", detect_image)
    monkeypatch.setattr(VideoSequence, "detect", detect_video)
    return calls


def estimator(bundles, variant: str = "full", **options) -> PoseEstimator:
    """A PoseEstimator on the shared bundles (``variant`` of the pose model), offline."""
    return PoseEstimator(pose_model_path=str(bundles / f"pose_landmarker_{variant}.task"),
                         hand_model_path=str(bundles / "hand_landmarker.task"), offline=True, **options)  # fmt: skip


@pytest.fixture
def scene(person_photo) -> dict:
    """A portrait photo, a blank photo, and two videos of the person walking right; the second video ends on a
    blank frame, accepted only at a threshold of 0."""
    blank = encode(Image.new("RGB", (640, 480), (128, 128, 128)))
    walk = {dx: encode(on_canvas(person_photo, dx)) for dx in range(0, 240, 40)}
    return {
        "photos": {"portrait": encode(person_photo), "blank": blank},
        "videos": {
            "clip-a": [(f"a-{i}", 0.5 * i, walk[40 * i]) for i in range(3)],
            "clip-b": [(f"b-{i}", 0.5 * i, walk[40 * (i + 3)]) for i in range(3)] + [("b-3", 1.5, blank)],
        },
    }


def catalog(resources, keyword: str, scene: dict) -> str:
    return seed_catalog(resources, keyword, scene["photos"], scene["videos"])


def run(resources, instance, partition_key, **config):
    result, checks = materialize_partition(resources, instance, partition_key, POSES, **(THRESHOLD | config))
    assert all(checks.values()), checks
    return meta(result, "quality_scores"), meta(result, "poses")


def counts(metadata: dict, names: tuple[str, ...]) -> dict:
    return {name: metadata[name] for name in names}


def rows_of(resources, table: str, partition_key: str) -> list[dict]:
    return query_dicts(resources, f"SELECT * EXCLUDE (partition_key) FROM {table} WHERE partition_key = ? "
                                  "ORDER BY frame_id", partition_key)  # fmt: skip


def snapshot(resources, partition_key: str) -> dict[str, list[dict]]:
    return {table: rows_of(resources, table, partition_key) for table in ("quality_scores", "poses")}


def by_frame(rows: list[dict]) -> dict[str, dict]:
    return {row["frame_id"]: row for row in rows}


def test_a_rerun_of_an_unchanged_partition_runs_mediapipe_on_no_frame(pose_resources, instance, scene,
                                                                      mediapipe_calls):  # fmt: skip
    key = catalog(pose_resources, "grace hopper", scene)
    quality, pose = run(pose_resources, instance, key)
    assert counts(quality, QUALITY_COUNTS) == {"scored": 9, "computed_now": 9, "reused": 0, "failed": 0}
    accepted = {row["frame_id"] for row in rows_of(pose_resources, "quality_scores", key) if row["accepted"]}
    assert accepted == {"portrait", "a-0", "a-1", "a-2", "b-0", "b-1", "b-2"}  # not the blank photo or frame
    assert counts(pose, POSE_COUNTS) == {"frames": 7, "computed_now": 6, "reused": 1, "video_sequences_computed_now": 2,
                                         "video_sequences_reused": 0}  # fmt: skip
    assert pose["reused_from_quality"] == 1  # the portrait's landmarks are quality_scores'
    assert mediapipe_calls == {"image": 9, "video": 6}
    before = snapshot(pose_resources, key)
    assert all(row["work_key"] == quality["work_key"] for row in before["quality_scores"])

    mediapipe_calls.clear()
    quality, pose = run(pose_resources, instance, key)
    assert mediapipe_calls == {}
    assert counts(quality, QUALITY_COUNTS) == {"scored": 9, "computed_now": 0, "reused": 9, "failed": 0}
    assert counts(pose, POSE_COUNTS) == {"frames": 7, "computed_now": 0, "reused": 7, "video_sequences_computed_now": 0,
                                         "video_sequences_reused": 2}  # fmt: skip
    assert snapshot(pose_resources, key) == before

    # rescore ignores what is stored: every frame runs again
    quality, pose = run(pose_resources, instance, key, quality_scores={"threshold": 40, "rescore": True},
                        poses={"rescore": True})  # fmt: skip
    assert (quality["computed_now"], pose["computed_now"], pose["reused"]) == (9, 6, 1)
    assert mediapipe_calls == {"image": 9, "video": 6}


def test_a_second_keyword_with_the_same_media_reuses_everything(pose_resources, instance, scene, mediapipe_calls):
    first = catalog(pose_resources, "grace hopper", scene)
    run(pose_resources, instance, first)
    second = catalog(pose_resources, "admiral hopper", scene)
    mediapipe_calls.clear()
    quality, pose = run(pose_resources, instance, second)
    assert mediapipe_calls == {}
    assert (quality["computed_now"], quality["reused"]) == (0, 9)
    assert (pose["computed_now"], pose["reused"], pose["video_sequences_reused"]) == (0, 7, 2)
    # the same frame ids and content in both keywords: the rows are the first keyword's, apart from partition_key
    assert snapshot(pose_resources, second) == snapshot(pose_resources, first)


@pytest.mark.parametrize("setting", ["min_side", "pose_variant"])
def test_a_setting_in_the_key_recomputes(pose_resources, instance, scene, mediapipe_calls, bundles, setting):
    key = catalog(pose_resources, "grace hopper", scene)
    run(pose_resources, instance, key)
    before = snapshot(pose_resources, key)
    mediapipe_calls.clear()
    resources, config = pose_resources, {}
    if setting == "min_side":
        config = {"quality_scores": {"threshold": 40, "min_side": 48}, "poses": {"min_side": 48}}
    else:
        resources = pose_resources | {"pose_estimator": estimator(bundles, "lite")}
    quality, pose = run(resources, instance, key, **config)
    assert (quality["computed_now"], quality["reused"]) == (9, 0)
    # the portrait's landmarks come from quality_scores' new row; both videos are tracked again
    assert (pose["computed_now"], pose["reused_from_quality"], pose["video_sequences_computed_now"]) == (6, 1, 2)
    assert mediapipe_calls == {"image": 9, "video": 6}
    after = snapshot(resources, key)
    for table in ("quality_scores", "poses"):
        assert not {row["work_key"] for row in after[table]} & {row["work_key"] for row in before[table]}, table
    if setting == "pose_variant":
        assert {row["models"] for row in after["poses"]} == {quality["models"]} and "lite" in quality["models"]


def test_changing_only_the_threshold_recomputes_nothing_but_acceptance(pose_resources, instance, scene,
                                                                        mediapipe_calls):  # fmt: skip
    key = catalog(pose_resources, "grace hopper", scene)
    run(pose_resources, instance, key)
    before = snapshot(pose_resources, key)
    mediapipe_calls.clear()
    quality, pose = run(pose_resources, instance, key, quality_scores={"threshold": 0})
    assert (quality["computed_now"], quality["reused"], quality["accepted"]) == (0, 9, 9)
    assert mediapipe_calls["image"] == 0
    after = snapshot(pose_resources, key)
    unchanged = [row | {"accepted": None, "threshold": None} for row in after["quality_scores"]]
    assert unchanged == [row | {"accepted": None, "threshold": None} for row in before["quality_scores"]]
    assert {row["threshold"] for row in after["quality_scores"]} == {0.0}
    # the blank photo is newly accepted (copied from quality_scores); clip-b's blank last frame changes its accepted
    # sequence, so clip-b alone is tracked again, from its first frame
    assert (pose["frames"], pose["computed_now"], pose["reused"]) == (9, 4, 5)
    assert (pose["video_sequences_computed_now"], pose["video_sequences_reused"]) == (1, 1)
    assert mediapipe_calls == {"video": 4}
    old, new = by_frame(before["poses"]), by_frame(after["poses"])
    assert {frame: new[frame] for frame in ("a-0", "a-1", "a-2", "portrait")} == {
        frame: old[frame] for frame in ("a-0", "a-1", "a-2", "portrait")
    }
    assert new["b-0"]["work_key"] != old["b-0"]["work_key"] and new["b-3"]["sequence_index"] == 3


def test_a_new_frame_in_one_video_reruns_that_video_only(pose_resources, instance, scene, person_photo,
                                                         mediapipe_calls):  # fmt: skip
    key = catalog(pose_resources, "grace hopper", scene)
    run(pose_resources, instance, key)
    before = by_frame(rows_of(pose_resources, "poses", key))
    videos = scene["videos"] | {
        "clip-a": [*scene["videos"]["clip-a"], ("a-3", 1.5, encode(on_canvas(person_photo, 100)))]
    }
    catalog(pose_resources, "grace hopper", scene | {"videos": videos})
    mediapipe_calls.clear()
    quality, pose = run(pose_resources, instance, key)
    assert (quality["computed_now"], quality["reused"]) == (1, 9)  # the new frame only
    assert (pose["computed_now"], pose["video_sequences_computed_now"], pose["video_sequences_reused"]) == (4, 1, 1)
    assert mediapipe_calls == {"image": 1, "video": 4}
    after = by_frame(rows_of(pose_resources, "poses", key))
    assert [after[f"a-{i}"]["sequence_index"] for i in range(4)] == [0, 1, 2, 3]
    assert {frame: row for frame, row in after.items() if frame.startswith("b-")} == {
        frame: row for frame, row in before.items() if frame.startswith("b-")
    }


def test_a_frame_unreadable_last_time_is_computed_once_fixed(pose_resources, instance, scene, mediapipe_calls):
    """Errors are not reused: quality_scores tries the frame again, and poses tracks again a video whose accepted
    sequence gained it."""
    key = catalog(pose_resources, "grace hopper", scene)
    store = pose_resources["blob_store"]
    keys = {row["frame_id"]: row["blob_key"] for row in query_dicts(pose_resources, "SELECT * FROM frames")}
    store.delete([keys["portrait"], keys["a-1"]])
    quality, pose = run(pose_resources, instance, key)
    assert (quality["computed_now"], quality["failed"]) == (7, 2)
    assert (pose["frames"], pose["computed_now"]) == (5, 5)  # clip-a tracked without a-1

    store.put_bytes(keys["portrait"], scene["photos"]["portrait"])
    store.put_bytes(keys["a-1"], scene["videos"]["clip-a"][1][2])
    mediapipe_calls.clear()
    quality, pose = run(pose_resources, instance, key)
    assert (quality["computed_now"], quality["reused"], quality["failed"]) == (2, 7, 0)
    assert (pose["frames"], pose["computed_now"], pose["reused"], pose["failed"]) == (7, 3, 4, 0)
    assert (pose["video_sequences_computed_now"], pose["video_sequences_reused"]) == (1, 1)
    assert mediapipe_calls == {"image": 2, "video": 3}
    assert query_dicts(pose_resources, "SELECT count(*) AS n FROM ingest_errors") == [{"n": 0}]


def test_a_video_that_lost_a_frame_in_poses_is_tracked_again_once_it_is_back(pose_resources, instance, scene,
                                                                             mediapipe_calls):  # fmt: skip
    """The sequence key is unchanged (the frame was accepted all along), but its stored run lacks the frame."""
    key = catalog(pose_resources, "grace hopper", scene)
    materialize_partition(pose_resources, instance, key, [quality_scores], **THRESHOLD)
    store = pose_resources["blob_store"]
    (blob,) = [row["blob_key"] for row in query_dicts(pose_resources, "SELECT * FROM frames WHERE frame_id = 'b-1'")]
    store.delete([blob])
    result, _ = materialize_partition(pose_resources, instance, key, [poses])
    assert (meta(result, "poses")["frames"], meta(result, "poses")["failed"]) == (6, 1)

    store.put_bytes(blob, scene["videos"]["clip-b"][1][2])
    mediapipe_calls.clear()
    result, checks = materialize_partition(pose_resources, instance, key, [poses])
    pose = meta(result, "poses")
    assert all(checks.values())
    assert (pose["frames"], pose["computed_now"], pose["failed"], pose["video_sequences_reused"]) == (7, 3, 0, 1)
    assert mediapipe_calls == {"video": 3}
    rows = by_frame(rows_of(pose_resources, "poses", key))
    assert [rows[f"b-{i}"]["sequence_index"] for i in range(3)] == [0, 1, 2]


def test_photos_poses_computed_itself_are_reused_too(pose_resources, instance, scene, mediapipe_calls):
    """quality_scores at another min_side than poses: its photo landmarks are not what poses would compute (another
    key), so poses runs the portrait in IMAGE mode once, and takes its own row from then on."""
    key = catalog(pose_resources, "grace hopper", scene)
    config = {"quality_scores": {"threshold": 40, "min_side": 48}}
    _, pose = run(pose_resources, instance, key, **config)
    assert (pose["computed_now"], pose["reused_from_quality"]) == (7, 0)
    mediapipe_calls.clear()
    _, pose = run(pose_resources, instance, key, **config)
    assert (pose["frames"], pose["computed_now"], pose["reused"], pose["reused_from_quality"]) == (7, 0, 7, 0)
    assert mediapipe_calls == {}
    (portrait,) = [row for row in rows_of(pose_resources, "poses", key) if row["frame_id"] == "portrait"]
    assert portrait["work_key"] == pose["photo_work_key"] != quality_key(pose_resources, key, "portrait")


def quality_key(resources, partition_key: str, frame_id: str) -> str:
    """The work_key of a frame's quality_scores row."""
    (row,) = [row for row in rows_of(resources, "quality_scores", partition_key) if row["frame_id"] == frame_id]
    return row["work_key"]


def test_work_keys_name_content_settings_and_order(bundles, tmp_path):
    """The IMAGE-mode key follows the bundles, the detection options and min_side, not where bundles are cached;
    a video's key follows its frames' content, order and timestamps."""
    key = image_work_key(estimator(bundles), 64)
    assert key == image_work_key(estimator(bundles, cache_dir=str(tmp_path / "elsewhere")), 64)
    assert image_work_key(estimator(bundles), 48) != key
    assert image_work_key(estimator(bundles, num_hands=1), 64) != key
    assert image_work_key(estimator(bundles, min_detection_confidence=0.3), 64) != key
    assert image_work_key(estimator(bundles, "lite"), 64) != key
    # the tracking confidence matters to VIDEO mode only
    assert image_work_key(estimator(bundles, min_tracking_confidence=0.9), 64) == key

    settings = landmarker_settings(estimator(bundles), video=True)
    frames = [{"sha256": f"sha-{i}", "timestamp_s": 0.5 * i} for i in range(3)]
    sequence = sequence_work_key(settings, "clip", frames)
    assert sequence == sequence_work_key(dict(reversed(settings.items())), "clip", [dict(f) for f in frames])
    assert sequence_work_key(settings, "clip", frames[::-1]) != sequence
    assert sequence_work_key(settings, "clip", frames[:2]) != sequence
    assert sequence_work_key(settings, "clip", [*frames[:2], frames[2] | {"timestamp_s": 2.0}]) != sequence
    assert sequence_work_key(settings, "other", frames) != sequence
    assert sequence_work_key(settings | {"min_tracking_confidence": 0.9}, "clip", frames) != sequence
