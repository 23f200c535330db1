"""Shared offline fixtures: synthetic videos, a local HTTP server standing in for video sites, a moto S3 server,
and a Dagster harness over a DuckLake warehouse and blob store in tmp_path."""

import functools
import http.server
import socket
import threading
from pathlib import Path

import dagster as dg
import pytest
from mongo_support import STORES, URI, MongomockResource

from mining_assets.video.synthetic import make_audio_only, make_video, truncate
from resources.blob_store import LocalBlobStore
from resources.models.detector import OpenVocabDetector
from resources.models.embedder import ImageEmbedder
from resources.models.random_weights import build_random_model
from resources.models.text_filter import TextImageFilter
from resources.warehouse import Warehouse, close_all
from resources.youtube import YouTubeResource

SEARCH_PAGE = """<html><head><title>Results</title></head><body>
<video src="clip_h264.mp4"></video>
<video src="clip_mp4v.mp4"></video>
</body></html>"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Keep every test's data, keyword file and Dagster home inside its tmp_path."""
    monkeypatch.setenv("MINING_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MINING_WATCHLIST", str(tmp_path / "keywords.txt"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    for name in ("MINING_LAKE_CATALOG", "MINING_LAKE_DATA_PATH", "MINING_LAKE_PASSWORD", "MINING_S3_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    yield
    close_all()  # each test's lake is its own: don't keep its DuckDB instance attached


def lake_in(folder: Path) -> Warehouse:
    """The embedded lake (SQLite catalog, local data files) under ``folder``, as the defaults lay it out."""
    return Warehouse(catalog=f"sqlite:{folder / 'lake' / 'catalog.sqlite'}", data_path=f"{folder / 'lake' / 'data'}/")


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    """Good and bad media, made once per session."""
    root = tmp_path_factory.mktemp("media")
    make_video(root / "clip_h264.mp4", frames=90, fps=30, codec="h264", gop=30)
    make_video(root / "clip_mp4v.mp4", frames=60, fps=30, codec="mp4v", gop=15)
    make_audio_only(root / "audio_only.mp4")
    truncate(make_video(root / "truncated.mp4", frames=60))
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n")
    (root / "search.html").write_text(SEARCH_PAGE)
    (root / "empty_search.html").write_text("<html><head><title>Nothing</title></head><body></body></html>")
    (root / "one.html").write_text(
        '<html><head><title>A door</title></head><body><video src="clip_h264.mp4"></video></body></html>'
    )
    return root


@pytest.fixture(scope="session")
def media_server(media_dir) -> str:
    """Base URL of an HTTP server on loopback serving media_dir (missing paths answer 404)."""
    handler = functools.partial(_QuietHandler, directory=str(media_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """A real S3 HTTP endpoint on loopback (moto server)."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def resources(tmp_path, media_server) -> dict:
    return {
        "blob_store": LocalBlobStore(root=str(tmp_path / "data" / "blobs")),
        "warehouse": lake_in(tmp_path / "data"),
        "youtube": YouTubeResource(search_url_template=media_server + "/search.html?q={query}", retries=0),
    }


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


TINY = ("siglip", "siglip2", "dinov2", "dinov3", "grounding-dino", "owlv2", "florence-2")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """Tiny random models, built once per session and loaded through the production from_pretrained path."""
    root = tmp_path_factory.mktemp("models")
    return {name: str(build_random_model(name, root / name)) for name in TINY}


@pytest.fixture
def vision_resources(resources, tiny_models) -> dict:
    return {
        **resources,
        "text_filter": TextImageFilter(backend="siglip", model_id=tiny_models["siglip"], offline=True, batch_size=4),
        "embedder": ImageEmbedder(model_id=tiny_models["dinov2"], offline=True, batch_size=4),
        "detector": OpenVocabDetector(model_id=tiny_models["grounding-dino"], offline=True, batch_size=2),
    }


@pytest.fixture
def _bulk_updates_without_sort(monkeypatch):
    """mongomock 4.3 predates the ``sort`` argument pymongo >= 4.11 passes for UpdateOne (mongomock issue #912);
    accept it while unset, which is all this project uses."""
    from mongomock.collection import BulkOperationBuilder

    original = BulkOperationBuilder.add_update

    def add_update(self, *args, sort=None, **kwargs):
        if sort is not None:
            raise NotImplementedError("mongomock: sort in a bulk update")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BulkOperationBuilder, "add_update", add_update)


@pytest.fixture
def mongo_resources(resources, request, monkeypatch, _bulk_updates_without_sort) -> dict:
    monkeypatch.setenv("MONGODB_URI", URI)
    yield {**resources, "mongo": MongomockResource(store=request.node.nodeid)}
    STORES.pop(request.node.nodeid, None)
