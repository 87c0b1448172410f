"""Every kind of bad input gives a typed error naming the file and the cause; never a hang."""

import subprocess
import sys

import pytest

from kangaroo.video import (
    DecodeOptions,
    EmptyVideoError,
    NotAVideoError,
    UnsupportedCodecError,
    VideoDecodeError,
    VideoError,
    VideoLimits,
    VideoNotFoundError,
    VideoTimeoutError,
    VideoTooLargeError,
    decode_isolated,
    load_video,
    probe,
)

from .media import bad_inputs, encode

EXPECTED = {
    "missing": (VideoNotFoundError, "no such file"),
    "directory": (NotAVideoError, "directory"),
    "zero_bytes": (NotAVideoError, "empty"),
    "truncated": (NotAVideoError, "truncated"),
    "truncated_faststart": (VideoDecodeError, "truncated"),
    "corrupt_midstream": (VideoDecodeError, "mid-stream"),
    "random_bytes": (NotAVideoError, "not a readable video"),
    "text": (NotAVideoError, "not a readable video"),
    "image": (NotAVideoError, "still image"),
    "audio_only": (NotAVideoError, "audio-only"),
    "unsupported_codec": (UnsupportedCodecError, "codec"),
    "zero_duration": (EmptyVideoError, "no decodable frames"),
    "absurd_dimensions": (VideoTooLargeError, "aspect ratio"),
}


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_bad_input_raises_typed_error(cases, case):
    exc, words = EXPECTED[case]
    path = cases[case]
    with pytest.raises(exc) as info:
        load_video(path, opts=DecodeOptions(timeout_s=30))
    assert path in str(info.value)
    assert words in str(info.value).lower()
    assert isinstance(info.value, VideoError)


@pytest.mark.parametrize("case", ["random_bytes", "image", "audio_only", "truncated_faststart", "missing"])
def test_cli_reports_without_traceback(cases, case, tmp_path):
    r = subprocess.run([sys.executable, "-m", "kangaroo.cli", "frames", cases[case], "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and cases[case] in r.stderr
    assert "Traceback" not in r.stderr


def test_limits_are_configurable(tmp_path):
    path = encode(tmp_path / "v.mp4", n=3, w=320, h=240)
    assert probe(path).width == 320
    with pytest.raises(VideoTooLargeError, match="exceed"):
        probe(path, VideoLimits(max_side=256))
    with pytest.raises(VideoTooLargeError, match="duration"):
        probe(path, VideoLimits(max_duration_s=0.01))


def test_timeout_in_process(bikes):
    with pytest.raises(VideoTimeoutError, match="longer than"):
        load_video(bikes, opts=DecodeOptions(timeout_s=0.0, mode="sequential"))


def test_isolated_decode_matches_and_times_out(bikes):
    from kangaroo.video import SamplingConfig

    s = SamplingConfig(num_frames=4)
    a = decode_isolated(bikes, s, DecodeOptions(timeout_s=60))
    b = load_video(bikes, s)
    assert (a.frames == b.frames).all()
    with pytest.raises(VideoTimeoutError, match="killed"):
        decode_isolated(bikes, SamplingConfig(num_frames=200), DecodeOptions(timeout_s=0.001))


def test_isolated_decode_reraises_typed_error(cases):
    with pytest.raises(NotAVideoError):
        decode_isolated(cases["random_bytes"], opts=DecodeOptions(timeout_s=60))


def test_symlink_loop_and_dangling_link_are_named(tmp_path):
    import os

    loop_a, loop_b = str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")
    os.symlink(loop_b, loop_a)
    os.symlink(loop_a, loop_b)
    dangling = str(tmp_path / "gone.mp4")
    os.symlink(str(tmp_path / "never_written.mp4"), dangling)
    for path, words in ((loop_a, "symlink loop"), (dangling, "dangling symlink")):
        for call in (probe, load_video):
            with pytest.raises(VideoNotFoundError) as info:
                call(path)
            assert path in str(info.value) and words in str(info.value) and "no such file" not in str(info.value)
        r = subprocess.run([sys.executable, "-m", "kangaroo.cli", "probe", path], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and r.stderr == f"error: {path}: " + (
            "symlink loop (too many levels of symbolic links)\n" if words == "symlink loop"
            else f"dangling symlink (its target {str(tmp_path / 'never_written.mp4')!r} does not exist)\n")
