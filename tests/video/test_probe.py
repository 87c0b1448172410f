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
