"""``kangaroo bench sampler``: does the ``events`` sampler see brief events that uniform misses?

On generated videos with one 1-second "needle" each (``kangaroo synth``, ground truth known), at
the same frame count, it measures for ``uniform`` (the baseline) and ``events`` (ours):

    needle_seen   the fraction of videos where a sampled frame shows the needle
    seconds       probe + sampling + decode time per video (the scan is included for events)

and reports the ratio of both (events / uniform). Short videos (8-30 s) are sampled at 16 and 32
frames, long ones (60-180 s) at 64 and 128: the counts the model is evaluated at.
"""

from __future__ import annotations

import os
import time

import numpy as np

CASES = {"short": ((8.0, 30.0), (16, 32)), "long": ((60.0, 180.0), (64, 128))}


def bench_videos(workdir: str, quick: bool) -> dict[str, list[tuple[str, float, float, float]]]:
    """(path, needle start, needle end, fps) per video of each case; generated once, cached."""
    from ..synth import SynthConfig, make_timeline, write_video
    from ..synth.dataset import video_config

    counts = {"short": 4, "long": 1} if quick else {"short": 40, "long": 16}
    out = {}
    for case, ((lo, hi), _) in CASES.items():
        rng = np.random.default_rng(5 if case == "short" else 6)
        rows = []
        for i in range(counts[case]):
            cfg = video_config(SynthConfig(needle=True, num_objects=4 if case == "short" else 8), rng, lo, hi)
            tl = make_timeline(cfg, seed=int(rng.integers(1 << 30)))
            path = os.path.join(workdir, "sampler", f"{case}_{i:03d}.mp4")
            if not os.path.exists(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                write_video(tl, path)
            needle = next(o for o in tl.objects if o.needle)
            rows.append((path, needle.t_in, needle.t_out, cfg.fps))
        out[case] = rows
    return out


def bench_sampler(workdir: str = ".bench", quick: bool = False, progress: bool = True) -> dict:
    from tqdm import tqdm

    from .decode import load_video
    from .sampling import SamplingConfig

    videos = bench_videos(workdir, quick)
    for sampler in ("uniform", "events"):  # warm-up (imports, codec set-up), not timed
        load_video(videos["short"][0][0], SamplingConfig(sampler=sampler, num_frames=4))
    jobs = [(case, n) for case, (_, ns) in CASES.items() for n in ns]
    total = sum(len(videos[c]) for c, _ in jobs) * 2
    bar = tqdm(total=total, desc="bench sampler", unit="video", disable=not progress)
    cases = []
    for case, n in jobs:
        res = {}
        for sampler in ("uniform", "events"):
            seen, secs = 0, 0.0
            for path, t_in, t_out, fps in videos[case]:
                t = time.perf_counter()
                f = load_video(path, SamplingConfig(sampler=sampler, num_frames=n))
                secs += time.perf_counter() - t
                half = 0.5 / fps  # a synthetic frame shows the state half-way through its display interval
                seen += any(t_in <= s + half < t_out for s in f.timestamps)
                bar.update(1)
            k = len(videos[case])
            res[sampler] = {"needle_seen": round(seen / k, 4), "seconds_per_video": round(secs / k, 4)}
        cases.append({"videos": case, "num_videos": len(videos[case]), "frames": n, "results": res,
                      "seen_ratio": round(res["events"]["needle_seen"] / max(res["uniform"]["needle_seen"], 1e-9), 3),
                      "time_ratio": round(res["events"]["seconds_per_video"] / res["uniform"]["seconds_per_video"], 2)})
    bar.close()
    return {"benchmark": "sampler", "baseline": "uniform", "cases": cases}


def format_sampler(report: dict) -> str:
    lines = ["| videos | frames | needle seen: uniform | events | seconds/video: uniform | events | time ratio |",
             "|---|---|---|---|---|---|---|"]
    for c in report["cases"]:
        u, e = c["results"]["uniform"], c["results"]["events"]
        lines.append(f"| {c['videos']} ({c['num_videos']}) | {c['frames']} | {u['needle_seen']:.2f} | {e['needle_seen']:.2f} "
                     f"| {u['seconds_per_video']:.2f} | {e['seconds_per_video']:.2f} | {c['time_ratio']:.2f}x |")
    return "\n".join(lines)
