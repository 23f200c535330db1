"""The stock-photo clients against a scripted local server: their JSON shapes, paging, pacing (one budget per API
shared by every run through the warehouse), and every failure turned into a reason that names the key's variable
but never holds the key."""

import http.server
import json
import multiprocessing
import re
import socket
import struct
import threading
import time
import urllib.parse
from typing import ClassVar

import dagster as dg
import pytest

from resources.stock_photos import (
    PexelsSource,
    PixabayPhotoSource,
    StockPhotoError,
    UnsplashSource,
    retry_after_seconds,
)
from resources.warehouse import Warehouse

SECRET = "k3y-s3cret-value"


CUT = "cut"  # a scripted reply's pseudo-header: how the transfer breaks off (see _Script.do_GET)


class _Script(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next scripted (status, headers, body) and logs what was asked."""

    replies: list[tuple[int, dict, bytes]] = []
    requests: list[tuple[str, dict]] = []

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        type(self).requests.append((self.path, dict(self.headers)))
        status, headers, body = type(self).replies.pop(0) if type(self).replies else (404, {}, b"")
        headers = dict(headers)
        cut = headers.pop(CUT, None)
        if cut == "silence":  # the connection closes before any reply
            self.close_connection = True
            return
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if cut == "chunked":  # a chunk announced whole, then the connection closes halfway through it
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n" % len(body) + body[: len(body) // 2])
        else:  # "length": a Content-Length that promises twice what is sent; "reset": a reset after half the body
            self.send_header("Content-Length", str(len(body) * (2 if cut == "length" else 1)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if cut == "reset" else body)
        if cut == "reset":
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        self.close_connection = bool(cut)


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    """Every source's key in its own variable, as production sets it (a key is never configuration)."""
    for variable in ("PEXELS_API_KEY", "UNSPLASH_ACCESS_KEY", "PIXABAY_API_KEY"):
        monkeypatch.setenv(variable, SECRET)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Script)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _Script.replies, _Script.requests = [], []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def reply(payload, status=200, **headers) -> tuple[int, dict, bytes]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return status, {"Content-Type": "application/json", **headers}, body


def pexels_page(ids, total):
    return {
        "page": 1, "per_page": len(ids), "total_results": total,
        "photos": [{"id": i, "url": f"https://www.pexels.com/photo/{i}/", "photographer": "A", "alt": "door",
                    "photographer_url": "https://www.pexels.com/@a", "width": 640, "height": 480,
                    "src": {"original": f"https://images.pexels.com/{i}.jpg", "large2x": f"https://i/{i}-l.jpg"}}
                   for i in ids],
    }  # fmt: skip


def unique_limit() -> int:
    """Clients of one source share a limiter per (limit, period): tests use their own to stay independent."""
    unique_limit.n = getattr(unique_limit, "n", 1000) + 1
    return unique_limit.n


def client(kind, base, **kwargs):
    return kind(base_url=base, requests_per_period=unique_limit(), backoff_s=0.01, **kwargs)


class SmallPagesPexels(PexelsSource):
    max_per_page: ClassVar[int] = 3  # forces a second page


def test_pexels_pages_until_count_and_sends_the_key_as_authorization(server):
    _Script.replies = [reply(pexels_page([1, 2, 3], total=5)), reply(pexels_page([4, 5], total=5))]
    hits = client(SmallPagesPexels, server + "/v1").search("glass door", 5)
    assert [h.source_id for h in hits] == ["1", "2", "3", "4", "5"]
    assert hits[0].image_url == "https://i/1-l.jpg" and hits[0].license == "Pexels License"
    assert hits[0].page_url == "https://www.pexels.com/photo/1/" and hits[0].photographer == "A"
    path, headers = _Script.requests[0]
    query = urllib.parse.parse_qs(urllib.parse.urlparse(path).query)
    assert urllib.parse.urlparse(path).path == "/v1/search" and query["query"] == ["glass door"]
    assert headers["Authorization"] == SECRET and query["page"] == ["1"]
    assert urllib.parse.parse_qs(urllib.parse.urlparse(_Script.requests[1][0]).query)["page"] == ["2"]


def test_unsplash_and_pixabay_shapes(server):
    _Script.replies = [
        reply({"total": 1, "total_pages": 1, "results": [
            {"id": "Ab-1", "description": None, "alt_description": "a door", "width": 10, "height": 10,
             "urls": {"regular": "https://u/r.jpg", "full": "https://u/f.jpg"},
             "links": {"html": "https://unsplash.com/photos/Ab-1"},
             "user": {"name": "B", "links": {"html": "https://unsplash.com/@b"}}}]}),
        reply({"total": 1, "totalHits": 1, "hits": [
            {"id": 77, "pageURL": "https://pixabay.com/photos/door-77/", "tags": "door, glass",
             "webformatURL": "https://p/w.jpg", "largeImageURL": "https://p/l.jpg", "imageWidth": 10,
             "imageHeight": 10, "user": "C", "user_id": 9}]}),
    ]  # fmt: skip
    unsplash = client(UnsplashSource, server + "/unsplash").search("door", 30)
    assert _Script.requests[0][1]["Authorization"] == f"Client-ID {SECRET}"
    assert (unsplash[0].source_id, unsplash[0].description, unsplash[0].license) == (
        "Ab-1",
        "a door",
        "Unsplash License",
    )
    pixabay = client(PixabayPhotoSource, server + "/pixabay/").search("door", 30)
    assert pixabay[0].photographer_url == "https://pixabay.com/users/C-9/" and pixabay[0].image_url == "https://p/l.jpg"
    assert pixabay[0].license == "Pixabay Content License"


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        ([reply({"error": "bad key"}, status=401)], "HTTP 401: the API key was rejected; check PEXELS_API_KEY"),
        ([reply(b"", status=403)], "check PEXELS_API_KEY"),
        ([reply(b"{not json", status=200)], "malformed JSON reply"),
        ([reply(b"<html>maintenance</html>", status=200)], "malformed JSON reply"),
        ([reply({"photos": "nope"})], "unexpected reply shape"),
        ([reply({"unexpected": []})], "unexpected reply shape"),
        ([reply(b"", status=500)] * 4, "HTTP 500 (server error) after 4 attempts"),
        ([reply(b"", status=429, **{"Retry-After": "3600"})], "HTTP 429 (rate limited) after 1 attempts; retry "
                                                                "after 3600 s"),
    ],
)  # fmt: skip
def test_failures_become_reasons_without_the_key(server, replies, expected):
    _Script.replies = list(replies)
    with pytest.raises(StockPhotoError) as caught:
        client(PexelsSource, server + "/v1").search("door", 5)
    assert expected in str(caught.value)
    assert SECRET not in str(caught.value)


def test_pixabay_key_in_the_url_never_reaches_an_error(server):
    _Script.replies = [reply(b"", status=500)] * 4
    with pytest.raises(StockPhotoError) as caught:
        client(PixabayPhotoSource, server + "/pixabay/").search("door", 5)
    assert "key=" in _Script.requests[0][0]  # the key does travel in the query string...
    assert SECRET not in str(caught.value) and "key=" not in str(caught.value)  # ...but never into the reason


def test_a_short_retry_after_is_waited_out_and_the_search_goes_on(server):
    _Script.replies = [reply(b"", status=429, **{"Retry-After": "0"}), reply(pexels_page([1], total=1))]
    hits = client(PexelsSource, server + "/v1").search("door", 1)
    assert [h.source_id for h in hits] == ["1"] and len(_Script.requests) == 2


def test_a_transient_server_error_is_retried(server):
    _Script.replies = [reply(b"", status=502), reply(pexels_page([1], total=1))]
    assert len(client(PexelsSource, server + "/v1").search("door", 1)) == 1


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("UNSPLASH_ACCESS_KEY", raising=False)
    with pytest.raises(StockPhotoError, match="no API key: set UNSPLASH_ACCESS_KEY"):
        UnsplashSource(base_url="http://127.0.0.1:9").search("door", 1)


def test_downloads_report_http_status_and_refuse_other_schemes(server):
    source = client(PexelsSource, server)
    _Script.replies = [(200, {"Content-Type": "image/jpeg"}, b"\xff\xd8bytes")]
    assert source.download(server + "/img/1.jpg") == b"\xff\xd8bytes"
    with pytest.raises(StockPhotoError, match="HTTP 404"):
        source.download(server + "/img/missing.jpg")
    with pytest.raises(StockPhotoError, match="not an http"):
        source.download("file:///etc/passwd")


def test_a_search_past_its_budget_fails_with_the_reason_instead_of_stalling(server):
    _Script.replies = [reply(pexels_page([1], total=1))]
    source = PexelsSource(base_url=server + "/v1", requests_per_period=1, period_s=3599.0,
                          max_retry_wait_s=5.0)  # fmt: skip
    assert len(source.search("door", 1)) == 1
    with pytest.raises(StockPhotoError, match="pexels search page 1: request budget used up: next request allowed in"):
        source.search("door", 1)
    assert len(_Script.requests) == 1


@pytest.mark.parametrize(
    ("header", "seconds"), [(None, 5.0), ("", 5.0), ("12", 12.0), ("soon", 5.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)]
)
def test_retry_after_header(header, seconds):
    assert retry_after_seconds(header, default=5.0) == seconds


class _Clocked(http.server.BaseHTTPRequestHandler):
    """A Pexels search API that notes when each request arrived and answers one photo."""

    arrivals: list[tuple[float, str]] = []

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["query"][0]
        type(self).arrivals.append((time.time(), query))
        body = json.dumps(pexels_page([len(type(self).arrivals)], total=1)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def settings_of(warehouse: Warehouse) -> dict:
    """A warehouse's settings, to rebuild it in another process (resources don't pickle)."""
    return {name: getattr(warehouse, name) for name in Warehouse.model_fields}


# the margin is the room each request has to reach the server late after its slot (the reservation's commit)
BUDGET = {"requests_per_period": 6, "period_s": 3.0, "budget_margin_s": 2.0}


def _backfill_run(base: str, settings: dict | None, run: str, barrier, queue) -> None:
    """One run of a backfill: six stock searches of its own keywords, through the run's own clients."""
    warehouse = Warehouse(**settings) if settings else None
    pexels = PexelsSource(base_url=base, warehouse=warehouse, **BUDGET)
    try:
        if warehouse is not None:
            warehouse.execute("SELECT 1")  # attached before the start, so that the two runs overlap
        barrier.wait(timeout=120)
        queue.put(("ok", sum(len(pexels.search(f"{run}-{i}", 1)) for i in range(6))))
    except Exception as error:  # reported to the parent, which fails the test with it
        queue.put(("error", f"{type(error).__name__}: {error}"))


def most_in_any_window(times: list[float], period_s: float) -> int:
    """The largest number of times in one half-open window [t, t + period_s)."""
    ordered = sorted(times)
    return max(sum(1 for u in ordered[i:] if u < t + period_s) for i, t in enumerate(ordered))


@pytest.mark.parametrize("shared", [True, False], ids=["shared budget", "each run its own"])
def test_two_backfill_runs_at_once_stay_within_the_limit_together(tmp_path, shared):
    """Two runs search Pexels at once with a budget of 6 requests per 3 s. Sharing it through the warehouse, the
    API sees at most 6 of their 12 requests in any 3 s; each run with its own budget, it sees more (the check
    can fail)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Clocked)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _Clocked.arrivals = []
    lake = Warehouse(catalog=f"sqlite:{tmp_path}/lake/catalog.sqlite", data_path=f"{tmp_path}/lake/data/")
    lake.execute("SELECT 1")  # schema made before the runs start
    base = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(2), context.Queue()
    settings = settings_of(lake) if shared else None
    runs = [context.Process(target=_backfill_run, args=(base, settings, run, barrier, queue)) for run in "ab"]
    try:
        for run in runs:
            run.start()
        outcomes = [queue.get(timeout=240) for _ in runs]
        for run in runs:
            run.join(timeout=30)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert outcomes == [("ok", 6), ("ok", 6)]
    assert sorted(query[0] for _, query in _Clocked.arrivals) == ["a"] * 6 + ["b"] * 6
    busiest = most_in_any_window([arrived for arrived, _ in _Clocked.arrivals], BUDGET["period_s"])
    if shared:
        assert busiest <= BUDGET["requests_per_period"]
        assert lake.query_dicts("SELECT api FROM api_budgets") == [{"api": "pexels"}]
    else:
        assert busiest > BUDGET["requests_per_period"]


def test_a_run_shares_the_budget_through_its_nested_warehouse(server, tmp_path):
    """In a Dagster run the source's nested warehouse resource holds the budget: the run's request is a slot in
    the lake, which a client outside the run sees."""
    _Script.replies = [reply(pexels_page([1], total=1))]
    lake = Warehouse(catalog=f"sqlite:{tmp_path}/lake/catalog.sqlite", data_path=f"{tmp_path}/lake/data/")
    pexels = PexelsSource(base_url=server + "/v1", requests_per_period=1, period_s=3598.0,
                          warehouse=lake)  # fmt: skip

    @dg.asset
    def searched(pexels: PexelsSource) -> int:
        return len(pexels.search("door", 1))

    assert dg.materialize([searched], resources={"pexels": pexels, "warehouse": lake}).success
    assert len(_Script.requests) == 1
    outside = PexelsSource(base_url=server + "/v1", requests_per_period=1, period_s=3598.0,
                           warehouse=lake.model_copy())  # fmt: skip
    assert outside.budget().wait_time() > 3500


def cut_off(how: str, body: bytes = b"\xff\xd8" + b"j" * 4998) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "image/jpeg", CUT: how}, body


SOURCES = {"pexels": (PexelsSource, "/v1"), "unsplash": (UnsplashSource, "/unsplash"),
           "pixabay": (PixabayPhotoSource, "/pixabay/")}  # fmt: skip
BROKEN_OFF = {
    "length": r"cut off after 5000 of 10000 bytes \(IncompleteRead\)",  # all it sent of what it promised
    "chunked": r"cut off after \d+ bytes \(IncompleteRead\)",
    "reset": r"ConnectionResetError|cut off after|closed the connection",
    "silence": r"the server closed the connection without a reply \(RemoteDisconnected\)",
}


def assert_unchained(error: BaseException) -> None:
    """Nothing of urllib's travels with the error: neither as its cause nor as its context."""
    assert error.__cause__ is None and error.__context__ is None


@pytest.mark.parametrize("how", BROKEN_OFF)
@pytest.mark.parametrize("source", SOURCES)
def test_a_download_cut_off_is_retried_then_fails_with_the_reason(server, source, how):
    kind, _ = SOURCES[source]
    _Script.replies = [cut_off(how)] * 3
    with pytest.raises(StockPhotoError) as caught:
        client(kind, server, retries=2).download(server + "/img/1.jpg")
    assert str(caught.value).startswith(f"download {server}/img/1.jpg: ")
    assert re.search(BROKEN_OFF[how], str(caught.value)) and str(caught.value).endswith("gave up after 3 attempts")
    assert len(_Script.requests) == 3
    assert_unchained(caught.value)


def test_a_download_cut_off_once_succeeds_on_the_next_attempt(server):
    whole = b"\xff\xd8whole image"
    _Script.replies = [cut_off("length"), (200, {"Content-Type": "image/jpeg"}, whole)]
    assert client(PexelsSource, server).download(server + "/img/1.jpg") == whole


@pytest.mark.parametrize("how", ["length", "chunked"])
@pytest.mark.parametrize("source", SOURCES)
def test_a_search_page_cut_off_fails_the_search_with_the_reason(server, source, how):
    kind, path = SOURCES[source]
    status, headers, body = reply(pexels_page([1, 2], total=2))
    _Script.replies = [(status, {**headers, CUT: how}, body)] * 2
    with pytest.raises(StockPhotoError, match=rf"^{source} search page 1: cut off after .* 2 attempts$") as caught:
        client(kind, server + path, retries=1).search("door", 2)
    assert SECRET not in str(caught.value)
    assert_unchained(caught.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url", "not an http(s) image URL: 'not a url'"),
        ("ftp://x/1.jpg", "not an http(s) image URL: 'ftp://x/1.jpg'"),
        ("http://[bad/1.jpg", "not an http(s) image URL: 'http://[bad/1.jpg'"),
        ("http://127.0.0.1:abc/1.jpg", "not an http(s) image URL"),
        ("http://robot:pa55word@127.0.0.1:9/1.jpg", "not an http(s) image URL: 'http://***@127.0.0.1:9/1.jpg'"),
        ("http://127.0.0.1:{port}/a b.jpg", "InvalidURL: URL can't contain control characters"),
        ("https://127.0.0.1:{port}/1.jpg", "SSLError: [SSL"),  # TLS spoken to a plain HTTP server
        ("http://127.0.0.1:1/1.jpg", "ConnectionRefusedError"),
    ],
)
def test_a_malformed_or_unreachable_image_url_is_the_items_failure(server, url, expected):
    url = url.format(port=server.rsplit(":", 1)[1])
    with pytest.raises(StockPhotoError) as caught:
        client(PexelsSource, server).download(url)
    assert expected in str(caught.value) and "pa55word" not in str(caught.value)
    assert_unchained(caught.value)
    assert not _Script.requests  # none of these reached the server's HTTP handler
