"""The PoseEstimator resource on real MediaPipe bundles and a real photo, and how it finds or downloads bundles."""

import functools
import http.server
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pose_support import closed_port, on_canvas

from resources.models import base
from resources.models.base import ModelUnavailableError
from resources.models.pose import (
    LEFT_SHOULDER,
    LEFT_WRIST,
    NOSE,
    RIGHT_SHOULDER,
    RIGHT_WRIST,
    PoseEstimator,
    to_result,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHA = {"full": "38d550e3056d", "lite": "029ffd7ccca7", "hand": "699166a05fdc"}  # ../shared/models/mediapipe/README


def test_real_photo_gives_33_landmarks_in_anatomical_places(pose_estimator, person_photo):
    found = pose_estimator.detect(person_photo)
    assert found.pose_found and (found.width, found.height) == (512, 600)
    assert found.landmarks.shape == (33, 4) and found.world_landmarks.shape == (33, 3)
    assert found.landmarks.dtype == np.float32 and np.isfinite(found.landmarks).all()
    x, y, visibility = found.landmarks[:, 0], found.landmarks[:, 1], found.landmarks[:, 3]
    assert 0.4 < x[NOSE] < 0.7 and 0.25 < y[NOSE] < 0.5 and visibility[NOSE] > 0.9  # the face is top centre
    assert y[NOSE] < y[LEFT_SHOULDER] and y[NOSE] < y[RIGHT_SHOULDER]  # image y grows downwards
    assert y[NOSE] < y[LEFT_WRIST] and y[NOSE] < y[RIGHT_WRIST]
    assert x[RIGHT_SHOULDER] < x[NOSE] < x[LEFT_SHOULDER]  # facing the camera: her left is the image's right
    assert min(visibility[LEFT_SHOULDER], visibility[RIGHT_SHOULDER]) > 0.9
    assert 0.3 < found.visibility < 0.6  # the lower body is out of the frame
    assert found.hands == () and found.hand("Left") is None  # her hands are out of view
    assert found.world_landmarks[NOSE, 1] < found.world_landmarks[LEFT_SHOULDER, 1]  # world y points down too


def test_describe_names_bundles_and_their_hashes(pose_estimator):
    assert pose_estimator.describe() == (
        f"mediapipe:pose_landmarker_full.task@{SHA['full']}+hand_landmarker.task@{SHA['hand']}"
    )


def test_one_landmarker_serves_many_threads(pose_estimator, person_photo):
    frames = [on_canvas(person_photo, dx) for dx in range(0, 200, 40)]
    serial = [pose_estimator.detect(frame).landmarks for frame in frames]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda frame: pose_estimator.detect(frame).landmarks, frames * 3))
    for got, want in zip(parallel, serial * 3, strict=True):
        np.testing.assert_array_equal(got, want)


def test_video_mode_tracks_a_moving_person_and_refuses_old_timestamps(pose_estimator, person_photo):
    frames = [pose_estimator.prepare([on_canvas(person_photo, dx)])[0] for dx in (0, 40, 80, 120)]
    with pose_estimator.video() as sequence:
        noses = [sequence.detect(frame, 100 * i).landmarks[NOSE, 0] for i, frame in enumerate(frames)]
        with pytest.raises(ValueError, match="must increase"):
            sequence.detect(frames[0], 300)
    assert np.all(np.diff(noses) > 0.02)  # 40 px of 640 to the right each frame: ~0.06 (tracking smooths)
    assert 0.12 < noses[-1] - noses[0] < 0.25
    with pose_estimator.video() as fresh:  # a new sequence starts its clock again
        assert fresh.detect(frames[0], 0).pose_found


def test_blank_image_has_no_pose(pose_estimator):
    found = pose_estimator.detect(np.full((240, 320, 3), 128, np.uint8))
    assert not found.pose_found and found.visibility is None and found.landmarks is None


def test_results_are_plain_arrays():
    point = SimpleNamespace(x=0.5, y=0.25, z=-0.1, visibility=0.9)
    pose = SimpleNamespace(pose_landmarks=[[point] * 33], pose_world_landmarks=[[point] * 33])
    left_a, left_b = ([SimpleNamespace(category_name="Left", score=s)] for s in (0.6, 0.8))
    hands = SimpleNamespace(
        hand_landmarks=[[point] * 21, [point] * 21, [point] * 21],
        handedness=[left_a, [SimpleNamespace(category_name="Right", score=0.95)], left_b],
    )
    found = to_result(pose, hands, 640, 480)
    assert found.landmarks.shape == (33, 4) and found.world_landmarks.shape == (33, 3)
    assert [hand.landmarks.shape for hand in found.hands] == [(21, 3)] * 3
    assert found.hand("Left").score == pytest.approx(0.8) and found.hand("Right").score == pytest.approx(0.95)
    assert found.visibility == pytest.approx(0.9)


def test_a_variant_is_found_in_the_cache_folder(bundles, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(bundles / "pose_landmarker_lite.task", cache)
    estimator = PoseEstimator(pose_variant="lite", cache_dir=str(cache), offline=True,
                              hand_model_path=str(bundles / "hand_landmarker.task"))  # fmt: skip
    assert estimator.bundle_paths()[0] == cache / "pose_landmarker_lite.task"
    assert f"pose_landmarker_lite.task@{SHA['lite']}" in estimator.describe()


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.requests.append(self.path)
        if self.path.endswith("page.task"):  # a captive portal answering with HTML
            body = b"<html><body>sign in first</body></html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


@pytest.fixture
def bundle_server(bundles):
    """An HTTP server on loopback serving the bundles folder, counting requests."""
    handler = type("Handler", (_CountingHandler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(bundles)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    server.shutdown()
    server.server_close()


def test_missing_bundles_are_downloaded_once_into_the_cache(bundle_server, tmp_path):
    url, requests = bundle_server
    cache = tmp_path / "cache"
    settings = {"cache_dir": str(cache), "pose_url": url + "/pose_landmarker_{variant}.task",
                "hand_url": url + "/hand_landmarker.task"}  # fmt: skip
    pose, hand = PoseEstimator(**settings).bundle_paths()
    assert (pose, hand) == (cache / "pose_landmarker_full.task", cache / "hand_landmarker.task")
    assert sorted(requests) == ["/hand_landmarker.task", "/pose_landmarker_full.task"]
    assert PoseEstimator(**settings).describe().count("@") == 2
    base._CACHE.clear()  # as a new process would: the files in the cache folder are found, nothing downloaded
    assert PoseEstimator(**settings).describe() == (
        f"mediapipe:pose_landmarker_full.task@{SHA['full']}+hand_landmarker.task@{SHA['hand']}"
    )
    assert len(requests) == 2
    assert sorted(p.name for p in cache.iterdir()) == ["hand_landmarker.task", "pose_landmarker_full.task"]


def test_an_html_answer_is_not_taken_for_a_bundle(bundle_server, tmp_path):
    url, _ = bundle_server
    estimator = PoseEstimator(cache_dir=str(tmp_path / "cache"), pose_url=url + "/pose_landmarker_{variant}.task",
                              hand_url=url + "/page.task")  # fmt: skip
    with pytest.raises(ModelUnavailableError, match=r"hand_landmarker\.task .*not a MediaPipe \.task bundle"):
        estimator.bundle_paths()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["pose_landmarker_full.task"]  # no partial file


def test_unreachable_download_names_bundle_url_and_setting(tmp_path):
    closed = closed_port()
    url = f"http://127.0.0.1:{closed}/pose_landmarker_{{variant}}.task"
    estimator = PoseEstimator(cache_dir=str(tmp_path / "cache"), pose_url=url, download_timeout_s=5)
    with pytest.raises(ModelUnavailableError) as raised:
        estimator.bundle_paths()
    message = str(raised.value)
    assert "pose_landmarker_full.task" in message
    assert f"http://127.0.0.1:{closed}/pose_landmarker_full.task" in message
    assert "set pose_model_path" in message
    assert not any((tmp_path / "cache").iterdir())  # no partial download left behind


def test_offline_without_a_bundle_says_what_to_set(tmp_path):
    estimator = PoseEstimator(cache_dir=str(tmp_path / "empty"), offline=True)
    with pytest.raises(ModelUnavailableError, match=r"pose_landmarker_full\.task .*offline.*set pose_model_path"):
        estimator.bundle_paths()
    with pytest.raises(ModelUnavailableError, match=r"hand_model_path='/no/such/file\.task' is not a file"):
        PoseEstimator(pose_model_path=__file__, hand_model_path="/no/such/file.task").bundle_paths()


def test_importing_the_stages_loads_no_model_library():
    code = ("import sys, resources.models.pose, mining_assets.poses.quality, mining_assets.poses.poses; "
            "print(sorted(m for m in ('mediapipe', 'cv2') if m in sys.modules))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
