"""Frame samplers: which timestamps (seconds) to take from a video.

Every sampler is registered by name in ``SAMPLERS`` and is configured by one
``SamplingConfig`` (a dataclass that round-trips to YAML/JSON). All samplers accept a
``start``/``end`` range and a cap derived from a visual-token budget:
``max_visual_tokens // tokens_per_frame`` frames at most.

    uniform   N segment midpoints (the official ``num_segments``)
    fps       a target rate, clamped to [min_frames, max_frames]
    dynamic   the frame count grows with the duration within [min_frames, max_frames]
              (the curriculum's dynamic frame sampling), rounded to ``multiple_of``
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

from ..dataclass_io import strict_from_dict
from ..registry import Registry

SAMPLERS: Registry[Callable[["SamplingConfig", float, float], list[float]]] = Registry("sampler")


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
def _uniform(cfg: SamplingConfig, start: float, end: float) -> list[float]:
    return midpoints(start, end, cfg.num_frames)


@SAMPLERS.register("fps")
def _fps(cfg: SamplingConfig, start: float, end: float) -> list[float]:
    n = math.floor((end - start) * cfg.fps + 1e-9)
    if cfg.min_frames <= n <= cfg.max_frames:
        step = 1.0 / cfg.fps
        return [start + (i + 0.5) * step for i in range(n)]
    return midpoints(start, end, min(max(n, cfg.min_frames), cfg.max_frames))


@SAMPLERS.register("dynamic")
def _dynamic(cfg: SamplingConfig, start: float, end: float) -> list[float]:
    n = math.ceil((end - start) / cfg.seconds_per_frame - 1e-9)
    m = cfg.multiple_of
    n = min(max(n, cfg.min_frames), cfg.max_frames)
    n = max(m, (n // m) * m) if n >= m else n
    return midpoints(start, end, n)


def sample_timestamps(cfg: SamplingConfig, duration: float) -> list[float]:
    """Timestamps (seconds from the video's start) chosen by ``cfg`` for a video of ``duration`` s."""
    if duration <= 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    start, end = window(cfg, duration)
    times = SAMPLERS.get(cfg.sampler)(cfg, start, end)
    cap = cfg.budget_frames()
    if cap is not None and len(times) > cap:
        times = midpoints(start, end, cap)
    return times
