"""The whole image path through Dagster, offline: a stock-photo search (a local server speaking the Pexels JSON) ->
stored photos -> frames -> quality scores -> MediaPipe poses -> HDF5 -> MongoDB (mongomock), on a real photo of a
person, with a fake image among the results; then a re-run that changes nothing."""

import http.server
import io
import json
import threading
from pathlib import Path

import h5py
import pytest
from harness import materialize_partition, meta, query
from PIL import ImageOps

from mining_assets.exports.mongo import mongo_export
from mining_assets.frames import frames
from mining_assets.poses.datasets import pose_datasets
from mining_assets.poses.poses import poses
from mining_assets.poses.quality import quality_scores
from mining_assets.sources.media import media
from mining_assets.sources.media_registry import media_registry
from resources.models.pose import LEFT_SHOULDER, NOSE, RIGHT_SHOULDER
from resources.stock_photos import PexelsSource

PATH = [media_registry, media, frames, quality_scores, poses, pose_datasets, mongo_export]


def jpeg(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


@pytest.fixture
def pexels(person_photo, monkeypatch):
    """A Pexels stand-in: the portrait, its mirror image, and an HTML page served as image/jpeg."""
    images = {
        "1.jpg": jpeg(person_photo),
        "2.jpg": jpeg(ImageOps.mirror(person_photo)),
        "3.jpg": b"<html><body>Sign in to download</body></html>",
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

        def do_GET(self):
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            if self.path.startswith("/v1/search"):
                photos = [{"id": i, "url": f"https://www.pexels.com/photo/{i}/", "photographer": f"P{i}",
                           "photographer_url": f"https://www.pexels.com/@p{i}", "alt": "a woman",
                           "src": {"large2x": f"{base}/img/{i}.jpg", "original": f"{base}/img/{i}.jpg"}}
                          for i in (1, 2, 3)]  # fmt: skip
                body, kind = json.dumps({"per_page": 30, "total_results": 3, "photos": photos}).encode(), "json"
            elif self.path.startswith("/img/") and self.path[5:] in images:
                body, kind = images[self.path[5:]], "image/jpeg"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PEXELS_API_KEY", "test-key")
    yield PexelsSource(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1")
    server.shutdown()
    server.server_close()


def test_stock_photos_of_a_person_become_pose_datasets_in_mongodb(mongo_resources, pose_estimator, pexels, instance):
    resources = {**mongo_resources, "pose_estimator": pose_estimator, "pexels": pexels,
                 "unsplash": pexels, "pixabay": pexels}  # fmt: skip
    config = {
        "media_registry": {"youtube_search": False, "uploads": False, "stock_sources": ["pexels"]},
        "quality_scores": {"threshold": 40},
    }
    result, checks = materialize_partition(resources, instance, "person-waving", PATH, **config)
    assert checks.pop("items_fetched") is False  # pexels-3 is not an image: a warning
    assert all(checks.values()), checks

    photos = dict(query(resources, "SELECT media_id, status FROM media_status"))
    assert photos == {"pexels-1": "complete", "pexels-2": "complete", "pexels-3": "failed"}
    reasons = dict(query(resources, "SELECT item, reason FROM ingest_errors WHERE stage = 'media'"))
    assert reasons["pexels-3"].startswith("not an image")
    assert meta(result, "quality_scores")["accepted"] == 2

    # the portrait's pose, as stored in the warehouse and in the media item's HDF5 file
    (landmarks,) = query(resources, "SELECT pose_landmarks FROM poses WHERE media_id = 'pexels-1'")[0]
    assert len(landmarks) == 33 * 4
    nose_y, shoulders_y = landmarks[NOSE * 4 + 1], (landmarks[LEFT_SHOULDER * 4 + 1], landmarks[RIGHT_SHOULDER * 4 + 1])
    assert nose_y < min(shoulders_y)  # the head is above the shoulders (y grows downwards)
    key = query(resources, "SELECT blob_key FROM pose_datasets WHERE media_id = 'pexels-1'")[0][0]
    with h5py.File(Path(resources["blob_store"].root) / key, "r") as h5:
        assert h5["pose_landmarks"].shape == (1, 33, 4)
        assert h5.attrs["license"] == "Pexels License" and h5.attrs["source_url"] == "https://www.pexels.com/photo/1/"
        assert h5["pose_landmarks"][0, NOSE, 1] == pytest.approx(nose_y)

    database = mongo_resources["mongo"].get_client()[mongo_resources["mongo"].database]
    documents = {doc["media_id"]: doc for doc in database["robot_training_data"].find()}
    assert sorted(documents) == ["pexels-1", "pexels-2"]
    assert documents["pexels-1"]["pose"]["frames_with_pose"] == 1
    assert documents["pexels-1"]["hdf5"]["key"] == key
    statistics = database["mining_statistics"].find_one({"_id": "person-waving"})
    assert (statistics["photos"], statistics["frames_with_pose"]) == (2, 2)

    # a re-run finds the photos already stored and leaves the same rows, files and documents
    before = [database["robot_training_data"].count_documents({}), query(resources, "SELECT count(*) FROM poses")]
    materialize_partition(resources, instance, "person-waving", PATH, **config)
    assert [
        database["robot_training_data"].count_documents({}),
        query(resources, "SELECT count(*) FROM poses"),
    ] == before
    assert len(resources["blob_store"].list_keys("photos")) == 2
