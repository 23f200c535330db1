"""Probe a video file: is it a video at all, and what are its duration, frame rate, size and codec."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


class MediaError(Exception):
    """A file that can't be used as a video; the message is the reason recorded for it."""


@dataclass(frozen=True)
class VideoProbe:
    duration_s: float
    fps: float
    frame_count: int
    width: int
    height: int
    codec: str
    size_bytes: int
    sha256: str


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # a multi-byte character cut at the end of the sample is still text
        if error.start < len(head) - 4:
            return False
    return True


def probe_video(path: str | os.PathLike) -> VideoProbe:
    """Open a video and decode its first frame.

    Raises:
        MediaError: empty file, text or HTML, unreadable or truncated container, no video stream (audio only),
            or no decodable frame.
    """
    import av

    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise MediaError("empty file (0 bytes)")
    with open(path, "rb") as handle:
        head = handle.read(512)
    if _looks_like_text(head):
        kind = "an HTML page" if b"<html" in head.lower() or b"<!doctype" in head.lower() else "text"
        raise MediaError(f"not a video: the file holds {kind}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise MediaError(f"unreadable or truncated video container: {error}") from error
    with container:
        if not container.streams.video:
            if container.streams.audio:
                raise MediaError("audio only: the file has no video stream")
            raise MediaError("no video stream in the file")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / 1_000_000
        frame_count = stream.frames or (round(duration * fps) if fps else 0)
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as error:
            raise MediaError(f"video stream does not decode: {error}") from error
        if first is None:
            raise MediaError("video stream has no decodable frame (truncated?)")
        return VideoProbe(
            duration_s=duration,
            fps=fps,
            frame_count=int(frame_count),
            width=stream.codec_context.width or first.width,
            height=stream.codec_context.height or first.height,
            codec=stream.codec_context.name,
            size_bytes=size,
            sha256=file_sha256(path),
        )
