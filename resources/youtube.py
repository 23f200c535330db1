"""Video search and download through yt-dlp: YouTube by default, any page yt-dlp understands by URL.

Every yt-dlp call on YouTube (a search, a description, a download) takes a slot of the ``youtube`` request budget
(``resources.budgets``): shared through the warehouse by every run and machine when the resource is given one,
else by this process. Other sites are not paced: their limits are not YouTube's.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from resources.budgets import BudgetExceeded, SharedBudget
from resources.secrets import without_credentials
from resources.warehouse import Warehouse

_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")

# yt-dlp's wording for the usual ways a video goes missing, mapped to one short reason each.
_FAILURE_KINDS = (
    ("private video", "private"),
    ("sign in to confirm your age", "age-restricted"),
    ("available in your country", "geo-blocked"),
    ("geo restriction", "geo-blocked"),
    ("has been removed", "removed"),
    ("video unavailable", "removed or unavailable"),
    ("http error 404", "not found (HTTP 404)"),
    ("http error 403", "forbidden (HTTP 403)"),
    ("http error 429", "rate limited (HTTP 429)"),
    ("unsupported url", "not a video page"),
    ("failed to resolve", "network unreachable"),
    ("requested format is not available", "no downloadable video format"),
    ("bytes read", "cut off"),  # "Got error: 11975 bytes read, 11976 more expected": the server closed mid-file
)
# what yt-dlp leaves of a download that did not finish: never a video
_PARTIAL_SUFFIXES = (".part", ".ytdl", ".temp")


class VideoSourceError(Exception):
    """A search or download that failed, with a short kind and yt-dlp's message."""


def describe_failure(message: str) -> str:
    """A recorded reason: the failure kind yt-dlp's message points to, then the message itself."""
    text = re.sub(r"^(ERROR:\s*)+", "", str(message).strip())
    text = without_credentials(text)
    lowered = text.lower()
    kind = next((kind for needle, kind in _FAILURE_KINDS if needle in lowered), "download failed")
    return f"{kind}: {text[:500]}"


@dataclass(frozen=True)
class VideoCandidate:
    """A video found by a search or named by URL, before download."""

    media_id: str
    source: str
    url: str
    title: str | None = None
    channel: str | None = None
    duration_s: float | None = None


def _is_youtube(extractor: str | None) -> bool:
    return bool(extractor) and extractor.lower().startswith("youtube")


def youtube_id(url: str) -> str | None:
    """The video id in a YouTube watch, short-link or Shorts URL, else None."""
    parsed = urllib.parse.urlparse(url)
    host = (parsed.hostname or "").lower().removeprefix("www.").removeprefix("m.")
    if host == "youtu.be":
        candidate = parsed.path.strip("/")
    elif host == "youtube.com" and parsed.path == "/watch":
        candidate = urllib.parse.parse_qs(parsed.query).get("v", [""])[0]
    elif host == "youtube.com" and parsed.path.startswith("/shorts/"):
        candidate = parsed.path.removeprefix("/shorts/").strip("/")
    else:
        return None
    return candidate if _YOUTUBE_ID.match(candidate) else None


def is_youtube_target(target: str) -> bool:
    """Whether a yt-dlp target asks YouTube: a ``ytsearch`` query or a youtube.com / youtu.be URL."""
    if target.startswith("ytsearch"):
        return True
    host = (urllib.parse.urlparse(target).hostname or "").lower()
    return host in ("youtu.be", "youtube.com") or host.endswith(".youtube.com")


def media_id_for_url(url: str, extractor: str | None = None, video_id: str | None = None) -> str:
    """A stable, path-safe id: ``youtube-<id>`` for YouTube, else ``web-<hash of the URL>``.

    A YouTube URL gives the same id whether or not yt-dlp could read it, so a video that failed once and is
    found later is still one registry row.
    """
    if not (_is_youtube(extractor) and video_id and _YOUTUBE_ID.match(video_id)):
        video_id = youtube_id(url)
    if video_id:
        return f"youtube-{video_id}"
    return "web-" + hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def candidate_for_url(url: str) -> VideoCandidate:
    """What is known of a URL before yt-dlp has read it."""
    media_id = media_id_for_url(url)
    return VideoCandidate(media_id, "youtube" if media_id.startswith("youtube-") else "web", url)


class _QuietLogger:
    """Keeps yt-dlp off stdout; its errors reach us as exceptions."""

    def debug(self, msg: str) -> None:
        pass

    info = warning = error = debug


class YouTubeResource(dg.ConfigurableResource):
    """Searches and downloads videos with yt-dlp.

    ``search_url_template`` replaces YouTube search with a results page yt-dlp can read (``{query}`` is filled
    in, URL-quoted), e.g. ``https://www.youtube.com/results?search_query={query}`` or a local test page.

    YouTube's pace: at most ``requests_per_period`` yt-dlp calls on YouTube in any ``period_s`` seconds (YouTube
    publishes no limit for pages; this keeps a backfill from looking like a scraper), shared by every run and
    machine through ``warehouse`` when it is set. A call whose slot is more than ``max_pace_wait_s`` away fails
    with a "rate limited" reason instead of stalling the run.
    """

    search_url_template: str | None = None
    max_height: int = 720
    socket_timeout_s: float = 30.0
    retries: int = 3
    max_filesize_mb: int = 4096
    requests_per_period: int = 30
    period_s: float = 60.0
    max_pace_wait_s: float = 600.0
    warehouse: Warehouse | None = None  # where the pace is shared; None: this process only

    def _options(self, **extra) -> dict:
        return {
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "logger": _QuietLogger(),
            "socket_timeout": self.socket_timeout_s,
            "retries": self.retries,
            **extra,
        }

    def budget(self) -> SharedBudget:
        """YouTube's request budget: in the warehouse when the resource has one, else this process's."""
        return SharedBudget("youtube", self.requests_per_period, self.period_s, warehouse=self.warehouse)

    def _pace(self, target: str) -> None:
        if not is_youtube_target(target):
            return
        try:
            self.budget().acquire(max_wait=self.max_pace_wait_s)
        except BudgetExceeded as error:
            raise VideoSourceError(f"rate limited (YouTube pace): {error}") from None

    def _extract(self, target: str, download: bool = False, **options) -> dict:
        from yt_dlp import YoutubeDL
        from yt_dlp.utils import YoutubeDLError

        self._pace(target)
        try:
            with YoutubeDL(self._options(**options)) as ydl:
                return ydl.sanitize_info(ydl.extract_info(target, download=download))
        except YoutubeDLError as error:
            reason = describe_failure(str(error))
        # raised outside the except block: yt-dlp's own error, which may quote a URL's password, is not chained
        raise VideoSourceError(reason)

    def search(self, query: str, max_results: int) -> list[VideoCandidate]:
        """Up to max_results videos for a query, in the order the search returned them."""
        if max_results <= 0:
            return []
        if self.search_url_template:
            target = self.search_url_template.format(query=urllib.parse.quote_plus(query))
        else:
            target = f"ytsearch{max_results}:{query}"
        info = self._extract(target, extract_flat="in_playlist", playlistend=max_results)
        entries = info.get("entries") if info.get("_type") == "playlist" else [info]
        return [self._candidate(entry) for entry in (entries or [])[:max_results] if entry]

    def describe(self, url: str) -> VideoCandidate:
        """Metadata for one URL without downloading it."""
        return self._candidate(self._extract(url, noplaylist=True), fallback_url=url)

    def _candidate(self, entry: dict, fallback_url: str | None = None) -> VideoCandidate:
        # a search entry's "url" is the video itself (a watch page, or the media file of a <video> tag), while
        # its "webpage_url" may be the results page it was found on
        url = fallback_url or entry.get("url") or entry.get("webpage_url") or entry.get("original_url")
        if not url:
            raise VideoSourceError(f"search result without a URL: {entry.get('id')!r}")
        extractor = entry.get("ie_key") or entry.get("extractor_key") or entry.get("extractor")
        is_youtube = _is_youtube(extractor)
        if is_youtube and entry.get("id"):
            url = f"https://www.youtube.com/watch?v={entry['id']}"
        duration = entry.get("duration")
        return VideoCandidate(
            media_id=media_id_for_url(url, extractor, entry.get("id")),
            source="youtube" if is_youtube else "web",
            url=url,
            title=entry.get("title"),
            channel=entry.get("channel") or entry.get("uploader"),
            duration_s=float(duration) if duration else None,
        )

    def download(self, url: str, dest_dir: Path) -> Path:
        """Download one video (video stream only, height capped at max_height) into dest_dir; return its path."""
        cap = self.max_height
        options = {
            # H.264 first: it decodes fastest; audio is never needed for frames, so no merge (and no ffmpeg)
            "format": f"bv*[height<=?{cap}][vcodec^=avc1]/bv*[height<=?{cap}]/b[height<=?{cap}]/wv*/w",
            "outtmpl": str(Path(dest_dir) / "video.%(ext)s"),
            "noplaylist": True,
            "overwrites": True,
            "max_filesize": self.max_filesize_mb * 1024 * 1024,
        }
        info = self._extract(url, download=True, **options)
        downloads = info.get("requested_downloads") or []
        paths = [Path(d["filepath"]) for d in downloads if d.get("filepath")]
        paths = [p for p in paths if p.is_file()] or [
            p for p in Path(dest_dir).glob("video.*") if p.is_file() and p.suffix not in _PARTIAL_SUFFIXES
        ]
        if not paths:
            raise VideoSourceError("download failed: yt-dlp finished without writing a file")
        return paths[0]
