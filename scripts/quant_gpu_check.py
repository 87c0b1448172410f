"""Kangaroo-8B at 64 frames in bf16 / int8 / int4 on a GPU: does int4 fit in 8 GiB of
``torch.cuda.max_memory_allocated``, and what does it cost? (issue #26, quantised inference)

    python scripts/quant_gpu_check.py                       # the 8B shape, random weights
    python scripts/quant_gpu_check.py --model DIR --video V # a real Kangaroo folder and video
    python scripts/quant_gpu_check.py --model DIR --data data/smol/heldout_short --limit 40  # + accuracy
    python scripts/quant_gpu_check.py --tiny --device cpu   # a smoke run of this script, anywhere

Each mode runs in its own process (its peak is its own). The model is built (random weights, the
paper's layout: EVA02-CLIP-L/14 at 448 px + Llama-3-8B) or loaded in bf16 on the GPU, the LLM is
quantised with torchao (kangaroo/model/quantize.py: int4 = tinygemm's tile-packed layout, group
128), the peak counter is reset, and then: the vision tower encodes ``--frames`` frames, the
prompt (the video's visual tokens and a question) is prefilled and ``--tokens`` tokens are
decoded. Reported per mode: the peak over that inference, the memory the weights take, time to
first token (prefill of the encoded video + first token), encode time, decode tokens/s; with
``--data``, held-out accuracy (generated answers) and its difference from bf16.
Prints a JSON line per mode and a markdown table; exit status 1 when int4 is over ``--budget-gib``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def run_mode(a) -> dict:
    import torch

    from kangaroo.model import KangarooForConditionalGeneration, kangaroo_8b_config, tiny_config
    from kangaroo.model.quantize import quantize_llm, storage_bytes

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(0)
    chat = None
    if a.model:
        from kangaroo.model.chat import KangarooChat
        from kangaroo.video import SamplingConfig

        chat = KangarooChat.load(a.model, device=a.device, dtype=dtype, sampling=SamplingConfig(num_frames=a.frames),
                                 quantize=None if a.mode == "bf16" else a.mode)
        model = chat.model
    else:
        cfg = tiny_config(video_token_id=256, image_token_id=257) if a.tiny else kangaroo_8b_config()
        prev = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        with dev:
            model = KangarooForConditionalGeneration(cfg).eval()
        torch.set_default_dtype(prev)
        if a.mode != "bf16":
            model.quantization = quantize_llm(model, a.mode)
    weights_gib = storage_bytes(model) / 2**30
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    vc = model.config.vision_config
    size = vc["image_size"] if isinstance(vc, dict) else vc.image_size
    with torch.inference_mode():
        t = time.perf_counter()
        if chat is not None and a.video:
            rows, _ = chat.encode(a.video)
        else:  # random frames in the model's own preprocessing size
            pixels = torch.randn(a.frames, 3, size, size, device=dev, dtype=dtype)
            ts = torch.linspace(0, a.frames - 1, a.frames, device=dev)
            feats = torch.cat([model.tower_features(pixels[i: i + a.chunk]) for i in range(0, a.frames, a.chunk)])
            rows = model.video_block(model.encode_video(pixels, ts, features=feats), ts)
        sync()
        encode_s = time.perf_counter() - t
        vid = model.config.video_token_id
        ids = torch.tensor([[1] * 8 + [vid] * rows.shape[0] + [2] * 24], device=dev)
        times = []

        class Timer:
            def put(self, value):
                sync()
                times.append(time.perf_counter())

            def end(self):
                pass

        t0 = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), media_embeds=rows, do_sample=False,
                       max_new_tokens=a.tokens, min_new_tokens=a.tokens, streamer=Timer(), pad_token_id=0)
    new = times[1:]
    out = {"mode": a.mode, "frames": a.frames, "visual_tokens": int(rows.shape[0]), "prompt_tokens": int(ids.shape[1]),
           "weights_gib": round(weights_gib, 3), "encode_s": round(encode_s, 3), "ttft_s": round(new[0] - t0, 3),
           "decode_tokens_per_s": round((len(new) - 1) / (new[-1] - new[0]), 2),
           "quantization": getattr(model, "quantization", None)}
    if cuda:
        out["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        out["gpu"] = torch.cuda.get_device_name()
    if chat is not None and a.data:
        import tempfile

        from kangaroo.eval.harness import EvalConfig, run_eval

        with tempfile.TemporaryDirectory() as d:
            s = run_eval(chat, EvalConfig("synthetic", a.data, d, frames=a.frames, limit=a.limit), a.mode, progress=False)
        out.update(accuracy=s.get("accuracy"), questions=s.get("n"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a Kangaroo folder (default: the 8B layout, random weights)")
    ap.add_argument("--video", default=None, help="with --model: encode this video (default: random frames)")
    ap.add_argument("--data", default=None, help="with --model: a held-out set for accuracy")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=16, help="frames per vision-tower call")
    ap.add_argument("--modes", default="bf16,int8,int4")
    ap.add_argument("--budget-gib", type=float, default=8.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a tiny random model (a smoke run of the script)")
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)  # one mode, in a child process
    a = ap.parse_args()
    if a.mode:
        print(json.dumps(run_mode(a)))
        return 0
    rows = []
    for mode in a.modes.split(","):
        argv = [sys.executable, __file__, "--mode", mode] + sys.argv[1:]
        r = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if r.returncode:
            rows.append({"mode": mode, "error": (r.stderr.strip().splitlines() or ["failed"])[-1]})
        else:
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    base = next((r for r in rows if r["mode"] == "bf16" and "accuracy" in r), None)
    print("\n| mode | peak GiB (max_memory_allocated) | weights GiB | encode s | TTFT s | decode tok/s | accuracy |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['mode']} | error: {r['error']} | | | | | |")
            continue
        acc = r.get("accuracy")
        if acc is not None and base is not None:
            acc = f"{acc} ({r['questions']}; {acc - base['accuracy']:+.4f} vs bf16)"
        print(f"| {r['mode']} | {r.get('max_memory_allocated_gib', 'n/a (cpu)')} | {r['weights_gib']} | {r['encode_s']} | "
              f"{r['ttft_s']} | {r['decode_tokens_per_s']} | {acc if acc is not None else 'not measured'} |")
    int4 = next((r for r in rows if r["mode"] == "int4" and "error" not in r), None)
    if int4 is None or "max_memory_allocated_gib" not in int4:
        return 0 if a.device != "cuda" else 1
    ok = int4["max_memory_allocated_gib"] <= a.budget_gib
    print(f"\nint4 at {a.frames} frames: {int4['max_memory_allocated_gib']} GiB, "
          f"{'within' if ok else 'OVER'} the {a.budget_gib} GiB goal")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
