"""Stream frames out of a video: every N frames, every S seconds, or keyframes only.

Decoding is sequential and streaming: one decoded frame at a time is held (plus the decoder's own threads'
frames), so memory does not grow with the length of the video. Only the frames that are kept are converted
to RGB, the one costly step beyond decoding.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mining_assets.video.probe import MediaError

Strategy = Literal["interval", "time", "keyframes"]
STRATEGIES: tuple[str, ...] = ("interval", "time", "keyframes")


@dataclass(frozen=True)
class SampledFrame:
    """One kept frame: its presentation index, its time from the start of the video, and RGB pixels (HxWx3)."""

    index: int
    timestamp_s: float
    image: np.ndarray


class SamplingError(MediaError):
    """Decoding stopped part-way; ``frames_read`` frames were decoded before it did."""

    def __init__(self, message: str, frames_read: int):
        super().__init__(message)
        self.frames_read = frames_read


def sample_frames(
    path: str | os.PathLike,
    strategy: Strategy = "time",
    every_n_frames: int = 30,
    every_s: float = 1.0,
    max_frames: int | None = None,
) -> Iterator[SampledFrame]:
    """Yield the frames a strategy keeps, in presentation order.

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
    import av

    if strategy not in STRATEGIES:
        raise ValueError(f"unknown sampling strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if strategy == "interval" and every_n_frames < 1:
        raise ValueError("every_n_frames must be at least 1")
    if strategy == "time" and not every_s > 0:
        raise ValueError("every_s must be positive")
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
        stream.thread_type = "AUTO"
        if strategy == "keyframes":
            stream.codec_context.skip_frame = "NONKEY"
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
            if frame.pts is not None and time_base:
                timestamp = (frame.pts - start_pts) * time_base
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
            yield SampledFrame(index=index, timestamp_s=round(timestamp, 6), image=frame.to_ndarray(format="rgb24"))
            kept += 1
            if max_frames is not None and kept >= max_frames:
                return
