"""Shots -> clips: length bounds, splitting, and each clip's filter scores and decisions."""

from __future__ import annotations

import math

from .analyze import Analysis
from .config import ScenesConfig
from .filters import FrameFilter


def shot_bounds(a: Analysis) -> list[tuple[int, int]]:
    """[first, end) frame ranges of the detected shots."""
    edges = [0] + [c for c in a.cuts if 0 < c < a.num_frames] + [a.num_frames]
    return [(s, e) for s, e in zip(edges, edges[1:]) if e > s]


def frame_time(a: Analysis, i: int, fps: float) -> float:
    return a.pts[i] if i < a.num_frames else a.end_time(fps)


def make_clips(a: Analysis, cfg: ScenesConfig, fps: float) -> tuple[list[dict], list[dict]]:
    """(clips, dropped): shots within bounds, long shots split in equal parts, short ones dropped."""
    clips, dropped = [], []
    for shot, (s, e) in enumerate(shot_bounds(a)):
        dur = frame_time(a, e, fps) - frame_time(a, s, fps)
        span = {"shot": shot, "start_frame": s, "end_frame": e, "start": round(frame_time(a, s, fps), 4),
                "end": round(frame_time(a, e, fps), 4), "duration": round(dur, 4)}
        if dur < cfg.min_clip_s:
            dropped.append({**span, "reason": "too_short",
                            "detail": f"shot of {dur:.2f}s is shorter than min_clip_s={cfg.min_clip_s}"})
            continue
        parts = max(1, math.ceil(dur / cfg.max_clip_s - 1e-9))
        edges = [s + round(k * (e - s) / parts) for k in range(parts + 1)]
        for k, (ps, pe) in enumerate(zip(edges, edges[1:])):
            d = frame_time(a, pe, fps) - frame_time(a, ps, fps)
            clips.append({"shot": shot, "part": k, "parts": parts, "start_frame": ps, "end_frame": pe,
                          "start": round(frame_time(a, ps, fps), 4), "end": round(frame_time(a, pe, fps), 4),
                          "duration": round(d, 4)})
    return clips, dropped


def score_clip(clip: dict, a: Analysis, filters: list[FrameFilter]) -> tuple[dict, list[str]]:
    """({filter: score}, [names of failed filters]) from the samples inside the clip.

    A sample belongs to a clip when its frame does; a filter that compares a frame with
    the next one only uses samples whose next frame is in the same clip (never across a cut)."""
    scores, failed = {}, []
    s, e = clip["start_frame"], clip["end_frame"]
    for f in filters:
        last = e - 1 if f.needs_next else e
        vals = [v for j, v in a.samples[f.cfg.name] if s <= j < last]
        score = f.aggregate(vals)
        scores[f.cfg.name] = None if score is None else round(score, 5)
        scores[f.cfg.name + "_samples"] = len([v for v in vals if v == v])
        if not f.keep(score):
            failed.append(f.cfg.name)
    return scores, failed
