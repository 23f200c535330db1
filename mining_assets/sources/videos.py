"""Videos from YouTube and other web pages: what a search or a URL names, and fetching one into the blob store."""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mining_assets.video.probe import probe_video
from resources.youtube import VideoCandidate, VideoSourceError, candidate_for_url

if TYPE_CHECKING:
    from resources.blob_store import BlobStore
    from resources.youtube import YouTubeResource

_SAFE_SUFFIX = re.compile(r"^\.[a-z0-9]{1,5}$")


def video_blob_key(media_id: str, suffix: str) -> str:
    """Videos are stored once per media id, so a video that several keywords find is stored once."""
    suffix = suffix.lower()
    return f"videos/{media_id}{suffix if _SAFE_SUFFIX.match(suffix) else '.video'}"


def youtube_candidates(
    keyword: str, search: bool, max_results: int, urls: list[str], youtube: YouTubeResource
) -> tuple[list[VideoCandidate], list[tuple[str, str]]]:
    """The videos a YouTube search and explicit URLs name (first occurrence of each media id wins), and the
    (item, reason) failures: a failed search under ``youtube search``, a URL that can't be read under its
    candidate's media id (the candidate is kept, so the registry shows what was asked for)."""
    found: list[VideoCandidate] = []
    errors: list[tuple[str, str]] = []
    if search:
        try:
            found += youtube.search(keyword, max_results)
        except VideoSourceError as error:
            errors.append(("youtube search", f"search failed: {error}"))
    for url in urls:
        try:
            found.append(youtube.describe(url))
        except VideoSourceError as error:
            candidate = candidate_for_url(url)
            found.append(candidate)
            errors.append((candidate.media_id, str(error)))
    unique: dict[str, VideoCandidate] = {}
    for candidate in found:
        unique.setdefault(candidate.media_id, candidate)
    return list(unique.values()), errors


def fetch_video(media_id: str, url: str, youtube: YouTubeResource, blob_store: BlobStore) -> dict:
    """Download one video, probe it and store it; return its ``media`` row fields.

    Raises:
        VideoSourceError, MediaError, OSError: the reason this video is not stored.
    """
    with tempfile.TemporaryDirectory(prefix="download-") as tmp:
        path = youtube.download(url, Path(tmp))
        probe = probe_video(path)
        key = video_blob_key(media_id, path.suffix)
        uri = blob_store.put_file(key, path)
    return {"media_type": "video", "blob_key": key, "uri": uri, **dataclasses.asdict(probe)}
