"""Stored frames are the right pictures: JPEGs made straight from decoded frames match a reference RGB conversion,
keep their size and orientation, and keep black black and white white whether the video is limited or full range."""

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from mining_assets.video.frames import FrameSamplingConfig, encode_frame_jpeg, encode_jpeg, extract_video_frames
from mining_assets.video.sampling import sample_frames, select_frames
from mining_assets.video.synthetic import make_video, read_frame_index
from resources.blob_store import LocalBlobStore

# colour blocks (top-left, top-right, bottom-left, bottom-right) with a yellow mark in the top-left corner
BLOCKS = {"black": (0, 0, 0), "white": (255, 255, 255), "red": (220, 30, 40), "green": (30, 200, 90)}


def decode_jpeg(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def extract(path, tmp_path, **settings) -> tuple[list[dict], LocalBlobStore]:
    store = LocalBlobStore(root=str(tmp_path / "blobs"))
    config = FrameSamplingConfig(max_frames_per_video=0, **settings)
    with ThreadPoolExecutor(2) as pool:
        rows, stopped = extract_video_frames(path, {"media_id": "m", "sampling": "s"}, config, store, pool)
    assert stopped is None
    return rows, store


def block_image(width: int = 320, height: int = 240) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    (top_left, top_right, bottom_left, bottom_right) = BLOCKS.values()
    image[: height // 2, : width // 2] = top_left
    image[: height // 2, width // 2 :] = top_right
    image[height // 2 :, : width // 2] = bottom_left
    image[height // 2 :, width // 2 :] = bottom_right
    image[:16, :32] = (255, 255, 0)
    return image


def make_block_video(path, pixel_format: str, color_range: str, colorspace: str | None, frames: int = 5):
    """A lossless H.264 video of block_image, with its colour range and matrix tagged as given."""
    import av

    image = block_image()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], pixel_format
        stream.options = {"preset": "ultrafast", "qp": "0"}
        stream.codec_context.color_range = av.video.reformatter.ColorRange[color_range]
        tags = {"dst_color_range": color_range}
        if colorspace:
            stream.codec_context.colorspace = av.video.reformatter.Colorspace[colorspace]
            tags["dst_colorspace"] = colorspace
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=pixel_format, **tags)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path, image


@pytest.fixture(scope="module", params=["h264", "mp4v", "h264-bframes"])
def video(request, tmp_path_factory):
    codec, _, bframes = request.param.partition("-")
    path = tmp_path_factory.mktemp("v") / f"{request.param}.mp4"
    return make_video(path, frames=95, fps=30, codec=codec, gop=30, preset="veryfast" if bframes else "ultrafast")


@pytest.mark.parametrize("strategy", ["interval", "time", "keyframes"])
def test_stored_jpegs_are_the_reference_rgb_frames(video, tmp_path, strategy):
    rows, store = extract(video, tmp_path, strategy=strategy, every_n_frames=10, every_s=0.5)
    reference = {frame.index: frame for frame in sample_frames(video, strategy, every_n_frames=10, every_s=0.5)}
    assert [row["frame_index"] for row in rows] == list(reference)
    for row in rows:
        expected = reference[row["frame_index"]]
        assert row["timestamp_s"] == expected.timestamp_s
        image = decode_jpeg(store.get_bytes(row["blob_key"]))
        assert image.shape == expected.image.shape == (row["height"], row["width"], 3) == (240, 320, 3)
        assert mean_abs_error(image, expected.image) < 3
        assert read_frame_index(image) == row["frame_index"]  # the barcode sits top-left: not flipped or mirrored


def test_time_and_interval_selection_with_b_frames(tmp_path):
    path = make_video(tmp_path / "b.mp4", frames=95, fps=30, gop=30, preset="veryfast")
    for strategy, expected in (("interval", list(range(0, 95, 10))), ("time", [0, 15, 30, 45, 60, 75, 90])):
        rows, store = extract(path, tmp_path / strategy, strategy=strategy, every_n_frames=10, every_s=0.5)
        assert [row["frame_index"] for row in rows] == expected
        assert [row["timestamp_s"] for row in rows] == pytest.approx([index / 30 for index in expected], abs=1e-6)
        assert all(read_frame_index(decode_jpeg(store.get_bytes(r["blob_key"]))) == r["frame_index"] for r in rows)


def test_portrait_video_keeps_its_size_and_orientation(tmp_path):
    path = make_video(tmp_path / "portrait.mp4", frames=30, fps=30, size=(272, 480), gop=10)
    rows, store = extract(path, tmp_path, strategy="keyframes")
    assert [row["frame_index"] for row in rows] == [0, 10, 20]
    for row in rows:
        image = decode_jpeg(store.get_bytes(row["blob_key"]))
        assert (row["width"], row["height"]) == (272, 480) and image.shape == (480, 272, 3)
        assert read_frame_index(image) == row["frame_index"]


@pytest.mark.parametrize(
    ("pixel_format", "color_range", "colorspace"),
    [
        ("yuv420p", "MPEG", None),  # limited range, untagged matrix: most uploads
        ("yuv420p", "MPEG", "ITU709"),  # limited range, BT.709 (HD)
        ("yuvj420p", "JPEG", None),  # full range, as phones and MJPEG cameras write it
        ("yuv420p", "JPEG", None),  # full range by tag alone
    ],
)
def test_colour_is_right_for_limited_and_full_range(tmp_path, pixel_format, color_range, colorspace):
    path, original = make_block_video(tmp_path / "blocks.mp4", pixel_format, color_range, colorspace)
    rows, store = extract(path, tmp_path, strategy="interval", every_n_frames=2)
    assert len(rows) == 3
    for row in rows:
        image = decode_jpeg(store.get_bytes(row["blob_key"]))
        assert mean_abs_error(image, original) < 3
        height, width = original.shape[:2]
        # the middle of each block: black stays black (not 16), white stays white (not 235), colours keep hue
        centres = [(height // 4, width // 4), (height // 4, 3 * width // 4), (3 * height // 4, width // 4),
                   (3 * height // 4, 3 * width // 4)]  # fmt: skip
        for (y, x), (name, colour) in zip(centres, BLOCKS.items(), strict=True):
            patch = image[y - 8 : y + 8, x - 8 : x + 8].reshape(-1, 3).mean(axis=0)
            assert np.abs(patch - colour).max() < 4, f"{name}: {patch.round(1)} for {colour}"


def test_keyframes_of_an_intra_only_video_are_every_frame(tmp_path):
    import av

    image = block_image()
    path = tmp_path / "mjpeg.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=30)
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuvj420p"
        for _ in range(6):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuvj420p")))
        container.mux(stream.encode(None))
    rows, store = extract(path, tmp_path, strategy="keyframes")
    assert [row["frame_index"] for row in rows] == list(range(6))
    assert all(mean_abs_error(decode_jpeg(store.get_bytes(row["blob_key"])), image) < 3 for row in rows)


@pytest.mark.parametrize(
    ("strategy", "codec", "thread_type", "skip_frame"),
    [("time", "libx264", "AUTO", "DEFAULT"), ("keyframes", "libx264", "SLICE", "NONKEY"),
     ("keyframes", "mjpeg", "AUTO", "NONKEY")],
)  # fmt: skip
def test_decoder_settings_per_strategy(tmp_path, strategy, codec, thread_type, skip_frame):
    import av

    from mining_assets.video.sampling import configure_decoder

    path = tmp_path / "one.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8)).reformat(
            format=stream.pix_fmt)))  # fmt: skip
        container.mux(stream.encode(None))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        configure_decoder(stream, strategy)
        assert stream.thread_type.name == thread_type
        assert str(stream.codec_context.skip_frame) == skip_frame


def test_frame_encoder_makes_the_same_picture_as_encode_jpeg(video):
    for frame in select_frames(video, "interval", every_n_frames=20):
        ours = decode_jpeg(encode_frame_jpeg(frame, 90))
        from_rgb = decode_jpeg(encode_jpeg(frame.to_ndarray("rgb24"), 90))
        assert ours.shape == from_rgb.shape
        assert mean_abs_error(ours, from_rgb) < 1


def test_quality_setting_is_honoured(video):
    frame = next(select_frames(video, "keyframes"))
    sizes = [len(encode_frame_jpeg(frame, quality)) for quality in (30, 60, 95)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_selected_frames_outlive_the_decoder(video):
    frames = list(select_frames(video, "interval", every_n_frames=10))  # the file is closed once this returns
    assert [frame.index for frame in frames] == list(range(0, 95, 10))
    assert [read_frame_index(frame.to_ndarray("rgb24")) for frame in frames] == [frame.index for frame in frames]
    sampled = [(f.index, f.timestamp_s) for f in sample_frames(video, "interval", every_n_frames=10)]
    assert [(f.index, f.timestamp_s) for f in frames] == sampled


def test_select_frames_refuses_bad_settings(video):
    with pytest.raises(ValueError, match="unknown sampling strategy"):
        list(select_frames(video, "scenes"))
    assert list(select_frames(video, "interval", max_frames=0)) == []
