"""A folder of image frames as a video (MVBench's episodic_reasoning ships TVQA that way).

A frame folder holds one image per frame (``00001.jpg``, ``00002.jpg``, ...) shot at a
known rate. ``probe`` and ``load_video`` accept such a folder wherever they accept a video
file, and the samplers work on it unchanged: its duration is ``frames / fps`` and every
frame carries its true timestamp.

- Order and time: frames are taken in the order of the number in their names; frame
  ``n`` is shown from ``(n - first) / fps`` seconds, so a gap in the numbering is a gap in
  time (a dropped frame), not a silent shift of every later frame. Names without numbers
  are ordered by name and timed by position.
- The rate: ``fps`` given by the caller (``DecodeOptions.frame_fps``), else the rate the
  folder's name or its parent's states as ``fps<N>`` or ``<N>fps`` (``frames_fps3_hq``,
  the MVBench layout). A folder that states no rate is refused: a guessed rate would put
  every timestamp the model sees in the wrong place.
"""

from __future__ import annotations

import os
import re
import time
from typing import Sequence

import numpy as np

from .errors import NotAVideoError, VideoDecodeError, VideoTimeoutError, VideoTooLargeError
from .probe import VideoInfo, VideoLimits, _check_dims

FRAMES_CONTAINER = "frames"  # VideoInfo.container of a frame folder
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_RATE = re.compile(r"(?:^|[^a-z0-9])(?:fps[_-]?(\d+(?:\.\d+)?)|(\d+(?:\.\d+)?)[_-]?fps)(?=$|[^a-z0-9])", re.I)
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def frame_files(path: str) -> list[str]:
    """The folder's frame image names, in frame order."""
    try:
        names = [n for n in os.listdir(path) if n.lower().endswith(FRAME_EXTENSIONS) and not n.startswith(".")]
    except OSError as e:
        raise NotAVideoError(path, f"cannot list the folder ({e.strerror or e})") from None
    return sorted(names, key=lambda n: (_number(n) is None, _number(n) or 0, n))


def _number(name: str) -> int | None:
    m = _LAST_NUMBER.search(os.path.splitext(name)[0])
    return int(m.group(1)) if m else None


def stated_fps(path: str) -> float | None:
    """The frame rate the folder's own name or its parent's states (``frames_fps3_hq`` -> 3)."""
    here = os.path.abspath(path)
    for name in (os.path.basename(here), os.path.basename(os.path.dirname(here))):
        m = _RATE.search(name)
        if m:
            return float(m.group(1) or m.group(2))
    return None


def frame_times(names: list[str], fps: float) -> np.ndarray:
    """Each frame's presentation time: by its number where every name has a distinct one, else by position."""
    nums = [_number(n) for n in names]
    if None not in nums and len(set(nums)) == len(nums):
        return (np.asarray(nums, dtype=np.float64) - nums[0]) / fps
    return np.arange(len(names), dtype=np.float64) / fps


def probe_frame_folder(path: str, limits: VideoLimits = VideoLimits(), fps: float | None = None) -> VideoInfo:
    from PIL import Image, UnidentifiedImageError

    names = frame_files(path)
    if not names:
        raise NotAVideoError(path, "is a directory, not a video file (and holds no image frames: "
                                   f"{', '.join(FRAME_EXTENSIONS)})")
    rate = fps if fps is not None else stated_fps(path)
    if rate is None:
        raise NotAVideoError(path, f"a folder of {len(names)} frames that states no frame rate: name it (or its "
                                   "parent) with fps<N>, e.g. frames_fps3, or give the rate (DecodeOptions.frame_fps)")
    if not rate > 0:
        raise NotAVideoError(path, f"frame rate must be > 0, got {rate}")
    first = os.path.join(path, names[0])
    try:
        with Image.open(first) as im:
            width, height, fmt = im.size[0], im.size[1], (im.format or "image").lower()
    except (UnidentifiedImageError, OSError) as e:
        raise VideoDecodeError(first, f"first frame is not a readable image ({e})") from None
    _check_dims(path, width, height, limits)
    times = frame_times(names, rate)
    duration = float(times[-1]) + 1.0 / rate
    if duration > limits.max_duration_s:
        raise VideoTooLargeError(path, f"duration {duration:.0f}s exceeds the limit of {limits.max_duration_s:.0f}s")
    gaps = len(names) > 1 and bool(np.any(np.diff(times) > 1.5 / rate))
    return VideoInfo(path=path, duration=duration, fps=float(rate), variable_fps=gaps, num_frames=len(names),
                     num_frames_exact=True, width=int(width), height=int(height), rotation=0, codec=fmt,
                     container=FRAMES_CONTAINER, has_audio=False, start_time=0.0, keyframes=len(names))


def decode_frame_folder(info: VideoInfo, times: Sequence[float], opts) -> tuple[np.ndarray, np.ndarray, dict]:
    """The frames on screen at ``times``: the last frame whose time is not after each one."""
    from PIL import Image, UnidentifiedImageError

    from .decode import output_size

    end = None if opts.timeout_s is None else time.monotonic() + opts.timeout_s
    names = frame_files(info.path)
    if len(names) != info.num_frames:
        raise VideoDecodeError(info.path, f"the folder changed: {info.num_frames} frames when probed, "
                                          f"{len(names)} now")
    stamps = frame_times(names, info.fps)
    w, h = output_size(info, opts)
    idx = np.clip(np.searchsorted(stamps, np.asarray(times, dtype=np.float64) + 1e-9, side="right") - 1,
                  0, len(names) - 1)
    cache: dict[int, np.ndarray] = {}
    for i in idx.tolist():
        if i in cache:
            continue
        if end is not None and time.monotonic() > end:
            raise VideoTimeoutError(info.path, f"decoding took longer than {opts.timeout_s:g}s")
        f = os.path.join(info.path, names[i])
        try:
            with Image.open(f) as im:
                if im.format == "JPEG":
                    im.draft("RGB", (w, h))  # decode at a reduced scale when that is still large enough
                im = im.convert("RGB")
                if im.size != (w, h):
                    im = im.resize((w, h), Image.BILINEAR)
                cache[i] = np.asarray(im)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise VideoDecodeError(f, f"frame {i} of {info.path} is not a readable image ({e})") from None
    frames = np.stack([cache[i] for i in idx.tolist()])
    return frames, stamps[idx], {"backend": "frames", "decoded": len(cache), "seeks": 0}
