import http.server
import threading

import pytest

from mining_assets.sources.videos import fetch_video
from resources.blob_store import LocalBlobStore
from resources.warehouse import Warehouse
from resources.youtube import (
    VideoSourceError,
    YouTubeResource,
    describe_failure,
    is_youtube_target,
    media_id_for_url,
)


@pytest.fixture
def youtube(media_server):
    return YouTubeResource(search_url_template=media_server + "/search.html?q={query}", retries=0)


def test_search_finds_each_video_on_the_results_page(youtube, media_server):
    found = youtube.search('glass "door" <b>', max_results=5)
    assert [c.url for c in found] == [f"{media_server}/clip_h264.mp4", f"{media_server}/clip_mp4v.mp4"]
    assert len({c.media_id for c in found}) == 2
    assert youtube.search("door", max_results=1)[0].url.endswith("clip_h264.mp4")
    assert youtube.search("door", max_results=0) == []


def test_search_with_no_results(media_server):
    empty = YouTubeResource(search_url_template=media_server + "/empty_search.html?q={query}", retries=0)
    with pytest.raises(VideoSourceError, match="not a video page"):
        empty.search("door", 3)


def test_failed_search_names_the_cause(media_server):
    broken = YouTubeResource(search_url_template=media_server + "/gone?q={query}", retries=0)
    with pytest.raises(VideoSourceError, match=r"not found \(HTTP 404\)"):
        broken.search("door", 3)


def test_describe_keeps_the_page_url(youtube, media_server):
    candidate = youtube.describe(media_server + "/one.html")
    assert candidate.url == media_server + "/one.html" and candidate.title.startswith("A door")


@pytest.mark.parametrize("page", ["clip_mp4v.mp4", "one.html"])
def test_download_direct_file_and_video_tag(youtube, media_server, media_dir, tmp_path, page):
    path = youtube.download(f"{media_server}/{page}", tmp_path)
    assert path.parent == tmp_path and path.stat().st_size > 0
    source = "clip_mp4v.mp4" if page.endswith(".mp4") else "clip_h264.mp4"
    assert path.read_bytes() == (media_dir / source).read_bytes()


def test_download_404(youtube, media_server, tmp_path):
    with pytest.raises(VideoSourceError, match=r"not found \(HTTP 404\)"):
        youtube.download(media_server + "/removed.mp4", tmp_path)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader", "removed"),
        ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access", "private"),
        ("ERROR: [youtube] abc: The uploader has not made this video available in your country", "geo-blocked"),
        ("ERROR: [youtube] abc: Video unavailable", "removed or unavailable"),
        ("ERROR: something new", "download failed"),
    ],
)
def test_failure_reasons(message, kind):
    assert describe_failure(message).startswith(kind + ": ")
    assert "ERROR:" not in describe_failure(message)


def test_media_ids_are_safe_and_stable():
    assert media_id_for_url("https://www.youtube.com/watch?v=dQw4w9WgXcQ", "Youtube", "dQw4w9WgXcQ") == (
        "youtube-dQw4w9WgXcQ"
    )
    weird = media_id_for_url("https://x/../../etc?<b>", "Youtube", "../../etc")
    assert weird.startswith("web-") and weird == media_id_for_url("https://x/../../etc?<b>")


def test_youtube_search_asks_ytsearch_and_reads_flat_entries(monkeypatch):
    asked = {}

    def fake_extract(self, target, download=False, **options):
        asked.update(target=target, download=download, **options)
        return {
            "_type": "playlist",
            "entries": [
                {"_type": "url", "ie_key": "Youtube", "id": "dQw4w9WgXcQ", "url": "https://youtu.be/dQw4w9WgXcQ",
                 "title": "Doors", "channel": "Glass Co", "duration": 212},
                {"_type": "url", "ie_key": "Youtube", "id": "abcdefghijk", "url": "https://youtu.be/abcdefghijk",
                 "title": "More doors", "uploader": "Someone", "duration": None},
            ],
        }  # fmt: skip

    monkeypatch.setattr(YouTubeResource, "_extract", fake_extract)
    found = YouTubeResource().search("glass door", max_results=2)
    assert asked["target"] == "ytsearch2:glass door" and asked["download"] is False
    assert asked["extract_flat"] == "in_playlist"
    first, second = found
    assert (first.media_id, first.source, first.url) == (
        "youtube-dQw4w9WgXcQ",
        "youtube",
        "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
    )
    assert (first.title, first.channel, first.duration_s) == ("Doors", "Glass Co", 212.0)
    assert (second.channel, second.duration_s) == ("Someone", None)


@pytest.mark.parametrize(
    "url",
    [
        "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42",
        "https://youtu.be/dQw4w9WgXcQ",
        "https://m.youtube.com/watch?v=dQw4w9WgXcQ",
        "https://youtube.com/shorts/dQw4w9WgXcQ",
    ],
)
def test_a_youtube_url_has_one_id_whether_or_not_it_could_be_read(url):
    from resources.youtube import candidate_for_url

    read = media_id_for_url("https://www.youtube.com/watch?v=dQw4w9WgXcQ", "Youtube", "dQw4w9WgXcQ")
    assert media_id_for_url(url) == read == "youtube-dQw4w9WgXcQ"
    assert candidate_for_url(url).source == "youtube"


@pytest.mark.parametrize(
    "url", ["https://example.com/watch?v=dQw4w9WgXcQ", "https://youtu.be/short", "https://www.youtube.com/@channel"]
)
def test_other_urls_are_web_media(url):
    from resources.youtube import candidate_for_url

    assert media_id_for_url(url).startswith("web-") and candidate_for_url(url).source == "web"


@pytest.mark.parametrize(
    ("target", "paced"),
    [
        ("ytsearch5:glass door", True),
        ("https://www.youtube.com/watch?v=dQw4w9WgXcQ", True),
        ("https://m.youtube.com/watch?v=dQw4w9WgXcQ", True),
        ("https://youtu.be/dQw4w9WgXcQ", True),
        ("http://127.0.0.1:8000/search.html?q=door", False),
        ("https://notyoutube.com/watch?v=dQw4w9WgXcQ", False),
    ],
)
def test_only_youtube_is_paced(target, paced):
    assert is_youtube_target(target) is paced


class _FakeYoutubeDL:
    """yt-dlp's YoutubeDL answering every extraction with one video, offline."""

    def __init__(self, options):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def extract_info(self, target, download=False):
        return {"_type": "url", "ie_key": "Youtube", "id": "dQw4w9WgXcQ", "url": "https://youtu.be/dQw4w9WgXcQ"}

    def sanitize_info(self, info):
        return info


def test_youtube_calls_take_slots_of_the_pace_shared_through_the_warehouse(monkeypatch, tmp_path, media_server):
    """Two resources on one lake share YouTube's pace: once the first has used it up, the second's call fails with
    a "rate limited" reason instead of stalling; a local page is never paced."""
    import yt_dlp

    lake = Warehouse(catalog=f"sqlite:{tmp_path}/lake/catalog.sqlite", data_path=f"{tmp_path}/lake/data/")
    pace = {"requests_per_period": 2, "period_s": 3600.0, "max_pace_wait_s": 5.0}
    first, second = YouTubeResource(warehouse=lake, **pace), YouTubeResource(warehouse=lake.model_copy(), **pace)
    with monkeypatch.context() as patched:
        patched.setattr(yt_dlp, "YoutubeDL", _FakeYoutubeDL)
        assert first.search("glass door", 1)[0].media_id == "youtube-dQw4w9WgXcQ"
        assert first.describe("https://www.youtube.com/watch?v=dQw4w9WgXcQ").source == "youtube"
        with pytest.raises(VideoSourceError, match=r"rate limited \(YouTube pace\): request budget used up"):
            second.search("glass door", 1)
    assert lake.query_dicts("SELECT api, len(slots) AS used FROM api_budgets") == [{"api": "youtube", "used": 2}]
    local = YouTubeResource(search_url_template=media_server + "/search.html?q={query}", retries=0, warehouse=lake,
                            **pace)  # fmt: skip
    assert len(local.search("door", 2)) == 2


class _CutOff(http.server.BaseHTTPRequestHandler):
    """Serves ``body`` as an .mp4 but closes the connection halfway: after a Content-Length that promised all of it,
    or in the middle of a chunk of a chunked reply."""

    body = b""

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        half = self.body[: len(self.body) // 2]
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        if "chunked" in self.path:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n" % len(self.body) + half)
        else:
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(half)
        self.close_connection = True


@pytest.fixture
def cut_off_server(media_dir):
    _CutOff.body = (media_dir / "clip_mp4v.mp4").read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CutOff)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/clip.mp4", "/chunked/clip.mp4"], ids=["content-length", "chunked"])
@pytest.mark.parametrize("retries", [0, 1])
def test_a_download_cut_off_is_the_videos_failure_and_nothing_is_stored(cut_off_server, tmp_path, path, retries):
    youtube = YouTubeResource(retries=retries)
    with pytest.raises(VideoSourceError, match=r"^cut off: .*bytes read") as caught:
        youtube.download(cut_off_server + path, tmp_path / "direct")
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert not [p for p in (tmp_path / "direct").iterdir() if p.suffix != ".part"]  # only yt-dlp's partial file
    store = LocalBlobStore(root=str(tmp_path / "blobs"))
    with pytest.raises(VideoSourceError, match="cut off"):
        fetch_video("web-0123456789abcdef", cut_off_server + path, youtube, store)
    assert store.list_keys("videos") == []


def test_a_partial_file_is_never_taken_for_the_download(monkeypatch, tmp_path):
    import yt_dlp

    class _LeavesAPart(_FakeYoutubeDL):
        def extract_info(self, target, download=False):
            (tmp_path / "video.mp4.part").write_bytes(b"half a video")
            return {"id": "x", "url": target}

    monkeypatch.setattr(yt_dlp, "YoutubeDL", _LeavesAPart)
    with pytest.raises(VideoSourceError, match="finished without writing a file"):
        YouTubeResource().download("http://127.0.0.1:9/clip.mp4", tmp_path)


def test_a_url_password_in_yt_dlps_message_is_masked():
    reason = describe_failure("ERROR: Unsupported URL: https://robot:s3cret-pw@videos.example/x.html")
    assert reason == "not a video page: Unsupported URL: https://***@videos.example/x.html"
