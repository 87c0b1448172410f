"""`kangaroo plan` against torch.cuda.max_memory_allocated for the Kangaroo-8B shape on one GPU.

Random weights are made on the GPU from the meta device (memcount.random_model: nothing on the
host). Full fine-tuning of stage 5 does not fit one GPU (fp32 weights + gradients + AdamW ~120
GiB before activations), so the cases are: a bf16 prefill, stage 5 with LoRA, stage 3 (LLM
frozen, the vision tower trained), and a 4-layer slice of the LLM trained in full (stage 4):
the planner is linear in the number of layers, so the slice checks the per-layer terms it
extrapolates from. Each case: a first step (AdamW's state appears), then the measured step.

    python scripts/plan_gpu_check.py [--frames 64] [--out plan_gpu.json]      # < 8 min on an H100/H200
    python scripts/plan_gpu_check.py --device cpu --tiny                      # a smoke run of the script

Exits 1 if a case is off by more than --tolerance (default 15%).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time

import torch

from kangaroo.model.config import kangaroo_8b_config, tiny_config
from kangaroo.train.memcount import _row, random_model, set_trainable_parts, train_step
from kangaroo.train.plan import Setup, inference_memory, stage_recipes, train_memory


def peak(device) -> float:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else float("nan")


def reset(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def on(row: dict, device) -> dict:
    out = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in row.items()}
    out["videos"] = [(p.to(device), t.to(device)) for p, t in row["videos"]]
    return out


def check_inference(cfg, frames, size, device) -> dict:
    reset(device)
    model = random_model(cfg, device, torch.bfloat16).eval()
    row = on(_row(cfg, frames, size, 256, 1), device)
    videos = [(p.to(torch.bfloat16), t) for p, t in row["videos"]]
    with torch.no_grad():
        model(row["input_ids"], videos=videos, use_cache=True, logits_to_keep=1)
    got = peak(device)
    del model, row, videos
    return {"predicted": inference_memory(cfg, frames, size)["total"], "measured": got}


def check_train(cfg, frames, setup, device) -> dict:
    reset(device)
    model = random_model(cfg, device)
    params = set_trainable_parts(model, setup)
    row = on(_row(cfg, frames, setup.image_size, 256, setup.labelled), device)
    opt, step = train_step(model, params, row, setup.bf16)
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)  # the steady-state step: state and weights included
    step()
    got = peak(device)
    del model, params, row, opt, step
    return {"predicted": train_memory(cfg, frames, 1, setup)["total"], "measured": got}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a tiny model (smoke run of the script itself)")
    ap.add_argument("--tolerance", type=float, default=0.15)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    device = torch.device(a.device)
    if a.tiny:
        cfg = tiny_config(llm_hidden=96, vocab=2048, image_size=112, video_token_id=2046, image_token_id=2047)
        size = 112
    else:
        cfg = kangaroo_8b_config()
        size = 448
    recipes = stage_recipes()
    s5 = dataclasses.replace(Setup.from_recipe_file(recipes[5], lora=True), image_size=size)
    s3 = dataclasses.replace(Setup.from_recipe_file(recipes[3]), image_size=size)
    s4 = dataclasses.replace(Setup.from_recipe_file(recipes[4]), image_size=size)
    sliced = dataclasses.replace(cfg)
    sliced.text_config = type(cfg.text_config).from_dict({**cfg.text_config.to_dict(), "num_hidden_layers": 4})
    cases = {"inference": lambda: check_inference(cfg, a.frames, size, device),
             "stage5_lora": lambda: check_train(cfg, a.frames, s5, device),
             "stage3": lambda: check_train(cfg, min(a.frames, 16), s3, device),
             "stage4_4_layers": lambda: check_train(sliced, a.frames, s4, device)}
    report, ok = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                  "frames": a.frames, "cases": {}}, True
    for name, fn in cases.items():
        t = time.perf_counter()
        r = fn()
        r["error"] = r["predicted"] / r["measured"] - 1 if r["measured"] == r["measured"] else None
        r["seconds"] = round(time.perf_counter() - t, 1)
        r["predicted_gib"], r["measured_gib"] = r["predicted"] / 2**30, r["measured"] / 2**30
        ok &= r["error"] is None or abs(r["error"]) <= a.tolerance
        report["cases"][name] = r
        print(f"{name:16s} predicted {r['predicted_gib']:7.2f} GiB  measured {r['measured_gib']:7.2f} GiB  "
              f"error {r['error'] if r['error'] is None else format(r['error'], '+.1%')}  ({r['seconds']} s)", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
