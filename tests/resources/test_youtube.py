import pytest

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
