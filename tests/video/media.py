"""Builders for test media: small real videos, and every kind of bad input."""

import os

import av
import numpy as np
from PIL import Image


def encode(path, n=50, w=128, h=96, fps=25, codec="libx264", fmt=None, options=None, rotation=None, noise=True,
           audio=False):
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format=fmt, options=options or {}) as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if rotation is not None:
            s.set_display_rotation(rotation)
        a = out.add_stream("aac", rate=16000) if audio else None
        for i in range(n):
            img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8) if noise else np.full((h, w, 3), i % 255, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
        if a is not None:
            _audio(out, a)
    return str(path)


def _audio(out, a, frames=20):
    fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    fr.sample_rate = 16000
    for i in range(frames):
        fr.pts = i * 1024
        for p in a.encode(fr):
            out.mux(p)
    for p in a.encode():
        out.mux(p)


def bad_inputs(d):
    """{case: path} for every kind of bad input the video layer must refuse cleanly."""
    d = str(d)
    cases = {}
    cases["missing"] = os.path.join(d, "does_not_exist.mp4")
    cases["directory"] = os.path.join(d, "a_dir.mp4")
    os.makedirs(cases["directory"], exist_ok=True)
    cases["zero_bytes"] = os.path.join(d, "zero.mp4")
    open(cases["zero_bytes"], "wb").close()
    good = encode(os.path.join(d, "good.mp4"), n=100)  # moov at the end
    fast = encode(os.path.join(d, "fast.mp4"), n=100, options={"movflags": "+faststart"})
    data = open(good, "rb").read()
    cases["truncated"] = os.path.join(d, "truncated.mp4")
    open(cases["truncated"], "wb").write(data[: len(data) // 2])
    fdata = open(fast, "rb").read()
    cases["truncated_faststart"] = os.path.join(d, "truncated_fast.mp4")
    open(cases["truncated_faststart"], "wb").write(fdata[: len(fdata) // 2])
    corrupt = bytearray(fdata)
    mid = len(corrupt) // 2
    corrupt[mid : mid + 20000] = np.random.default_rng(1).bytes(20000)
    cases["corrupt_midstream"] = os.path.join(d, "corrupt_mid.mp4")
    open(cases["corrupt_midstream"], "wb").write(bytes(corrupt))
    cases["random_bytes"] = os.path.join(d, "random.mp4")
    open(cases["random_bytes"], "wb").write(np.random.default_rng(2).bytes(100_000))
    cases["text"] = os.path.join(d, "notes.mp4")
    open(cases["text"], "w").write("this is not a video\n" * 200)
    cases["image"] = os.path.join(d, "photo.mp4")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(cases["image"], format="PNG")
    cases["audio_only"] = os.path.join(d, "audio.mp4")
    with av.open(cases["audio_only"], "w") as out:
        _audio(out, out.add_stream("aac", rate=16000))
    cases["unsupported_codec"] = os.path.join(d, "unknown_codec.mp4")
    open(cases["unsupported_codec"], "wb").write(data.replace(b"avc1", b"zzz9"))
    cases["zero_duration"] = os.path.join(d, "no_frames.mkv")
    with av.open(cases["zero_duration"], "w", format="matroska") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
        _audio(out, out.add_stream("aac", rate=16000))
    cases["absurd_dimensions"] = encode(os.path.join(d, "sliver.mp4"), n=3, w=1280, h=32, noise=False)
    return cases


def remux(src, dst, fmt, options=None):
    """Copy the video stream of ``src`` into another container without re-encoding."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=fmt, options=options or {}) as out:
        s = inp.streams.video[0]
        o = out.add_stream_from_template(s)
        for p in inp.demux(s):
            if p.dts is None:  # the demuxer's final flush packet
                continue
            p.stream = o
            out.mux(p)
    return str(dst)


def cut(src, dst, fraction=0.5):
    """The first ``fraction`` of a file's bytes: a download or copy that stopped early."""
    data = open(str(src), "rb").read()
    open(str(dst), "wb").write(data[: int(len(data) * fraction)])
    return str(dst)
