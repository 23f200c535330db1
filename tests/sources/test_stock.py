"""stock_images through Dagster against a local server speaking the Pexels, Unsplash and Pixabay JSON, with bad
images among the good ones; then the photos in the frames catalog."""

import http.server
import json
import struct
import threading
import urllib.parse
import zlib

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from harness import meta, query, query_dicts
from PIL import Image
from vision_support import encode, rotated_jpeg, scene

from mining_assets.frames import frames
from mining_assets.images.stock import stock_images
from mining_assets.warehouse import insert_rows, unique_key_check
from resources.stock_photos import PexelsSource, PixabayPhotoSource, UnsplashSource


def bomb_png() -> bytes:
    """A PNG whose header claims 20000 x 10000 pixels (200 megapixels); only the header is ever read."""
    data = encode(Image.new("RGB", (1, 1)), "PNG")
    ihdr = b"IHDR" + struct.pack(">II", 20000, 10000) + data[24:29]
    return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


GOOD = encode(scene(1))
IMAGES = {
    "p1.jpg": ("image/jpeg", GOOD),
    "p2.jpg": ("image/jpeg", b"<html><body>Access denied</body></html>"),
    "p3.jpg": ("image/jpeg", b""),
    "p4.jpg": ("image/jpeg", encode(scene(4).convert("CMYK"))),
    "p5.jpg": ("image/jpeg", rotated_jpeg()),
    "p6.jpg": ("image/jpeg", encode(scene(7).convert("L"))),  # grayscale
    "u1.png": ("image/png", encode(Image.fromarray(np.full((48, 64), 40000, np.uint16)), "PNG")),
    "u2.png": ("image/png", encode(scene(6).convert("RGBA"), "PNG")),
    "u3.jpg": ("image/jpeg", GOOD),  # the same picture as p1, on another site
    "u5.png": ("image/png", bomb_png()),
}


class _Handler(http.server.BaseHTTPRequestHandler):
    log: list[str] = []
    reports: list[tuple[str, str | None]] = []  # Unsplash download reports: (path with query, Authorization)

    def log_message(self, format, *args):
        pass

    def _json(self, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        self.log.append(url.path)
        if "/download" in url.path:
            self.reports.append((self.path, self.headers.get("Authorization")))
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        if url.path.startswith("/img/"):
            name = url.path[5:]
            if name not in IMAGES:
                self.send_error(404)
                return
            kind, body = IMAGES[name]
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif url.path == "/v1/search":
            photos = [
                {"id": i, "width": 640, "height": 480, "url": f"https://www.pexels.com/photo/{i}/", "alt": "a door",
                 "photographer": f"Pexels author {i}", "photographer_url": f"https://www.pexels.com/@a{i}",
                 "src": {"large2x": f"{base}/img/p{i}.jpg", "original": f"{base}/img/p{i}.jpg"}}
                for i in range(1, 7)
            ]  # fmt: skip
            self._json({"page": 1, "per_page": 30, "total_results": 6, "photos": photos})
        elif url.path == "/unsplash/search/photos":
            names = {"u1": "u1.png", "u2": "u2.png", "u3": "u3.jpg", "u4": "u4.jpg", "u5": "u5.png"}
            results = [
                {"id": uid, "width": 64, "height": 48, "description": None, "alt_description": "a glass door",
                 "urls": {"regular": f"{base}/img/{name}"},
                 "links": {"html": f"https://unsplash.com/photos/{uid}",
                           "download_location": f"{base}/unsplash/photos/{uid}/download?ixid=x{uid}"},
                 "user": {"name": f"Unsplash author {uid}", "links": {"html": f"https://unsplash.com/@{uid}"}}}
                for uid, name in names.items()
            ]  # fmt: skip
            self._json({"total": 5, "total_pages": 1, "results": results})
        elif url.path == "/unsplash/photos/u1/download":  # u2's report is answered 404
            self._json({"url": f"{base}/img/u1.png"})
        else:
            self.send_error(404)


@pytest.fixture
def photo_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Handler.log, _Handler.reports = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def photo_resources(resources, photo_server, monkeypatch):
    monkeypatch.setenv("PEXELS_API_KEY", "pexels-secret")
    monkeypatch.setenv("UNSPLASH_ACCESS_KEY", "unsplash-secret")
    monkeypatch.delenv("PIXABAY_API_KEY", raising=False)
    return {
        **resources,
        "pexels": PexelsSource(base_url=photo_server + "/v1"),
        "unsplash": UnsplashSource(base_url=photo_server + "/unsplash"),
        "pixabay": PixabayPhotoSource(base_url=photo_server + "/pixabay/"),
    }


def materialize(resources, instance, assets, partition_key="glass-door", **config):
    if partition_key not in instance.get_dynamic_partitions("keyword"):
        instance.add_dynamic_partitions("keyword", [partition_key])
    run_config = {"ops": {name: {"config": value} for name, value in config.items()}}
    return dg.materialize(assets, partition_key=partition_key, resources=resources, instance=instance,
                          run_config=run_config)  # fmt: skip


def test_photos_are_stored_once_with_their_license_and_reach_the_catalog(photo_resources, instance):
    result = materialize(photo_resources, instance, [stock_images, frames])
    assert result.success
    assert all(check.passed for check in result.get_asset_check_evaluations())
    rows = {
        r["media_id"]: r
        for r in query_dicts(photo_resources, "SELECT media_id, status, error, width, height FROM photos")
    }
    stored = {m for m, row in rows.items() if row["status"] == "stored"}
    assert stored == {"pexels-1", "pexels-4", "pexels-5", "pexels-6", "unsplash-u1", "unsplash-u2"}
    assert (rows["pexels-5"]["width"], rows["pexels-5"]["height"]) == (64, 96)  # EXIF orientation applied
    assert (rows["unsplash-u3"]["status"], rows["unsplash-u3"]["error"]) == ("duplicate", "same image as pexels-1")
    assert rows["pexels-2"]["error"].startswith("not an image")
    assert rows["pexels-3"]["error"] == "empty file (0 bytes)"
    assert rows["unsplash-u5"]["error"].startswith("too large")
    assert "404" in rows["unsplash-u4"]["error"]
    errors = dict(query(photo_resources, "SELECT item, reason FROM ingest_errors WHERE stage = 'stock_images'"))
    assert "PIXABAY_API_KEY" in errors["pixabay"]
    assert not any("secret" in reason for reason in errors.values())
    # Unsplash is told which photos were used (authorised, with the ixid), and a failed report loses no photo
    assert sorted(_Handler.reports) == [
        ("/unsplash/photos/u1/download?ixid=xu1", "Client-ID unsplash-secret"),
        ("/unsplash/photos/u2/download?ixid=xu2", "Client-ID unsplash-secret"),
    ]
    assert (
        errors["unsplash-u2"].startswith("stored, but the download was not reported:")
        and "404" in errors["unsplash-u2"]
    )

    catalog = query_dicts(
        photo_resources, "SELECT frame_id, media_type, source_url, frame_index FROM frames ORDER BY frame_id"
    )
    assert [r["frame_id"] for r in catalog] == sorted(stored)
    assert all(
        r["media_type"] == "photo" and r["frame_index"] is None and r["source_url"].startswith("https://")
        for r in catalog
    )
    license_rows = query(photo_resources, "SELECT DISTINCT license FROM photos WHERE status = 'stored' ORDER BY 1")
    assert [r[0] for r in license_rows] == ["Pexels License", "Unsplash License"]


def test_rerun_reuses_stored_photos_and_duplicates_nothing(photo_resources, instance):
    materialize(photo_resources, instance, [stock_images, frames])
    before = query(photo_resources, "SELECT media_id, status, sha256 FROM photos ORDER BY 1")
    files = photo_resources["blob_store"].list_keys("photos")
    _Handler.log.clear()
    materialize(photo_resources, instance, [stock_images, frames])
    assert query(photo_resources, "SELECT media_id, status, sha256 FROM photos ORDER BY 1") == before
    assert photo_resources["blob_store"].list_keys("photos") == files == sorted(files) and len(files) == 6
    downloaded = [path for path in _Handler.log if path.startswith("/img/")]
    assert not {"/img/p1.jpg", "/img/p4.jpg", "/img/u1.png"} & set(downloaded)  # stored photos are not fetched again
    assert query(photo_resources, "SELECT count(*) FROM frames")[0][0] == 6


def test_metadata_counts_the_partition_and_the_table(photo_resources, instance):
    materialize(photo_resources, instance, [stock_images])
    second = materialize(photo_resources, instance, [stock_images], partition_key="glass-window")
    metadata = meta(second, "stock_images")
    # 6 Pexels and 5 Unsplash hits per keyword, stored or not (Pixabay has no key): one row each
    assert metadata["dagster/table_name"] == "lake.main.photos"
    assert (metadata["dagster/partition_row_count"], metadata["dagster/row_count"]) == (11, 22)
    checks = {e.check_name: e.passed for e in second.get_asset_check_evaluations()}
    assert checks == {"photos_stored": True, "unique_key": True}


def test_unique_key_fails_on_a_doubled_photo(photo_resources, instance):
    # an upload's photo recorded twice: not a stock row, so stock_images leaves it, and its check reports it
    upload = {"partition_key": "glass-door", "keyword": "glass door", "media_id": "local-0123456789abcdef",
              "source": "local", "source_id": "0123456789abcdef", "query": "", "page_url": "file:///x.jpg",
              "image_url": "file:///x.jpg", "license": "as uploaded", "status": "failed",
              "error": "too small"}  # fmt: skip
    materialize(photo_resources, instance, [stock_images])
    for attempt in photo_resources["warehouse"].retrying():
        with attempt as conn:
            insert_rows(conn, "photos", pd.DataFrame([upload, upload]))
    result = materialize(photo_resources, instance, [stock_images])
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "unique_key"]
    assert not evaluation.passed and evaluation.metadata["duplicated_keys"].value == {"photos": 1}
    for attempt in photo_resources["warehouse"].retrying():
        with attempt as conn:
            assert unique_key_check(conn, "glass-window", ["photos"]).passed  # another partition is unaffected
