"""``kangaroo bench model``: time to first token and memory against frame count.

CPU part (always): kangaroo-smol's architecture (small EVA tower at 112 px + the real
SmolLM2-135M-Instruct, untrained visual weights; timing does not depend on training)
on a generated video: time to first token (decode + vision + prefill + first token)
and peak RSS at 16, 64 and 160 frames, each in a fresh process; and on a 64-frame
video, the second round's time to first token against the first's
(``second_round_ttft_ratio``), the effect of encoding once and reusing the KV cache.

GPU part (when CUDA is available): the real 8B configuration with random weights in
bf16: peak GPU memory and prefill time at 16, 64 and 160 frames at 448 px.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from ..procstat import reset_peak, status_mb

FRAMES = (16, 64, 160)


def _video(workdir: str) -> str:
    from ..synth import SynthConfig, make_timeline, write_video

    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "bench_model_120s.mp4")
    if not os.path.exists(path):
        write_video(make_timeline(SynthConfig(duration=120.0, fps=8.0, num_objects=12, needle=True), 5), path)
    return path


def cpu_case(video: str, frames: int, second_round: bool) -> dict:
    import torch

    from ..video import SamplingConfig
    from .chat import GenerationConfig, KangarooChat
    from .weights import build_smol

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, tok = build_smol()
    kc = KangarooChat(model, tok, sampling=SamplingConfig(num_frames=frames))
    gen = GenerationConfig.greedy(8)
    reset_peak()  # peak memory from here on, not model loading's
    base = status_mb("VmRSS")
    t = time.perf_counter()
    conv = kc.start(video)  # decode + vision tower, once per conversation
    stream = kc.ask_stream(conv, "What happens in the video?", gen)
    next(stream, None)
    ttft1 = time.perf_counter() - t
    for _ in stream:  # finish round one
        pass
    out = {"frames": frames, "visual_tokens": conv.frames["visual_tokens"], "ttft_s": round(ttft1, 3),
           "peak_rss_mb": round(status_mb("VmHWM") - base, 1)}
    if second_round:
        t = time.perf_counter()
        stream = kc.ask_stream(conv, "Which object appears first?", gen)
        next(stream, None)
        ttft2 = time.perf_counter() - t
        for _ in stream:
            pass
        out.update(second_round_ttft_s=round(ttft2, 4), second_round_ttft_ratio=round(ttft2 / ttft1, 4),
                   reused_tokens=conv.stats[-1]["reused_tokens"])
    return out


def gpu_cases() -> list[dict]:
    import torch

    from .config import kangaroo_8b_config
    from .modeling import KangarooForConditionalGeneration

    cfg = kangaroo_8b_config()
    vid = cfg.video_token_id
    with torch.device("cuda"):
        model = KangarooForConditionalGeneration(cfg).to(torch.bfloat16).eval()
    out = []

    def prefill(n: int) -> int:
        px = torch.randn(n, 3, 448, 448, device="cuda", dtype=torch.bfloat16)
        ts = torch.arange(n, device="cuda").float()
        with torch.inference_mode():
            rows = model.visual_rows([(px, ts)])
            ids = torch.cat([torch.arange(1, 30, device="cuda"),
                             torch.full((rows.shape[0],), vid, device="cuda")])[None]
            model(ids, media_embeds=rows, logits_to_keep=1)
        return int(ids.shape[1])

    prefill(FRAMES[0])  # warm-up: kernels chosen and loaded, not timed
    for n in FRAMES:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        t = time.perf_counter()
        tokens = prefill(n)
        torch.cuda.synchronize()
        out.append({"frames": n, "tokens": tokens, "prefill_s": round(time.perf_counter() - t, 3),
                    "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)})
    return out


def bench_model(workdir: str = ".bench", progress: bool = True) -> dict:
    from tqdm import tqdm

    video = _video(workdir)
    cases = []
    for n in tqdm(FRAMES, desc="bench model (cpu)", disable=not progress):
        cmd = [sys.executable, "-m", "kangaroo.model.bench", video, str(n), "1" if n == 64 else "0"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"bench case {n} frames failed: {r.stderr.strip()[-2000:]}")
        cases.append(json.loads(r.stdout.strip().splitlines()[-1]))
    report = {"benchmark": "model", "cpu": {"model": "kangaroo-smol architecture (SmolLM2-135M)", "cases": cases}}
    r64 = next(c for c in cases if c["frames"] == 64)
    report["second_round_ttft_ratio"] = r64["second_round_ttft_ratio"]
    try:
        import torch

        report["gpu"] = {"model": "8B default, random weights, bf16", "cases": gpu_cases()} if torch.cuda.is_available() \
            else {"skipped": "no CUDA device"}
    except Exception as e:  # report, never hide
        report["gpu"] = {"error": f"{type(e).__name__}: {e}"}
    return report


def format_model(report: dict) -> str:
    lines = ["| frames | visual tokens | TTFT s | peak RSS MB |", "|---|---|---|---|"]
    for c in report["cpu"]["cases"]:
        lines.append(f"| {c['frames']} | {c['visual_tokens']} | {c['ttft_s']} | {c['peak_rss_mb']} |")
    lines.append(f"\nsecond-round TTFT / first-round TTFT at 64 frames: {report['second_round_ttft_ratio']}")
    lines.append(f"gpu: {json.dumps(report['gpu'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(cpu_case(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1")))
