"""Needle in a video haystack (like LongVA's V-NIAH), on ``kangaroo synth`` videos.

For each needle depth, videos of ``duration`` seconds hide a brief distinctive event at
that depth; at each frame count the model is asked what the brief event was (multiple
choice). The accuracy grid (frame count x depth) is saved as JSON and a heat-map PNG.
"""

from __future__ import annotations

import json
import os

import numpy as np
from tqdm import tqdm

from ..model.chat import KangarooChat
from ..synth import SynthConfig, make_timeline, write_video
from ..synth.qa import needle_items
from ..video import SamplingConfig
from . import core

FRAMES = (8, 16, 32, 64, 128, 160)
DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)


def needle_suite(kc: KangarooChat, out: str, frame_counts=FRAMES, depths=DEPTHS, duration: float = 120.0,
                 per_cell: int = 2, needle_seconds: float = 1.0, seed: int = 0, progress: bool = True,
                 mc_scoring: str = "generate", sampler: str = "uniform") -> dict:
    if mc_scoring not in core.SCORINGS:
        raise ValueError(f"mc_scoring must be one of {core.SCORINGS}, got {mc_scoring!r}")
    os.makedirs(os.path.join(out, "videos"), exist_ok=True)
    cases = []
    for d in depths:
        for r in range(per_cell):
            cfg = SynthConfig(duration=duration, fps=8.0, num_objects=max(4, int(duration // 15)), needle=True,
                              needle_depth=d, needle_seconds=needle_seconds)
            vseed = seed * 1000 + int(d * 100) * 10 + r
            tl = make_timeline(cfg, vseed)
            path = os.path.join(out, "videos", f"niah_d{int(d * 100):02d}_{r}.mp4")
            if not os.path.exists(path):
                write_video(tl, path)
            q = needle_items(tl, np.random.default_rng(vseed))[0]
            cases.append((d, path, q))
    grid = np.zeros((len(frame_counts), len(depths)))
    bar = tqdm(total=len(frame_counts) * len(cases), desc="needle suite", disable=not progress)
    for i, n in enumerate(frame_counts):
        for d, path, q in cases:
            rows, _ = kc.encode(path, SamplingConfig(sampler=sampler, num_frames=n))
            pred = core.answer(kc, rows, [core.Question(q["question"], q["candidates"])], mc_scoring)[0]["pred"]
            grid[i, depths.index(d)] += pred == q["answer_index"]
            bar.update(1)
    bar.close()
    grid /= per_cell
    result = {"benchmark": "niah", "frames": list(frame_counts), "depths": list(depths), "duration_s": duration,
              "needle_seconds": needle_seconds, "per_cell": per_cell, "mc_scoring": mc_scoring, "sampler": sampler,
              "accuracy_grid": grid.round(4).tolist(),
              "accuracy": round(float(grid.mean()), 4),
              "accuracy_by_frames": {int(n): round(float(grid[i].mean()), 4) for i, n in enumerate(frame_counts)}}
    with open(os.path.join(out, "niah.json"), "w") as f:
        json.dump(result, f, indent=1)
    heatmap(result, os.path.join(out, "niah.png"))
    return result


def heatmap(result: dict, png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = np.array(result["accuracy_grid"])
    fig, ax = plt.subplots(figsize=(6, 4))
    im = ax.imshow(g.T, origin="lower", cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(result["frames"])), result["frames"])
    ax.set_yticks(range(len(result["depths"])), [f"{d:.0%}" for d in result["depths"]])
    ax.set_xlabel("frames sampled")
    ax.set_ylabel("needle depth")
    ax.set_title(f"needle in a {result['duration_s']:.0f} s video ({result['needle_seconds']:.0f} s needle, "
                 f"MC by {result.get('mc_scoring', 'generate')})", fontsize=10)
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            ax.text(i, j, f"{g[i, j]:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
