"""Render a ``Timeline`` to frames and encode them as H.264 mp4 with PyAV."""

from __future__ import annotations

import math
import os

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .timeline import COLORS, Appearance, Timeline


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy - r * math.sin(a)) for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            a = math.pi / 2 + k * math.pi / 5
            rr = r if k % 2 == 0 else 0.45 * r
            pts.append((cx + rr * math.cos(a), cy - rr * math.sin(a)))
        return pts
    if shape == "cross":
        w = 0.35 * r
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w), (cx + w, cy + w),
                (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w)]
    raise ValueError(f"unknown polygon shape {shape!r}")


def draw_object(draw: ImageDraw.ImageDraw, o: Appearance, t: float, width: int, height: int) -> None:
    x, y = o.position(t)
    cx, cy, r = x * width, y * height, o.size * height / 2
    fill = COLORS[o.color_at(t)]
    box = [cx - r, cy - r, cx + r, cy + r]
    if o.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif o.shape == "square":
        draw.rectangle(box, fill=fill)
    elif o.shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, int(r * 0.35)))
    else:
        draw.polygon(_polygon(o.shape, cx, cy, r), fill=fill)


def render_frame(tl: Timeline, t: float) -> np.ndarray:
    cfg = tl.config
    img = Image.new("RGB", (cfg.width, cfg.height), tl.background_at(t))
    draw = ImageDraw.Draw(img)
    for o in tl.visible_at(t):
        draw_object(draw, o, t, cfg.width, cfg.height)
    if cfg.text:
        _draw_text(draw, cfg.text, cfg.width, cfg.height)
    return np.asarray(img)


def _draw_text(draw: ImageDraw.ImageDraw, text: str, width: int, height: int) -> None:
    size = max(10, height // 8)
    font = ImageFont.load_default(size=size)
    lines = text.split("\n")
    y = height * 0.06
    for line in lines:
        draw.rectangle([width * 0.04, y - 2, width * 0.96, y + size * 1.2], fill=(0, 0, 0))
        draw.text((width * 0.06, y), line, fill=(255, 255, 255), font=font)
        y += size * 1.4


def write_video(tl: Timeline, path: str | os.PathLike, progress=None) -> str:
    """Encode ``tl`` to an H.264 mp4 at ``path`` (written to a temp name, then renamed)."""
    cfg = tl.config
    path = os.fspath(path)
    tmp = path + ".part"
    n = max(1, int(round(cfg.duration * cfg.fps)))
    rate = _rate(cfg.fps)
    with av.open(tmp, mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = cfg.width, cfg.height, "yuv420p"
        stream.codec_context.gop_size = cfg.gop
        stream.options = {"crf": str(cfg.crf), "preset": "veryfast",
                          "x264-params": f"keyint={cfg.gop}:min-keyint={cfg.gop}:scenecut=0"}
        prev_key = None
        frame = None
        for i in range(n):
            t = (i + 0.5) / cfg.fps  # the state mid-way through the frame's display interval
            key = _state_key(tl, t)
            if key != prev_key:  # shapes only change when the state does; reuse the frame otherwise
                frame = av.VideoFrame.from_ndarray(render_frame(tl, t), format="rgb24")
                prev_key = key
            frame.pts = None
            for packet in stream.encode(frame):
                out.mux(packet)
            if progress is not None:
                progress(1)
        for packet in stream.encode():
            out.mux(packet)
    os.replace(tmp, path)
    return path


def _state_key(tl: Timeline, t: float):
    if not tl.config.static and any(o.visible(t) and o.start != o.end for o in tl.objects):
        return t  # something moves: every frame differs
    return (tl.background_at(t), tuple((id(o), o.color_at(t)) for o in tl.visible_at(t)))


def _rate(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)
