"""Stream frames out of a video: every N frames, every S seconds, or keyframes only.

Decoding is sequential and streaming: one decoded frame at a time is held (plus the decoder's own threads'
frames), so memory does not grow with the length of the video. Frames that are not kept are never converted:
``select_frames`` hands over the kept frames as the decoder made them (YUV), and ``sample_frames`` converts
those alone to RGB, the one costly step beyond decoding.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from mining_assets.video.probe import MediaError

if TYPE_CHECKING:
    import av

Strategy = Literal["interval", "time", "keyframes"]
STRATEGIES: tuple[str, ...] = ("interval", "time", "keyframes")


@dataclass(frozen=True)
class SampledFrame:
    """One kept frame: its presentation index, its time from the start of the video, and RGB pixels (HxWx3)."""

    index: int
    timestamp_s: float
    image: np.ndarray


@dataclass(frozen=True)
class DecodedFrame:
    """One kept frame as the decoder made it: its presentation index, its time from the start of the video, and
    the decoded picture, converted only when asked (``to_ndarray``), on whatever thread asks."""

    index: int
    timestamp_s: float
    frame: av.VideoFrame

    @property
    def width(self) -> int:
        return self.frame.width

    @property
    def height(self) -> int:
        return self.frame.height

    def to_ndarray(self, pixel_format: str = "rgb24") -> np.ndarray:
        """The picture as an HxWx3 array (``rgb24`` or ``bgr24``), converted as the frame's colour tags say."""
        return self.frame.to_ndarray(format=pixel_format)


class SamplingError(MediaError):
    """Decoding stopped part-way; ``frames_read`` frames were decoded before it did."""

    def __init__(self, message: str, frames_read: int):
        super().__init__(message)
        self.frames_read = frames_read


def configure_decoder(stream: av.video.stream.VideoStream, strategy: Strategy) -> None:
    """Set the decoder up for a strategy: what ``select_frames`` decodes with, and what a benchmark compares.

    Every frame decodes for ``interval`` and ``time``, on frame threads. For ``keyframes`` the decoder skips
    the others (``skip_frame`` NONKEY) and runs slice threads: with frame threads every skipped packet is still
    handed to a thread and back, which made the whole decode about 3 times as long on a GOP of 300. An
    intra-only codec (MJPEG, ProRes) has nothing to skip and keeps its frame threads.
    """
    if strategy == "keyframes":
        stream.codec_context.skip_frame = "NONKEY"
        stream.thread_type = "AUTO" if stream.codec_context.codec.intra_only else "SLICE"
    else:
        stream.thread_type = "AUTO"


def _validate(strategy: str, every_n_frames: int, every_s: float) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown sampling strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if strategy == "interval" and every_n_frames < 1:
        raise ValueError("every_n_frames must be at least 1")
    if strategy == "time" and not every_s > 0:
        raise ValueError("every_s must be positive")


def select_frames(
    path: str | os.PathLike,
    strategy: Strategy = "time",
    every_n_frames: int = 30,
    every_s: float = 1.0,
    max_frames: int | None = None,
) -> Iterator[DecodedFrame]:
    """Yield the decoded frames a strategy keeps, in presentation order, without converting them.

    The frames stay valid after the generator moves on or ends, so they can be converted and encoded on other
    threads while the next ones decode. Arguments, selection and errors are those of ``sample_frames``.
    """
    import av

    _validate(strategy, every_n_frames, every_s)
    if max_frames is not None and max_frames <= 0:
        return

    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise MediaError(f"unreadable or truncated video container: {error}") from error
    with container:
        if not container.streams.video:
            raise MediaError("no video stream in the file")
        stream = container.streams.video[0]
        configure_decoder(stream, strategy)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        time_base = float(stream.time_base) if stream.time_base else 0.0
        start_pts = stream.start_time or 0

        kept = 0
        decoded = 0
        next_time = 0.0
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except av.FFmpegError as error:
                raise SamplingError(f"decoding stopped after {decoded} frames: {error}", decoded) from error
            position = decoded
            decoded += 1
            pts = frame.pts
            if pts is not None and time_base:
                timestamp = (pts - start_pts) * time_base
            else:
                timestamp = position / fps if fps else 0.0
            if strategy == "interval":
                if position % every_n_frames:
                    continue
                index = position
            elif strategy == "time":
                # a small tolerance absorbs rounding of timestamps (e.g. 1/30 s steps)
                if timestamp + 1e-6 < next_time:
                    continue
                next_time = (math.floor(timestamp / every_s + 1e-6) + 1) * every_s
                index = position
            else:
                index = round(timestamp * fps) if fps else position
            yield DecodedFrame(index=index, timestamp_s=round(timestamp, 6), frame=frame)
            kept += 1
            if max_frames is not None and kept >= max_frames:
                return


def sample_frames(
    path: str | os.PathLike,
    strategy: Strategy = "time",
    every_n_frames: int = 30,
    every_s: float = 1.0,
    max_frames: int | None = None,
) -> Iterator[SampledFrame]:
    """Yield the frames a strategy keeps, in presentation order, as RGB arrays.

    Args:
        path: a local video file.
        strategy: ``interval`` keeps frames 0, N, 2N ...; ``time`` keeps the first frame at or after 0, S, 2S ...
            seconds; ``keyframes`` keeps I-frames only and skips decoding the others.
        every_n_frames: N for ``interval``.
        every_s: S for ``time``.
        max_frames: stop after this many kept frames (None: no cap).

    Raises:
        ValueError: unknown strategy or a non-positive step.
        MediaError: the file can't be opened or has no video stream.
        SamplingError: decoding failed part-way (frames yielded before it are valid).
    """
    for kept in select_frames(path, strategy, every_n_frames, every_s, max_frames):
        yield SampledFrame(index=kept.index, timestamp_s=kept.timestamp_s, image=kept.to_ndarray("rgb24"))
