"""Synthetic media with known content, for tests, benchmarks and demos.

Every video frame carries its own index as a 16-bit barcode in the top-left corner, so a test can check that
the sampler returned exactly the frames it claims, whatever the codec.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

_BITS = 16
_CELL = 16


def _frame_image(index: int, width: int, height: int, base: np.ndarray) -> np.ndarray:
    image = np.roll(base, shift=(index * 3) % width, axis=1)
    image[: _CELL * 2, : _CELL * _BITS] = 0
    for bit in range(_BITS):
        if (index >> bit) & 1:
            image[: _CELL * 2, bit * _CELL : (bit + 1) * _CELL] = 255
    return image


def read_frame_index(image: np.ndarray) -> int:
    """Read back the index that make_video drew into an RGB frame."""
    value = 0
    for bit in range(_BITS):
        cell = image[4 : _CELL * 2 - 4, bit * _CELL + 4 : (bit + 1) * _CELL - 4]
        if cell.mean() > 127:
            value |= 1 << bit
    return value


def make_video(
    path: str | os.PathLike,
    frames: int = 90,
    fps: int = 30,
    size: tuple[int, int] = (320, 240),
    codec: str = "h264",
    gop: int = 30,
    preset: str = "ultrafast",
    faststart: bool = False,
) -> Path:
    """Write a video whose frame i shows barcode i.

    Args:
        codec: ``h264`` (libx264, keyframes exactly every ``gop`` frames) or ``mp4v`` (MPEG-4 Part 2).
        preset: x264 preset; ``veryfast`` and slower use B-frames like real uploads.
        faststart: put the index (moov) first, so that a truncated file still opens.
    """
    import av

    path = Path(path)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)), (xx + yy) % 256], axis=-1)
    base = base.astype(np.uint8)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        if codec == "h264":
            stream = container.add_stream("libx264", rate=fps)
            stream.options = {"preset": preset, "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        elif codec == "mp4v":
            stream = container.add_stream("mpeg4", rate=fps)
            stream.codec_context.gop_size = gop
        else:
            raise ValueError(f"unknown codec {codec!r}")
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(_frame_image(index, width, height, base.copy()), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def make_audio_only(path: str | os.PathLike, seconds: float = 1.0, rate: int = 44100) -> Path:
    """Write an AAC-in-MP4 file with a tone and no video stream."""
    import av

    path = Path(path)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        samples = np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate).astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = samples[start : start + 1024]
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
            frame.rate = rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def truncate(path: str | os.PathLike, keep_fraction: float = 0.5) -> Path:
    """Cut a file to a fraction of its size, as an interrupted download leaves it."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path
