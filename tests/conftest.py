"""Shared offline fixtures: synthetic videos, a local HTTP server standing in for video sites, a moto S3 server,
and a Dagster harness over a DuckLake warehouse and blob store in tmp_path."""

import functools
import glob
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

# a step that fails on the store or the warehouse is retried once, at once, in tests (read at import)
os.environ.setdefault("MINING_STEP_RETRY_DELAY_S", "0")
os.environ.setdefault("MINING_STEP_RETRIES", "1")
# the daemons the run-queue and monitoring tests start request only what each test launches (tests/test_automation.py
# evaluates the automation conditions themselves)
os.environ.setdefault("MINING_AUTOMATION_SENSOR", "stopped")

import dagster as dg
import pytest
from harness import free_port
from mongo_support import STORES, URI, MongomockResource

from mining_assets.video.synthetic import make_audio_only, make_video, truncate
from resources.blob_store import LocalBlobStore
from resources.models.detector import OpenVocabDetector
from resources.models.embedder import ImageEmbedder
from resources.models.random_weights import build_random_model
from resources.models.text_filter import TextImageFilter
from resources.stock_photos import PexelsSource, PixabayPhotoSource, UnsplashSource
from resources.uploads import UploadBucket
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


def _postgres_binaries() -> str | None:
    """The folder of PostgreSQL's initdb and pg_ctl: the Debian package's, else PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


@pytest.fixture(scope="session")
def postgres_server() -> dict:
    """A PostgreSQL server on a loopback port, initialised into a temporary folder (user postgres, trust auth).

    Skips, naming what is missing, when PostgreSQL is not installed; with CI=true that fails instead.
    """
    binaries = _postgres_binaries()
    if binaries is None:
        message = "PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or on PATH)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    folder = tempfile.mkdtemp(prefix="mining-pg-")
    port = free_port()
    as_root = os.geteuid() == 0

    def run(*argv: str) -> None:
        command = " ".join(argv)
        full = ["su", "postgres", "-c", command] if as_root else ["sh", "-c", command]
        subprocess.run(full, check=True, capture_output=True, timeout=60)

    if as_root:  # initdb refuses to run as root: the server runs as the package's postgres user
        shutil.chown(folder, "postgres")
    data = os.path.join(folder, "data")
    run(f"{binaries}/initdb", "-D", data, "-A", "trust", "-U", "postgres")
    # the superuser needs no password; every other role must give its own (so a wrong one is refused)
    hba = "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
    Path(data, "pg_hba.conf").write_text(hba)  # root writes it in place; the server only reads it
    options = f"'-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off'"
    run(f"{binaries}/pg_ctl", "-D", data, "-o", options, "-l", os.path.join(folder, "log"), "-w", "start")
    yield {"host": "127.0.0.1", "port": port, "user": "postgres", "folder": folder}
    run(f"{binaries}/pg_ctl", "-D", data, "-m", "immediate", "stop")
    shutil.rmtree(folder, ignore_errors=True)


def psql(server: dict, sql: str, database: str = "postgres") -> None:
    """Run SQL on the test PostgreSQL server as its superuser."""
    import psycopg2

    conn = psycopg2.connect(host=server["host"], port=server["port"], user=server["user"], dbname=database)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()


def make_bucket(endpoint: str, name: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")  # fmt: skip
    s3.create_bucket(Bucket=name)


@pytest.fixture
def run_psql(postgres_server):
    """``run_psql(sql, database="postgres")`` on the test PostgreSQL server as its superuser."""
    return functools.partial(psql, postgres_server)


@pytest.fixture
def production_lake(postgres_server, s3_endpoint) -> Warehouse:
    """A lake as production runs it: a new catalog database in PostgreSQL, the data files in a new S3 bucket."""
    name = "lake_" + uuid.uuid4().hex[:10]
    psql(postgres_server, f"CREATE DATABASE {name}")
    make_bucket(s3_endpoint, name.replace("_", "-"))
    server = postgres_server
    yield Warehouse(
        catalog=f"postgres:dbname={name} host={server['host']} port={server['port']} user={server['user']}",
        data_path=f"s3://{name.replace('_', '-')}/lake/",
        s3_endpoint_url=s3_endpoint,
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
    )
    close_all()
    psql(postgres_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["embedded", "production"])
def lake(request, tmp_path) -> Warehouse:
    """Each warehouse test runs on both catalogs: the embedded lake and PostgreSQL + S3."""
    if request.param == "embedded":
        return lake_in(tmp_path / "data")
    return request.getfixturevalue("production_lake")


@pytest.fixture
def resources(tmp_path, media_server) -> dict:
    return {
        "blob_store": LocalBlobStore(root=str(tmp_path / "data" / "blobs")),
        "warehouse": lake_in(tmp_path / "data"),
        "youtube": YouTubeResource(search_url_template=media_server + "/search.html?q={query}", retries=0),
        # the sources a test does not point anywhere: no upload bucket, stock APIs without keys
        "uploads": UploadBucket.unconfigured(),
        "pexels": PexelsSource(),
        "unsplash": UnsplashSource(),
        "pixabay": PixabayPhotoSource(),
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


@pytest.fixture
def stubbed_s3(monkeypatch):
    """An S3 blob store whose client answers only what the test stubs (botocore's Stubber)."""
    import boto3
    from botocore.stub import Stubber
    from dagster_aws.s3 import S3Resource

    from resources.blob_store import S3BlobStore

    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
    client = boto3.client("s3", **credentials)
    monkeypatch.setattr(S3Resource, "get_client", lambda self: client)
    store = S3BlobStore(bucket="b", prefix="mining", s3=S3Resource(**credentials))
    with Stubber(client) as stubber:
        yield store, stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def gemini_server():
    """A local stand-in for Gemini's REST API on a free loopback port (``tests/gemini_support.py``)."""
    from gemini_support import GeminiServer

    server = GeminiServer(port=free_port()).start()
    yield server
    server.stop()
