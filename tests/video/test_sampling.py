import pytest

from mining_assets.video.probe import MediaError, probe_video
from mining_assets.video.sampling import SamplingError, sample_frames
from mining_assets.video.synthetic import make_video, read_frame_index, truncate


@pytest.fixture(scope="module", params=["h264", "mp4v"])
def video(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / f"{request.param}.mp4"
    return make_video(path, frames=95, fps=30, codec=request.param, gop=30)


def kept(path, **kwargs):
    return [(f.index, f.timestamp_s, read_frame_index(f.image)) for f in sample_frames(path, **kwargs)]


def test_interval_keeps_every_nth_frame(video):
    frames = kept(video, strategy="interval", every_n_frames=10)
    assert [f[0] for f in frames] == list(range(0, 95, 10))
    assert all(index == barcode for index, _, barcode in frames)
    assert frames[3][1] == pytest.approx(1.0)


def test_time_keeps_first_frame_of_each_period(video):
    frames = kept(video, strategy="time", every_s=0.5)
    assert [f[0] for f in frames] == [0, 15, 30, 45, 60, 75, 90]
    assert all(index == barcode for index, _, barcode in frames)


def test_time_step_longer_than_frame_step(video):
    frames = kept(video, strategy="time", every_s=1 / 60)
    assert len(frames) == 95


def test_keyframes_only(video):
    frames = kept(video, strategy="keyframes")
    assert [f[0] for f in frames] == [0, 30, 60, 90]
    assert all(index == barcode for index, _, barcode in frames)


def test_cap_per_video(video):
    assert len(kept(video, strategy="interval", every_n_frames=1, max_frames=7)) == 7
    assert kept(video, strategy="interval", max_frames=0) == []


def test_frames_are_rgb_arrays(video):
    frame = next(sample_frames(video, strategy="keyframes"))
    assert frame.image.shape == (240, 320, 3) and frame.image.dtype.name == "uint8"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "scenes"}, "unknown sampling strategy"),
        ({"strategy": "interval", "every_n_frames": 0}, "every_n_frames"),
        ({"strategy": "time", "every_s": 0}, "every_s"),
    ],
)
def test_bad_settings(video, kwargs, message):
    with pytest.raises(ValueError, match=message):
        list(sample_frames(video, **kwargs))


def test_truncated_file_with_index_first_yields_the_frames_before_the_cut(tmp_path):
    path = truncate(make_video(tmp_path / "cut.mp4", frames=90, faststart=True), 0.5)
    try:
        frames = kept(path, strategy="interval", every_n_frames=1)
    except SamplingError as error:  # some builds of FFmpeg report the cut instead of ending quietly
        assert error.frames_read > 0
        return
    assert 0 < len(frames) < 90
    assert all(index == barcode for index, _, barcode in frames)


def test_probe_reads_the_facts(video):
    probe = probe_video(video)
    assert (probe.width, probe.height, probe.fps, probe.frame_count) == (320, 240, 30.0, 95)
    assert probe.duration_s == pytest.approx(95 / 30, abs=0.05)
    assert probe.codec in ("h264", "mpeg4") and probe.size_bytes > 0 and len(probe.sha256) == 64


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("zero.mp4", "empty file"),
        ("text.mp4", "not a video: the file holds text"),
        ("audio_only.mp4", "audio only"),
        ("truncated.mp4", "unreadable or truncated"),
    ],
)
def test_probe_refuses_bad_files_with_a_reason(media_dir, name, reason):
    with pytest.raises(MediaError, match=reason):
        probe_video(media_dir / name)


def test_probe_names_html(tmp_path):
    page = tmp_path / "page.mp4"
    page.write_text("<!DOCTYPE html><html><body>Video unavailable</body></html>")
    with pytest.raises(MediaError, match="HTML page"):
        probe_video(page)


def test_sampler_refuses_what_is_not_a_video(media_dir):
    with pytest.raises(MediaError):
        list(sample_frames(media_dir / "audio_only.mp4"))
    with pytest.raises(MediaError):
        list(sample_frames(media_dir / "truncated.mp4"))
