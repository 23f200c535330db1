"""Stock photos through the source chain (media_registry -> media -> video_frames -> frames) against a local server
speaking the Pexels, Unsplash and Pixabay JSON, with bad images among the good ones; then the photos in the frames
catalog."""

import http.server
import json
import re
import struct
import threading
import urllib.parse
import zlib

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from harness import checks_by_asset, meta, query, query_dicts
from PIL import Image
from vision_support import encode, rotated_jpeg, scene

from mining_assets.frames import frames
from mining_assets.sources.media import media
from mining_assets.sources.media_registry import media_registry
from mining_assets.video.frames import video_frames
from mining_assets.warehouse import insert_rows, unique_key_check
from resources.stock_photos import PexelsSource, PixabayPhotoSource, UnsplashSource

PHOTO_SOURCES = {
    "youtube_search": False,
    "uploads": False,
    "stock_sources": ["pexels", "unsplash", "pixabay"],
}  # what the job's tag asks, spelled out


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
    pixabay_status = 404  # what Pixabay's search answers
    cut: dict[str, str] = {}  # path -> how its reply breaks off: "length" (short of its Content-Length), "chunked"

    def log_message(self, format, *args):
        pass

    def _json(self, payload) -> None:
        self._send("application/json", json.dumps(payload).encode())

    def _send(self, kind: str, body: bytes) -> None:
        cut = self.cut.get(urllib.parse.urlparse(self.path).path)
        self.send_response(200)
        self.send_header("Content-Type", kind)
        if cut == "chunked":  # the connection closes halfway through a chunk
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n" % len(body) + body[: len(body) // 2])
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if cut else body)
        self.close_connection = bool(cut)

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
            self._send(*IMAGES[name])
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
        elif url.path == "/pixabay/" and self.pixabay_status == 429:
            self.send_response(429)
            self.send_header("Retry-After", "3600")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404)


@pytest.fixture
def photo_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Handler.log, _Handler.reports, _Handler.pixabay_status, _Handler.cut = [], [], 404, {}
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


STORED = {"pexels-1", "pexels-4", "pexels-5", "pexels-6", "unsplash-u1", "unsplash-u2"}
FOUND = {f"pexels-{i}" for i in range(1, 7)} | {f"unsplash-u{i}" for i in range(1, 6)}  # Pixabay has no key


def materialize(resources, instance, assets=None, partition_key="glass-door", registry=None, **config):
    """The source chain (or ``assets``) for a keyword with the stock sources only, as photo_pipeline asks."""
    assets = assets or [media_registry, media, video_frames, frames]
    if partition_key not in instance.get_dynamic_partitions("keyword"):
        instance.add_dynamic_partitions("keyword", [partition_key])
    if media_registry in assets:
        config["media_registry"] = {**PHOTO_SOURCES, **(registry or {})}
    run_config = {"ops": {name: {"config": value} for name, value in config.items()}}
    result = dg.materialize(assets, partition_key=partition_key, resources=resources, instance=instance,
                            run_config=run_config)  # fmt: skip
    assert result.success
    return result


def test_photos_are_stored_once_with_their_license_and_reach_the_catalog(photo_resources, instance):
    result = materialize(photo_resources, instance, registry={"keyword": "glass door"})
    assert checks_by_asset(result) == {
        ("media_registry", "sources_answered"): False,  # Pixabay has no key
        ("media_registry", "unique_key"): True,
        ("media", "stored_files_exist"): True,
        ("media", "items_fetched"): False,  # the bad images below
        ("media", "unique_key"): True,
        ("video_frames", "frames_stored"): True,
        ("video_frames", "unique_key"): True,
        ("frames", "traceable_to_source"): True,
        ("frames", "unique_key"): True,
        ("media_registry", "produced_output"): True,
        ("media", "produced_output"): True,
        ("video_frames", "produced_output"): True,  # photos only: no video to sample is no warning
        ("frames", "produced_output"): True,
    }
    status = {r["item"]: r for r in query_dicts(photo_resources, "SELECT * FROM media_status")}
    assert set(status) == FOUND
    assert {item for item, row in status.items() if row["status"] == "complete"} == STORED | {"unsplash-u3"}
    media_rows = {r["media_id"]: r for r in query_dicts(photo_resources, "SELECT * FROM media")}
    assert set(media_rows) == STORED and {r["media_type"] for r in media_rows.values()} == {"photo"}
    assert (media_rows["pexels-5"]["width"], media_rows["pexels-5"]["height"]) == (64, 96)  # EXIF orientation applied
    assert media_rows["pexels-1"]["blob_key"] == "photos/pexels-1.jpg"
    assert media_rows["unsplash-u1"]["blob_key"] == "photos/unsplash-u1.png"
    # the same picture on another site is a membership of the first, not a second photo
    u3 = status["unsplash-u3"]
    assert (u3["media_id"], u3["duplicate_of"]) == ("pexels-1", "pexels-1")
    assert status["pexels-2"]["error"].startswith("not an image")
    assert status["pexels-3"]["error"] == "empty file (0 bytes)"
    assert status["unsplash-u5"]["error"].startswith("too large")
    assert "404" in status["unsplash-u4"]["error"]
    assert {item for item, row in status.items() if row["status"] == "failed"} == {
        "pexels-2",
        "pexels-3",
        "unsplash-u4",
        "unsplash-u5",
    }
    assert {row["error_stage"] for row in status.values() if row["status"] == "failed"} == {"media"}

    errors = {(e["stage"], e["item"]): e["reason"] for e in query_dicts(photo_resources, "SELECT * FROM ingest_errors")}
    assert "PIXABAY_API_KEY" in errors[("media_registry", "pixabay")]
    assert not any("secret" in reason for reason in errors.values())
    # Unsplash is told which photos were used (authorised, with the ixid), and a failed report loses no photo
    reports = set(_Handler.reports)
    assert {
        ("/unsplash/photos/u1/download?ixid=xu1", "Client-ID unsplash-secret"),
        ("/unsplash/photos/u2/download?ixid=xu2", "Client-ID unsplash-secret"),
    } <= reports
    assert not any(f"/{uid}/" in path for path, _ in reports for uid in ("u4", "u5"))  # not stored: not reported
    report = errors[("media", "unsplash-u2")]
    assert report.startswith("stored, but the download was not reported:") and "404" in report
    assert status["unsplash-u2"]["status"] == "complete"

    catalog = query_dicts(
        photo_resources, "SELECT frame_id, media_type, source_url, frame_index FROM frames ORDER BY frame_id"
    )
    assert [r["frame_id"] for r in catalog] == sorted(STORED)
    assert all(
        r["media_type"] == "photo" and r["frame_index"] is None and r["source_url"].startswith("https://")
        for r in catalog
    )
    # licenses and photographers are kept with what each search found
    credits = query_dicts(
        photo_resources,
        "SELECT r.item, r.license, r.photographer, r.photographer_url, r.page_url, r.query, r.source_id "
        "FROM registry r JOIN keyword_media k USING (partition_key, item) WHERE k.duplicate_of IS NULL ORDER BY 1",
    )
    assert [r["item"] for r in credits] == sorted(STORED)
    assert {r["license"] for r in credits} == {"Pexels License", "Unsplash License"}
    assert credits[0] == {
        "item": "pexels-1",
        "license": "Pexels License",
        "photographer": "Pexels author 1",
        "photographer_url": "https://www.pexels.com/@a1",
        "page_url": "https://www.pexels.com/photo/1/",
        "query": "glass door",
        "source_id": "1",
    }
    assert (credits[-1]["photographer"], credits[-1]["photographer_url"]) == (
        "Unsplash author u2",
        "https://unsplash.com/@u2",
    )


def test_rerun_reuses_stored_photos_and_duplicates_nothing(photo_resources, instance):
    materialize(photo_resources, instance)
    tables = {
        "media": "SELECT * EXCLUDE (stored_at) FROM media ORDER BY media_id",
        "keyword_media": "SELECT * EXCLUDE (fetched_at) FROM keyword_media ORDER BY item",
        "frames": "SELECT * EXCLUDE (created_at) FROM frames ORDER BY frame_id",
    }
    before = {name: query(photo_resources, sql) for name, sql in tables.items()}
    files = photo_resources["blob_store"].list_keys("photos")
    _Handler.log.clear()
    again = materialize(photo_resources, instance)
    assert {name: query(photo_resources, sql) for name, sql in tables.items()} == before
    assert photo_resources["blob_store"].list_keys("photos") == files == sorted(files)  # nothing stored again
    blob_keys = {r["blob_key"] for r in query_dicts(photo_resources, "SELECT blob_key FROM media")}
    assert blob_keys <= set(files) and len(blob_keys) == 6
    downloaded = {path for path in _Handler.log if path.startswith("/img/")}
    assert not {"/img/p1.jpg", "/img/p4.jpg", "/img/u1.png", "/img/u3.jpg"} & downloaded  # stored: not fetched again
    assert {"/img/p2.jpg", "/img/p3.jpg", "/img/u5.png"} <= downloaded  # the failed ones are tried again
    assert (meta(again, "media")["fetched_now"], meta(again, "media_registry")["new_items"]) == (0, 0)
    assert query(photo_resources, "SELECT count(*) FROM frames")[0][0] == 6

    # a search that no longer finds a photo takes nothing away: what was found stays in the registry, stored
    _Handler.log.clear()
    fewer = materialize(photo_resources, instance, registry={"per_query": 2}, media={"retry_failed": False})
    assert meta(fewer, "media_registry")["items"] == len(FOUND)
    assert {r["item"] for r in query_dicts(photo_resources, "SELECT item FROM registry")} == FOUND
    assert {name: query(photo_resources, sql) for name, sql in tables.items()} == before
    assert not [path for path in _Handler.log if path.startswith("/img/")]  # failed photos are not retried
    errors = {r["item"] for r in query_dicts(photo_resources, "SELECT item FROM ingest_errors WHERE stage = 'media'")}
    assert errors == {"pexels-2", "pexels-3", "unsplash-u4", "unsplash-u5"}  # their reasons are kept


def test_a_photo_that_repeats_another_is_neither_stored_nor_reported(photo_resources, instance):
    materialize(photo_resources, instance, [media_registry, media])
    blob_keys = {r["blob_key"] for r in query_dicts(photo_resources, "SELECT blob_key FROM media")}
    assert set(photo_resources["blob_store"].list_keys("photos")) == blob_keys
    assert not [path for path, _ in _Handler.reports if "/u3/" in path]


def test_metadata_counts_the_partition_and_the_table(photo_resources, instance):
    materialize(photo_resources, instance, [media_registry, media])
    second = materialize(photo_resources, instance, [media_registry, media], partition_key="glass-window")
    # 6 Pexels and 5 Unsplash hits per keyword, stored or not (Pixabay has no key): one registry row each
    registry = meta(second, "media_registry")
    assert registry["dagster/table_name"] == "lake.main.registry"
    assert (registry["dagster/partition_row_count"], registry["dagster/row_count"]) == (11, 22)
    assert registry["by_source"] == {"pexels": 6, "unsplash": 5}
    # 7 memberships per keyword (u3 a duplicate of p1); the photos themselves are the first keyword's
    members = meta(second, "media")
    assert members["dagster/table_name"] == "lake.main.keyword_media"
    assert (members["dagster/partition_row_count"], members["dagster/row_count"]) == (7, 14)
    assert (members["reused_from_other_keywords"], members["fetched_now"]) == (6, 0)
    assert query(photo_resources, "SELECT count(*) FROM media")[0][0] == 6
    checks = checks_by_asset(second)
    assert checks[("media_registry", "unique_key")] and checks[("media", "unique_key")]
    assert checks[("media", "stored_files_exist")]


def test_a_rate_limited_search_is_recorded_and_the_other_sources_go_on(
    photo_resources, instance, photo_server, monkeypatch
):
    monkeypatch.setenv("PIXABAY_API_KEY", "pixabay-secret")
    # a limit of its own: the 429's push-back must not stall another test's Pixabay
    pixabay = PixabayPhotoSource(base_url=photo_server + "/pixabay/", requests_per_period=997)
    _Handler.pixabay_status = 429
    materialize({**photo_resources, "pixabay": pixabay}, instance, [media_registry])
    errors = {r["item"]: r["reason"] for r in query_dicts(photo_resources, "SELECT * FROM media_registry_errors")}
    assert errors == {
        "pixabay": "search 'glass-door': pixabay search page 1: HTTP 429 (rate limited) after 1 attempts; retry after "
        "3600 s"
    }
    assert "pixabay-secret" not in str(errors)
    sources = {r["source"] for r in query_dicts(photo_resources, "SELECT source FROM registry")}
    assert sources == {"pexels", "unsplash"}


def test_unique_key_fails_on_a_doubled_membership(photo_resources, instance):
    # a membership recorded twice for an item no search finds: media leaves it, and its check reports it
    member = {"partition_key": "glass-door", "item": "local-0123456789abcdef", "media_id": "local-0123456789abcdef"}
    materialize(photo_resources, instance, [media_registry, media])
    for attempt in photo_resources["warehouse"].retrying():
        with attempt as conn:
            insert_rows(conn, "keyword_media", pd.DataFrame([member, member]))
    result = materialize(photo_resources, instance, [media_registry, media])
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["media"]
                     and e.check_name == "unique_key"]  # fmt: skip
    assert not evaluation.passed and evaluation.metadata["duplicated_keys"].value == {"keyword_media": 1, "media": 0}
    for attempt in photo_resources["warehouse"].retrying():
        with attempt as conn:
            assert unique_key_check(conn, "glass-window", ["keyword_media"]).passed  # another partition is unaffected


def test_transfers_cut_off_are_recorded_failures_and_the_run_goes_on(photo_resources, instance, photo_server):
    """A search page cut off mid-chunk fails that source's search, an image cut short of its Content-Length fails
    that photo: each with its reason; the run, the other source and the other photos go on."""
    _Handler.cut = {"/unsplash/search/photos": "chunked", "/img/p1.jpg": "length"}
    fast = {"retries": 1, "backoff_s": 0.01}
    resources = {**photo_resources, "pexels": PexelsSource(base_url=photo_server + "/v1", **fast),
                 "unsplash": UnsplashSource(base_url=photo_server + "/unsplash", **fast)}  # fmt: skip
    materialize(resources, instance, [media_registry, media])
    errors = {(e["stage"], e["item"]): e["reason"] for e in query_dicts(resources, "SELECT * FROM ingest_errors")}
    assert re.fullmatch(
        r"search 'glass-door': unsplash search page 1: cut off after \d+ bytes \(IncompleteRead\); gave up after 2 "
        r"attempts",
        errors[("media_registry", "unsplash")],
    )
    assert re.fullmatch(
        rf"download {photo_server}/img/p1.jpg: cut off after \d+ of {len(GOOD)} bytes \(IncompleteRead\); gave up "
        r"after 2 attempts",
        errors[("media", "pexels-1")],
    )
    assert _Handler.log.count("/img/p1.jpg") == 2 and _Handler.log.count("/unsplash/search/photos") == 2
    stored = {r["media_id"] for r in query_dicts(resources, "SELECT media_id FROM media")}
    assert stored == {"pexels-4", "pexels-5", "pexels-6"}  # p1 cut off; p2 and p3 are not images
