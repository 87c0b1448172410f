"""Videos made of shots with known content, for testing and calibrating curation filters.

``write_shots(path, shots)`` encodes a sequence of shots joined by hard cuts. Each shot
has a ``kind`` whose ground truth the filters must recover:

- ``moving``: textured background panning and shapes moving (real motion, no text, no face)
- ``static``: one still picture for the whole shot (no motion)
- ``text``:   moving content under a large burned-in text block (high text coverage)
- ``subtitle``: moving content with one subtitle line at the bottom (low text coverage)
- ``face``:   a real face photograph (scikit-image's astronaut, when installed) filling the frame's
  height, drifting slowly (a face-dominated shot)
- ``smallface``: the same face at a quarter of the frame's height over moving content

The returned ground truth lists each shot's first frame index, so cut detection can be
checked frame-accurately.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

KINDS = ("moving", "static", "text", "subtitle", "face", "smallface")


@dataclass
class Shot:
    kind: str
    seconds: float
    seed: int = 0


def astronaut_path() -> str | None:
    """scikit-image's astronaut photo (a real face), if scikit-image is installed (it ships the PNG)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = os.path.join(spec.submodule_search_locations[0], "data", "astronaut.png")
    return p if os.path.exists(p) else None


def _texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A smooth random colour texture (upscaled noise), twice the frame width for panning."""
    base = rng.integers(40, 200, size=3)  # one muted hue per shot, like a real scene's palette
    small = np.clip(base + rng.normal(0, 30, size=(h // 48 + 2, w // 24 + 2, 3)), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((2 * w, h), Image.BICUBIC))


def _moving(rng, w, h, n, fps):
    tex = _texture(rng, w, h)
    shapes = [(rng.uniform(0.1, 0.9), rng.uniform(0.2, 0.8), rng.uniform(-0.2, 0.2), rng.uniform(-0.15, 0.15),
               tuple(int(c) for c in rng.integers(0, 256, 3))) for _ in range(3)]
    speed = rng.uniform(0.05, 0.1) * w  # pixels per second of background pan (a slow camera pan)
    for i in range(n):
        t = i / fps
        off = int(speed * t) % w
        img = Image.fromarray(np.ascontiguousarray(tex[:, off:off + w]))
        d = ImageDraw.Draw(img)
        for x, y, vx, vy, col in shapes:
            cx, cy = ((x + vx * t) % 1.0) * w, ((y + vy * t) % 1.0) * h
            r = h * 0.08
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
        yield img


def _static(rng, w, h, n, fps):
    img = Image.fromarray(np.ascontiguousarray(_texture(rng, w, h)[:, :w]))
    d = ImageDraw.Draw(img)
    d.rectangle([w * 0.3, h * 0.3, w * 0.6, h * 0.7], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    for _ in range(n):
        yield img


def _text(rng, w, h, n, fps):
    font = ImageFont.load_default(size=max(12, h // 9))
    words = ["BREAKING NEWS", "SUBSCRIBE NOW", "SALE 50% OFF", "CHAPTER ONE", "LIVE SCORE 2:1"]
    lines = [words[int(k)] for k in rng.integers(0, len(words), 4)]
    for img in _moving(rng, w, h, n, fps):
        d = ImageDraw.Draw(img)
        y = h * 0.1
        for line in lines:
            d.rectangle([w * 0.05, y - 4, w * 0.95, y + h * 0.15], fill=(20, 20, 20))
            d.text((w * 0.08, y), line, fill=(255, 255, 255), font=font)
            y += h * 0.2
        yield img


def _subtitle(rng, w, h, n, fps):
    font = ImageFont.load_default(size=max(10, h // 18))
    lines = ["and then we went down to the river", "where the old bridge used to stand"]
    for i, img in enumerate(_moving(rng, w, h, n, fps)):
        d = ImageDraw.Draw(img)
        d.text((w * 0.2, h * 0.86), lines[(i // int(2 * fps)) % 2], fill=(255, 255, 255), font=font,
               stroke_width=2, stroke_fill=(0, 0, 0))
        yield img


def _face_image(side: int) -> Image.Image:
    p = astronaut_path()
    if p is None:
        raise RuntimeError("the face shots need scikit-image's astronaut photo: pip install --no-deps scikit-image")
    with Image.open(p) as im:
        face = im.convert("RGB").crop((120, 0, 320, 200))  # the astronaut's head and shoulders
    return face.resize((side, side), Image.BICUBIC)


def _smallface(rng, w, h, n, fps):
    side = int(h * 0.25)
    face = _face_image(side)
    for i, img in enumerate(_moving(rng, w, h, n, fps)):
        img.paste(face, (int(w * 0.6 + 0.05 * w * math.sin(i / fps)), int(h * 0.3)))
        yield img


def _face(rng, w, h, n, fps):
    side = int(h * 0.9)
    face = _face_image(side)
    bg = tuple(int(c) for c in rng.integers(0, 80, 3))
    for i in range(n):
        t = i / fps
        img = Image.new("RGB", (w, h), bg)
        x = int((w - side) / 2 + 0.1 * w * math.sin(t))
        img.paste(face, (x, int(h * 0.05)))
        yield img


_RENDER = {"moving": _moving, "static": _static, "text": _text, "subtitle": _subtitle, "face": _face,
           "smallface": _smallface}


def write_shots(path: str | os.PathLike, shots: list[Shot], width: int = 640, height: int = 360, fps: float = 25.0,
                gop: int = 50, crf: int = 23) -> dict:
    """Encode the shots as one H.264 mp4; returns the ground truth (shots with first frame and kind)."""
    path = os.fspath(path)
    tmp = path + ".part"
    truth, frame_no = [], 0
    with av.open(tmp, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": f"keyint={gop}:scenecut=0"}
        for k, shot in enumerate(shots):
            if shot.kind not in _RENDER:
                raise ValueError(f"unknown shot kind {shot.kind!r}; known: {KINDS}")
            n = max(1, int(round(shot.seconds * fps)))
            rng = np.random.default_rng([shot.seed, k])
            truth.append({"kind": shot.kind, "first_frame": frame_no, "num_frames": n,
                          "start": frame_no / fps, "end": (frame_no + n) / fps})
            for img in _RENDER[shot.kind](rng, width, height, n, fps):
                for packet in stream.encode(av.VideoFrame.from_image(img)):
                    out.mux(packet)
            frame_no += n
        for packet in stream.encode():
            out.mux(packet)
    os.replace(tmp, path)
    return {"path": path, "fps": fps, "width": width, "height": height, "num_frames": frame_no, "shots": truth}
