"""Frame samplers: which timestamps (seconds) to take from a video.

Every sampler is registered by name in ``SAMPLERS`` and is configured by one
``SamplingConfig`` (a dataclass that round-trips to YAML/JSON). All samplers accept a
``start``/``end`` range and a cap derived from a visual-token budget:
``max_visual_tokens // tokens_per_frame`` frames at most.

    uniform   N segment midpoints (the official ``num_segments``)
    fps       a target rate, clamped to [min_frames, max_frames]
    dynamic   the frame count grows with the duration within [min_frames, max_frames]
              (the curriculum's dynamic frame sampling), rounded to ``multiple_of``
    events    (ours) ``num_frames`` frames, part of them uniform and ``event_share`` of them
              placed on brief events found in a cheap thumbnail scan of the video, so that a
              1-second event between two uniform frames is not missed. It looks at pixels, so it
              needs ``scan`` (``load_video`` passes it). The model sees the real timestamps (TPE,
              time labels), so irregular spacing costs nothing in the prompt.

A sampler is ``f(cfg, start, end, scan) -> timestamps``; ``scan(times)`` returns small
thumbnails ``[T, h, w, 3]`` uint8 and the presentation times of the frames shown at ``times``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..dataclass_io import strict_from_dict
from ..registry import Registry

Scan = Callable[[list[float]], "tuple[np.ndarray, np.ndarray]"]
SAMPLERS: Registry[Callable[["SamplingConfig", float, float, Optional[Scan]], list[float]]] = Registry("sampler")
CONTENT_SAMPLERS = frozenset({"events"})  # the samplers that need ``scan``
COUNT_SAMPLERS = ("uniform", "events")  # the samplers that take exactly ``num_frames`` frames
MAX_SCAN = 4096  # thumbnails one scan decodes at most (12 MB at 32 px)


@dataclass
class SamplingConfig:
    sampler: str = "uniform"
    num_frames: int = 16  # uniform
    fps: float = 1.0  # fps
    min_frames: int = 1  # fps, dynamic
    max_frames: int = 160  # fps, dynamic
    seconds_per_frame: float = 1.0  # dynamic: one frame per this many seconds
    multiple_of: int = 1  # dynamic: round the count to a multiple (2 suits patchify t=2)
    start: float | None = None  # seconds; None = start of the video
    end: float | None = None  # seconds; None = end of the video
    max_visual_tokens: int | None = None  # token budget for the whole video
    tokens_per_frame: int | None = None  # visual tokens one frame costs (model dependent)
    event_share: float = 0.5  # events: the fraction of num_frames placed on events (the rest uniform)
    scan_fps: float = 4.0  # events: thumbnails per second of video in the scan
    scan_size: int = 32  # events: thumbnail side (pixels)

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            SAMPLERS.get(self.sampler)  # raises with the list of known names
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 1 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        if self.seconds_per_frame <= 0 or self.multiple_of < 1:
            raise ValueError("seconds_per_frame must be > 0 and multiple_of >= 1")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        if not 0.0 <= self.event_share <= 1.0 or self.scan_fps <= 0 or self.scan_size < 4:
            raise ValueError("need 0 <= event_share <= 1, scan_fps > 0 and scan_size >= 4")
        if (self.max_visual_tokens is None) != (self.tokens_per_frame is None):
            raise ValueError("max_visual_tokens and tokens_per_frame go together")
        if self.tokens_per_frame is not None and (self.tokens_per_frame < 1 or self.max_visual_tokens < self.tokens_per_frame):
            raise ValueError(
                f"a budget of {self.max_visual_tokens} visual tokens cannot hold one frame of {self.tokens_per_frame} tokens"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SamplingConfig":
        return strict_from_dict(cls, d, "sampling options")

    def budget_frames(self) -> int | None:
        if self.max_visual_tokens is None:
            return None
        return max(1, self.max_visual_tokens // self.tokens_per_frame)


def window(cfg: SamplingConfig, duration: float) -> tuple[float, float]:
    """The [start, end) range in seconds, clipped to the video."""
    start = max(0.0, cfg.start or 0.0)
    end = duration if cfg.end is None else min(cfg.end, duration)
    if start >= duration:
        raise ValueError(f"start {start:.3f}s is beyond the video's duration {duration:.3f}s")
    if end <= start:
        raise ValueError(f"empty range [{start:.3f}, {end:.3f}) s")
    return start, end


def midpoints(start: float, end: float, n: int) -> list[float]:
    step = (end - start) / n
    return [start + (i + 0.5) * step for i in range(n)]


@SAMPLERS.register("uniform")
def _uniform(cfg: SamplingConfig, start: float, end: float, scan=None) -> list[float]:
    return midpoints(start, end, cfg.num_frames)


@SAMPLERS.register("fps")
def _fps(cfg: SamplingConfig, start: float, end: float, scan=None) -> list[float]:
    n = math.floor((end - start) * cfg.fps + 1e-9)
    if cfg.min_frames <= n <= cfg.max_frames:
        step = 1.0 / cfg.fps
        return [start + (i + 0.5) * step for i in range(n)]
    return midpoints(start, end, min(max(n, cfg.min_frames), cfg.max_frames))


@SAMPLERS.register("dynamic")
def _dynamic(cfg: SamplingConfig, start: float, end: float, scan=None) -> list[float]:
    n = math.ceil((end - start) / cfg.seconds_per_frame - 1e-9)
    m = cfg.multiple_of
    n = min(max(n, cfg.min_frames), cfg.max_frames)
    n = max(m, (n // m) * m) if n >= m else n
    return midpoints(start, end, n)


@SAMPLERS.register("events")
def _events(cfg: SamplingConfig, start: float, end: float, scan: Optional[Scan] = None) -> list[float]:
    if scan is None:
        raise ValueError("the 'events' sampler looks at the video's pixels: use load_video, or pass scan=")
    n = cfg.num_frames if cfg.budget_frames() is None else min(cfg.num_frames, cfg.budget_frames())
    m = max(2 * n, min(math.ceil((end - start) * cfg.scan_fps), MAX_SCAN))  # a long video: a sparser scan
    grid = midpoints(start, end, m)
    thumbs, shown = scan(grid)  # [m, h, w, 3] uint8, [m] presentation times
    _, first = np.unique(np.round(np.asarray(shown, dtype=np.float64), 6), return_index=True)
    first = np.sort(first)  # one candidate per distinct frame, in time order
    if len(first) <= n:  # a video with fewer frames than asked: what uniform does
        return midpoints(start, end, n)
    times = np.asarray(grid)[first]
    x = thumbs[first].reshape(len(first), -1).astype(np.float32) / 255.0  # [C, h*w*3]
    picked = pick_events(x, times, n, cfg.event_share, start, end)
    return [float(times[i]) for i in picked]


def pick_events(x: np.ndarray, times: np.ndarray, n: int, share: float, start: float, end: float) -> list[int]:
    """Indices (sorted) of ``n`` of the candidate frames ``x`` [C, D] shown at ``times`` [C].

    ``n - k`` frames sit nearest the uniform midpoints (k = round(n * share), at least one uniform
    frame). Then, k times, the candidate that differs most from *both* of its nearest chosen
    neighbours in time (mean absolute pixel difference, the smaller of the two) joins: a brief event
    differs from the frames on either side, while a lasting change (an object that enters and
    stays) resembles the next chosen frame and is left to the uniform part. A small bonus for the
    gap in time to the nearest chosen frame spreads frames out where nothing happens (a still video
    gets a uniform-like spread).
    """
    c = len(times)
    k = min(int(round(n * share)), n - 1)
    chosen = np.zeros(c, dtype=bool)
    for t in midpoints(start, end, n - k):
        order = np.argsort(np.abs(times - t), kind="stable")
        chosen[next(i for i in order if not chosen[i])] = True
    sel = np.flatnonzero(chosen)  # sorted
    idx = np.arange(c)
    pos = np.searchsorted(sel, idx)  # each candidate's chosen neighbours: sel[pos - 1] before, sel[pos] after
    prev = np.where(pos > 0, sel[np.clip(pos - 1, 0, None)], -1)
    nxt = np.where(pos < len(sel), sel[np.clip(pos, None, len(sel) - 1)], -1)
    d_prev = np.where(prev >= 0, np.abs(x - x[prev]).mean(axis=1), np.inf)  # [C]
    d_next = np.where(nxt >= 0, np.abs(x - x[nxt]).mean(axis=1), np.inf)
    span = max(end - start, 1e-9)
    for _ in range(k):
        novelty = np.minimum(d_prev, d_next)  # one side missing: the other side alone
        t_prev = np.where(prev >= 0, times[np.maximum(prev, 0)], -np.inf)
        t_next = np.where(nxt >= 0, times[np.maximum(nxt, 0)], np.inf)
        score = novelty + 0.01 * np.minimum(times - t_prev, t_next - times) / span
        score[chosen] = -np.inf
        b = int(np.argmax(score))
        chosen[b] = True
        lo = prev[b] + 1 if prev[b] >= 0 else 0  # candidates between b's chosen neighbours change a neighbour
        hi = nxt[b] if nxt[b] >= 0 else c
        if lo < b:
            nxt[lo:b] = b
            d_next[lo:b] = np.abs(x[lo:b] - x[b]).mean(axis=1)
        if b + 1 < hi:
            prev[b + 1:hi] = b
            d_prev[b + 1:hi] = np.abs(x[b + 1:hi] - x[b]).mean(axis=1)
    return np.flatnonzero(chosen).tolist()


def sample_timestamps(cfg: SamplingConfig, duration: float, scan: Optional[Scan] = None) -> list[float]:
    """Timestamps (seconds from the video's start) chosen by ``cfg`` for a video of ``duration`` s.

    ``scan`` gives a content-aware sampler (``events``) thumbnails; the others ignore it.
    """
    if duration <= 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    start, end = window(cfg, duration)
    times = SAMPLERS.get(cfg.sampler)(cfg, start, end, scan)
    cap = cfg.budget_frames()
    if cap is not None and len(times) > cap:
        times = midpoints(start, end, cap)
    return times
