from kangaroo.video import probe

from .media import encode


def test_probe_real_videos(bikes, bunny):
    b = probe(bikes)
    assert (b.width, b.height, b.fps, b.num_frames, b.codec) == (640, 272, 25.0, 250, "h264")
    assert abs(b.duration - 10.0) < 1e-6 and b.num_frames_exact and not b.variable_fps and not b.has_audio
    assert b.keyframes == 6  # bikes.mp4 has six scene cuts, each a keyframe
    u = probe(bunny)
    assert (u.width, u.height) == (1280, 720) and u.has_audio


def test_probe_generated_and_audio(tmp_path):
    p = encode(tmp_path / "a.mp4", n=30, fps=15, audio=True)
    info = probe(p)
    assert info.has_audio and info.num_frames == 30 and abs(info.duration - 2.0) < 0.01
    assert info.to_dict()["codec"] == "h264"


def test_variable_frame_rate_detected(tmp_path):
    import av
    import numpy as np
    from fractions import Fraction

    path = str(tmp_path / "vfr.mp4")
    with av.open(path, "w") as out:
        s = out.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        t = 0
        for i in range(40):
            fr = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 5, np.uint8), format="rgb24")
            fr.pts, fr.time_base = t, Fraction(1, 1000)
            t += 33 if i % 2 else 100
            for p in s.encode(fr):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    assert probe(path).variable_fps


def test_truncated_files_do_not_claim_an_exact_count(bikes, tmp_path):
    """Half of a real video: the frame count is an estimate from duration * fps, said to be one,
    while far more frames than one decode from what is left."""
    from kangaroo.video import SamplingConfig, load_video

    from .media import cut, remux

    mkv = remux(bikes, tmp_path / "bikes.mkv", "matroska")
    half_mkv = cut(mkv, tmp_path / "half.mkv")
    info = probe(half_mkv)
    assert not info.num_frames_exact and info.num_frames == round(info.duration * info.fps) == 250
    assert info.keyframes is None  # a partial index says nothing about the whole stream
    got = load_video(half_mkv, SamplingConfig(sampler="fps", fps=25.0, end=4.5, max_frames=1000))
    assert len(got) >= 100 and len(set(got.timestamps.round(3))) >= 100

    # A whole Matroska file: its cues list keyframes only, so the count is still an estimate.
    assert not probe(mkv).num_frames_exact and probe(mkv).num_frames == 250

    # A faststart mp4 keeps its full sample table when cut, but the samples are gone.
    mp4 = remux(bikes, tmp_path / "fast.mp4", "mp4", {"movflags": "+faststart"})
    whole, half = probe(mp4), probe(cut(mp4, tmp_path / "half.mp4"))
    assert whole.num_frames_exact and whole.num_frames == 250 and whole.keyframes == 6
    assert not half.num_frames_exact and half.num_frames == 250


def test_cli_probe_truncated(bikes, tmp_path):
    import json
    import subprocess
    import sys

    from .media import cut, remux

    half = cut(remux(bikes, tmp_path / "b.mkv", "matroska"), tmp_path / "half.mkv")
    r = subprocess.run([sys.executable, "-m", "kangaroo.cli", "probe", half, "--json"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["num_frames_exact"] is False and info["num_frames"] == 250


def test_without_a_stream_index_as_on_pyav_below_16(bikes, monkeypatch):
    """PyAV 12-15 has no ``Stream.index_entries`` (lmms-eval 0.7 pins av < 16): ``stream_index``
    is None there, and an mp4 is probed as estimated and decoded without keyframe positions;
    the frames sampled are the same as with the index."""
    import importlib

    import numpy as np

    from kangaroo.video import SamplingConfig, load_video

    probe_mod = importlib.import_module("kangaroo.video.probe")  # the package exports a function of that name
    decode_mod = importlib.import_module("kangaroo.video.decode")

    with_index = load_video(bikes, SamplingConfig(num_frames=6))
    monkeypatch.setattr(probe_mod, "stream_index", lambda stream: None)
    monkeypatch.setattr(decode_mod, "stream_index", lambda stream: None)
    info = probe(bikes)
    assert info.num_frames == 250 and not info.num_frames_exact and info.keyframes is None
    without = load_video(bikes, SamplingConfig(num_frames=6))
    assert np.allclose(without.timestamps, with_index.timestamps)
    assert np.array_equal(without.frames, with_index.frames)
