from fractions import Fraction

import av
from av.video.frame import PictureType
import numpy as np
import pytest
from _support import ramp_index, ramp_level, ramp_video

from berg import baselines
from berg.errors import BergError, InvalidArgumentError, InvalidStimulusError
from berg.video import (_decoded, _sample_finder, clip_plan, iter_clips, iter_frames, probe, read_frames,
                        write_synthetic_video)


@pytest.fixture(scope="module")
def ramp(tmp_path_factory):
    # 48 frames at 8 frames/s: 6 s; frame i is shown over [i / 8, (i + 1) / 8)
    return ramp_video(tmp_path_factory.mktemp("video") / "ramp.mp4", 48, 8.0)


def test_probe(ramp):
    info = probe(ramp)
    assert (info.n_frames, info.fps, info.width, info.height) == (48, 8.0, 8, 8)
    assert info.duration_s == pytest.approx(6.0)


def test_probe_counts_packets_when_the_container_does_not_say(tmp_path):
    path = ramp_video(tmp_path / "ramp.mkv", 17, 5.0)  # Matroska does not store a frame count
    assert probe(path).n_frames == 17


def test_unreadable_file_names_the_path(tmp_path):
    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(b"this is no video")
    with pytest.raises(InvalidStimulusError, match="not_a_video.mp4"):
        probe(bad)
    with pytest.raises(BergError, match="missing.mp4"):
        read_frames(tmp_path / "missing.mp4", [0])


def test_read_frames_keeps_only_the_wanted_frames_in_the_given_order(ramp):
    frames = read_frames(ramp, [30, 0, 7, 7])
    assert frames.shape == (4, 8, 8, 3) and frames.dtype == np.uint8
    assert ramp_index(frames[..., 0].mean(axis=(1, 2))).tolist() == [30, 0, 7, 7]
    with pytest.raises(InvalidStimulusError, match="48 frames"):
        read_frames(ramp, [3, 48])
    with pytest.raises(InvalidArgumentError, match="indices"):
        read_frames(ramp, [])


def test_iter_frames_every_frame(ramp):
    items = list(iter_frames(ramp))
    times = np.array([t for t, _ in items])
    np.testing.assert_allclose(times, np.arange(48) / 8.0)
    assert ramp_index([f[..., 0].mean() for _, f in items]).tolist() == list(range(48))


@pytest.mark.parametrize("rate, start_s", [(2.0, 0.0), (3.0, 0.0), (20.0, 0.0), (3.0, 2.5)])
def test_iter_frames_at_a_rate_takes_the_frame_shown_at_each_sample_time(ramp, rate, start_s):
    items = list(iter_frames(ramp, rate_hz=rate, start_s=start_s))
    times = np.array([t for t, _ in items])
    first = int(np.ceil(start_s * rate - 1e-9))
    expected_times = np.arange(first, int(np.ceil(6.0 * rate - 1e-9))) / rate
    np.testing.assert_allclose(times, expected_times)
    shown = np.floor(expected_times * 8.0 + 1e-9).astype(int)
    assert ramp_index([f[..., 0].mean() for _, f in items]).tolist() == shown.tolist()


@pytest.fixture(scope="module")
def film_coded(tmp_path_factory):
    # the ramp coded as films are: up to 3 B-frames between references, some of which nothing refers to
    return ramp_video(tmp_path_factory.mktemp("video") / "ramp_b.mp4", 48, 8.0, b_frames=3)


def test_the_decoder_drops_only_frames_no_sample_needs(film_coded):
    assert sum(1 for _ in _decoded(film_coded)) == 48
    assert sum(1 for _ in _decoded(film_coded, needed=lambda time_s, shown_s: False)) < 36
    kept = [round(t * 8) for t, _ in _decoded(film_coded, needed=_sample_finder(2.0, 0))]
    assert len(kept) < 48 and set(range(0, 48, 4)) <= set(kept)  # 2 Hz samples fall on every 4th frame


def _sampled_as_by_a_full_decode(path, rate, start_s=0.0):
    """``iter_frames`` at ``rate`` with dropping, after checking it equals the full decode's samples exactly."""
    dropped = list(iter_frames(path, rate_hz=rate, start_s=start_s))
    decoded = list(iter_frames(path, rate_hz=rate, start_s=start_s, drop_unneeded=False))
    assert [t for t, _ in dropped] == [t for t, _ in decoded]
    for (_, a), (_, b) in zip(dropped, decoded):
        np.testing.assert_array_equal(a, b)
    return dropped


@pytest.mark.parametrize("rate, start_s", [(2.0, 0.0), (0.7, 0.0), (3.0, 2.5), (8.0, 0.0), (20.0, 0.0)])
def test_dropping_unneeded_frames_changes_no_sample(film_coded, rate, start_s):
    dropped = _sampled_as_by_a_full_decode(film_coded, rate, start_s)
    shown = np.floor(np.array([t for t, _ in dropped]) * 8.0 + 1e-9).astype(int)
    assert ramp_index([f[..., 0].mean() for _, f in dropped]).tolist() == shown.tolist()


def test_dropping_follows_frames_shown_for_longer_than_one_frame(tmp_path):
    # variable timing: frames i % 4 == 2 are B-frames no other frame refers to, each on screen for three frame times
    starts = np.cumsum([0] + [3 if i % 4 == 2 else 1 for i in range(39)])
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(8))
        stream.width = stream.height = 8
        stream.pix_fmt, stream.codec_context.max_b_frames = "yuv420p", 3
        stream.options = {"crf": "10", "preset": "ultrafast", "x264-params": "b-pyramid=none"}
        for i, start in enumerate(starts):
            frame = av.VideoFrame.from_ndarray(np.full((8, 8, 3), ramp_level(i), np.uint8), format="rgb24")
            frame.pts, frame.time_base = int(start), Fraction(1, 8)
            frame.pict_type = PictureType.I if i == 0 else PictureType.P if i % 4 == 0 else PictureType.B
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    for rate in (3.0, 4.0):
        dropped = _sampled_as_by_a_full_decode(path, rate)
        shown = np.searchsorted(starts / 8.0, [t + 1e-9 for t, _ in dropped], side="right") - 1
        assert ramp_index([f[..., 0].mean() for _, f in dropped]).tolist() == shown.tolist()
    assert sum(1 for _ in _decoded(path, needed=lambda time_s, shown_s: False)) <= 12  # I- and P-frames only


def test_iter_clips_follow_the_plan_with_linspace_frames(ramp):
    info = probe(ramp)
    plan = clip_plan(info, clip_s=2.0, n_frames=5, stride_s=1.5)
    # windows [0, 2), [1.5, 3.5), [3, 5): 16 frames each; a window [4.5, 6.5) would pass the end
    assert [c for c, _ in plan] == [1.0, 2.5, 4.0]
    assert plan[1][1].tolist() == (12 + np.linspace(0, 15, 5).astype(int)).tolist()
    clips = list(iter_clips(ramp, clip_s=2.0, n_frames=5, stride_s=1.5))
    assert [c for c, _ in clips] == [1.0, 2.5, 4.0]
    for (_, picks), (_, clip) in zip(plan, clips):
        assert clip.shape == (5, 8, 8, 3)
        assert ramp_index(clip[..., 0].mean(axis=(1, 2))).tolist() == picks.tolist()
    resumed = list(iter_clips(ramp, clip_s=2.0, n_frames=5, stride_s=1.5, start_index=2))
    assert len(resumed) == 1 and np.array_equal(resumed[0][1], clips[2][1])


def test_clip_longer_than_the_video_is_refused(ramp):
    with pytest.raises(InvalidStimulusError, match="clip_s=7.0"):
        list(iter_clips(ramp, clip_s=7.0))
    with pytest.raises(InvalidArgumentError, match="rate_hz"):
        list(iter_frames(ramp, rate_hz=-1))


@pytest.mark.parametrize("kwargs, name", [({"rate_hz": "fast"}, "rate_hz"), ({"start_s": None}, "start_s"),
                                          ({"rate_hz": [2]}, "rate_hz")])
def test_non_numeric_times_are_refused(ramp, kwargs, name):
    with pytest.raises(InvalidArgumentError, match=f"{name}=.* is not valid: expected a finite number"):
        list(iter_frames(ramp, **kwargs))


def test_non_numeric_clip_frames_are_refused(ramp):
    with pytest.raises(InvalidArgumentError, match="n_frames='many' is not valid: expected an integer >= 1"):
        clip_plan(probe(ramp), 1.0, "many", 1.0)


def test_write_synthetic_video_checks_size_and_frames(tmp_path):
    with pytest.raises(InvalidArgumentError, match="even"):
        write_synthetic_video(tmp_path / "x.mp4", 3, 10, (7, 8), lambda i: np.zeros((7, 8, 3), np.uint8))
    with pytest.raises(InvalidStimulusError, match="frame_fn"):
        write_synthetic_video(tmp_path / "x.mp4", 3, 10, (8, 8), lambda i: np.zeros((4, 8, 3), np.uint8))
    assert not list(tmp_path.iterdir())  # nothing half-written
    assert ramp_level(3) == 15


@pytest.mark.parametrize("shape", [(5, 37, 3, 3), (2, 4, 9, 11, 3), (90, 160, 3)], ids=["width-3", "clips", "one-frame"])
def test_baselines_equal_their_float64_definitions(shape):
    frames = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    peak = frames.max(axis=-1).astype(np.float64)
    np.testing.assert_allclose(baselines.brightness(frames), peak.mean(axis=(-1, -2)) / 255, rtol=1e-12)
    luma = frames.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
    np.testing.assert_allclose(baselines.luminance(frames), luma.mean(axis=(-1, -2)) / 255, rtol=1e-12)


def test_baselines_on_known_colours():
    red = np.zeros((2, 4, 4, 3), np.uint8)
    red[..., 0] = 255
    red[1, :2] = 0  # second frame: half black
    np.testing.assert_allclose(baselines.brightness(red), [1.0, 0.5])
    np.testing.assert_allclose(baselines.luminance(red), [0.2126, 0.1063])
    grey = np.full((1, 2, 2, 3), 51, np.uint8)
    np.testing.assert_allclose(baselines.luminance(grey), [0.2])
    clips = np.stack([red, red])  # (2 clips, 2 frames, ...)
    np.testing.assert_allclose(baselines.compute(["brightness"], clips, is_clip=True)["brightness"], [0.75, 0.75])
    with pytest.raises(InvalidStimulusError, match="uint8"):
        baselines.brightness(red.astype(np.float32))
    with pytest.raises(InvalidArgumentError, match="contrast"):
        baselines.check_names(["contrast"])
