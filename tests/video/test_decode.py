import numpy as np
import pytest

from kangaroo.video import DecodeOptions, SamplingConfig, decode_frames, load_video, probe, sample_timestamps

from .media import encode


@pytest.mark.parametrize("n", [1, 3, 16, 64])
def test_modes_give_identical_frames(bikes, n):
    info = probe(bikes)
    times = sample_timestamps(SamplingConfig(num_frames=n), info.duration)
    out = {m: decode_frames(bikes, times, DecodeOptions(mode=m), info=info) for m in ("auto", "seek", "sequential")}
    for m in ("seek", "sequential"):
        assert np.array_equal(out["auto"].frames, out[m].frames)
        assert np.allclose(out["auto"].timestamps, out[m].timestamps)
    # auto never decodes more than either fixed strategy
    assert out["auto"].stats["decoded"] <= min(out["seek"].stats["decoded"], out["sequential"].stats["decoded"])


def test_frame_is_the_one_on_screen(bikes):
    info = probe(bikes)
    times = [0.0, 0.05, 1.0, 4.99, 9.99]
    f = decode_frames(bikes, times, info=info)
    # 25 fps: the frame on screen at t starts at floor(t * 25) / 25
    assert np.allclose(f.timestamps, [np.floor(t * 25 + 1e-9) / 25 for t in times])
    assert f.frames.shape == (5, 272, 640, 3) and f.frames.dtype == np.uint8


def test_sparse_sampling_skips_most_frames(tmp_path):
    path = encode(tmp_path / "long.mp4", n=400, w=64, h=48, options={"x264-params": "keyint=25:scenecut=0"}, noise=False)
    f = load_video(path, SamplingConfig(num_frames=4))
    assert f.stats["seeks"] == 4
    assert f.stats["decoded"] < 400 / 3


def test_unsorted_and_duplicate_times(bikes):
    f = decode_frames(bikes, [5.0, 1.0, 5.0, 0.5])
    assert np.allclose(f.timestamps, [5.0, 1.0, 5.0, 0.48])
    assert np.array_equal(f.frames[0], f.frames[2])


def test_rotation_metadata_applied(tmp_path):
    path = encode(tmp_path / "rot.mp4", n=5, w=64, h=32, rotation=90)
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (32, 64, 90)
    f = load_video(path, SamplingConfig(num_frames=2))
    assert f.frames.shape[1:] == (64, 32, 3)


def test_resize_on_decode(bikes):
    f = load_video(bikes, SamplingConfig(num_frames=2), DecodeOptions(max_side=160))
    assert f.frames.shape[1:] == (68, 160, 3)
    g = load_video(bikes, SamplingConfig(num_frames=2), DecodeOptions(size=(96, 64)))
    assert g.frames.shape[1:] == (64, 96, 3)


@pytest.mark.parametrize("backend", ["opencv"])
def test_optional_backend_agrees(bikes, backend):
    pytest.importorskip("cv2")
    times = [1.02, 3.02, 7.02]
    other = decode_frames(bikes, times, DecodeOptions(backend=backend))
    # OpenCV's seeks are not frame-accurate: its frame is one of ours within +-1 frame,
    # up to colour-conversion differences.
    for t, img in zip(times, other.frames):
        near = decode_frames(bikes, [t - 0.04, t, t + 0.04]).frames
        assert min(np.abs(img.astype(int) - n.astype(int)).mean() for n in near) < 6


def test_unknown_backend(bikes):
    with pytest.raises(KeyError, match="unknown decode backend"):
        decode_frames(bikes, [1.0], DecodeOptions(backend="nope"))


@pytest.mark.parametrize("n", [3, 16, 40])
def test_matches_full_decode(tmp_path_factory, bikes, n):
    """Skipping non-reference frames far from targets never changes the frames returned."""
    from kangaroo.video.bench import _decode_all

    for path in (bikes, encode(tmp_path_factory.mktemp("b") / "bframes.mp4", n=300, w=96, h=64, noise=False,
                                options={"x264-params": "keyint=100:bframes=3:scenecut=0"})):
        times = sample_timestamps(SamplingConfig(num_frames=n), probe(path).duration)
        assert np.array_equal(decode_frames(path, times).frames, _decode_all(path, times))
