"""``kangaroo bench quant``: float32 / bfloat16 / int8 / int4 (torchao weight-only, the LLM only)
side by side in one run, each in its own process (so that its peak memory is its own):

- LLM weight bytes (what the tensors hold), RSS once loaded and the peak RSS (VmHWM) over the
  inference that follows (the peak counter is reset after loading);
- TTFT: prefill of the question over an encoded video + the first token (the vision tower is
  not quantised, so its time is the same in every mode and reported apart);
- decode tokens/s: ``tokens`` forced new tokens (``min_new_tokens``), after the first;
- held-out accuracy: the synthetic held-out set's first ``limit`` questions, generated answers
  (``kangaroo eval --benchmark synthetic``'s scoring).

float32 is the baseline; every other mode is also given as a ratio against it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MODES = ("fp32", "bf16", "int8", "int4")


def measure(mode: str, model: str, data: str, limit: int, frames: int, tokens: int, videos: int = 2) -> dict:
    """One mode, in this process."""
    import glob

    import torch

    from ..eval.harness import EvalConfig, run_eval
    from ..procstat import reset_peak, status_mb
    from ..video import SamplingConfig
    from .chat import KangarooChat
    from .quantize import storage_bytes

    torch.manual_seed(0)
    reset_peak()
    quant = mode if mode in ("int8", "int4") else None
    kc = KangarooChat.load(model, dtype=torch.bfloat16 if mode == "bf16" else None, quantize=quant,
                           sampling=SamplingConfig(num_frames=frames))
    llm_mb = storage_bytes(kc.model.llm()) / 2**20
    all_mb = storage_bytes(kc.model) / 2**20
    import gc

    gc.collect()
    rss_loaded = status_mb("VmRSS")
    reset_peak()  # the peak below is inference's (loading reads the float32 file first in every mode)
    paths = sorted(glob.glob(os.path.join(data, "videos", "*.mp4")))[:videos]
    ttft, rate, enc_s = [], [], []

    class Timer:  # a streamer: the first put is the prompt, then one put per new token
        def __init__(self):
            self.times = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    for p in paths:
        t = time.perf_counter()
        rows, _ = kc.encode(p)
        enc_s.append(time.perf_counter() - t)
        ids = kc.render([{"role": "user", "content": "What happens in the video?", "video": True}], rows)
        x = torch.tensor([ids])
        timer = Timer()
        with torch.inference_mode():
            t0 = time.perf_counter()
            kc.model.generate(input_ids=x, attention_mask=torch.ones_like(x), media_embeds=rows, do_sample=False,
                              max_new_tokens=tokens, min_new_tokens=tokens, streamer=timer)
        new = timer.times[1:]
        ttft.append(new[0] - t0)
        rate.append((len(new) - 1) / (new[-1] - new[0]))
    with tempfile.TemporaryDirectory() as out:
        summary = run_eval(kc, EvalConfig("synthetic", data, out, frames=frames, limit=limit), mode, progress=False)
    return {"mode": mode, "llm_weights_mb": round(llm_mb, 1), "model_weights_mb": round(all_mb, 1),
            "rss_after_load_mb": round(rss_loaded, 1), "peak_rss_mb": round(status_mb("VmHWM"), 1),  # during inference
            "encode_s": round(statistics.median(enc_s), 3), "ttft_s": round(statistics.median(ttft), 3),
            "decode_tokens_per_s": round(statistics.median(rate), 2), "prompt_tokens": len(ids),
            "accuracy": summary.get("accuracy"), "questions": summary.get("n"),
            "quantization": getattr(kc.model, "quantization", None)}


def bench_quant(model: str = "kangaroo-smol", data: str = "data/smol/heldout_short", limit: int = 40,
                frames: int = 16, tokens: int = 32, modes: tuple[str, ...] = MODES, progress: bool = True) -> dict:
    from tqdm import tqdm

    if not os.path.isdir(os.path.join(data, "videos")):
        raise FileNotFoundError(f"{data}: no held-out set here (a folder with videos/ and the QA files)")
    rows = []
    for mode in tqdm(modes, desc="bench quant (one process per mode)", disable=not progress):
        cmd = [sys.executable, "-m", "kangaroo.model.bench_quant", mode, model, data, str(limit), str(frames), str(tokens)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            rows.append({"mode": mode, "error": (r.stderr.strip().splitlines() or ["failed"])[-1]})
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    base = next((r for r in rows if r["mode"] == "fp32" and "error" not in r), None)
    for r in rows:
        if base is not None and "error" not in r:
            r["vs_fp32"] = {"llm_weights": round(r["llm_weights_mb"] / base["llm_weights_mb"], 3),
                            "peak_rss": round(r["peak_rss_mb"] / base["peak_rss_mb"], 3),
                            "ttft": round(r["ttft_s"] / base["ttft_s"], 3),
                            "decode_tokens_per_s": round(r["decode_tokens_per_s"] / base["decode_tokens_per_s"], 3)}
    import torch

    return {"benchmark": "quant", "model": model, "data": data, "frames": frames, "questions": limit,
            "tokens": tokens, "device": "cpu", "threads": torch.get_num_threads(), "rows": rows}


def format_quant(r: dict) -> str:
    lines = [f"{r['model']} on CPU ({r['threads']} threads), {r['frames']} frames, {r['tokens']} new tokens; "
             f"accuracy: the first {r['questions']} questions of {r['data']}, generated answers",
             "", "| mode | LLM weights MB | peak RSS MB | TTFT s | decode tok/s | accuracy | vs fp32 (weights / TTFT / tok/s) |",
             "|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        if "error" in x:
            lines.append(f"| {x['mode']} | not supported here: {x['error']} | | | | | |")
            continue
        v = x.get("vs_fp32", {})
        lines.append(f"| {x['mode']} | {x['llm_weights_mb']} | {x['peak_rss_mb']} | {x['ttft_s']} | "
                     f"{x['decode_tokens_per_s']} | {x['accuracy']} ({x['questions']}) | "
                     f"{v.get('llm_weights')} / {v.get('ttft')} / {v.get('decode_tokens_per_s')} |")
    return "\n".join(lines)


if __name__ == "__main__":  # one mode, in its own process (bench_quant runs this)
    m, name, d, lim, fr, tk = sys.argv[1:7]
    print(json.dumps(measure(m, name, d, int(lim), int(fr), int(tk))))
