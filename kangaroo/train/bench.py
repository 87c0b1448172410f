"""``kangaroo bench pack``: packed rows against padded batches on the same mix of samples.

The same samples (frame counts 4-32 at 112 px, kangaroo-smol's architecture with the real
SmolLM2, LLM frozen, visual path trainable) go through forward + backward twice:
packed into rows of at most ``max_len`` tokens (no padding; samples kept apart by the
block-diagonal mask), and as padded batches of ``batch`` samples (the classic collator).
Reported: real (non-pad) token fraction of what was computed, real tokens per second,
and the ratio ``speedup_vs_padded``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .data import Encoded
from .packing import greedy_rows, pack_row, pad_batch


def make_samples(config, n: int, seed: int = 0, size: int = 112) -> list[Encoded]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = int(rng.choice([4, 8, 16, 32]))
        n_vis = config.num_visual_tokens(t, size, size)
        prompt = rng.integers(10, 1000, int(rng.integers(20, 60))).tolist()
        answer = rng.integers(10, 1000, int(rng.integers(2, 40))).tolist()
        ids = prompt[:5] + [-(k + 1) for k in range(n_vis)] + prompt[5:] + answer
        labels = [-100] * (len(ids) - len(answer)) + answer
        out.append(Encoded(ids, labels, torch.randn(t, 3, size, size), torch.arange(t).float()))
    return out


def _run(model, batches) -> tuple[float, int, int]:
    real = total = 0
    t = time.perf_counter()
    for b in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(**b)
        out["loss_sum"].backward()
        model.zero_grad(set_to_none=True)
        real += int((b["segment_ids"] > 0).sum())
        total += b["input_ids"].numel()
    return time.perf_counter() - t, real, total


def bench_pack(n: int = 24, max_len: int = 1024, batch: int = 4, progress: bool = True) -> dict:
    from ..model.weights import build_smol

    model, _ = build_smol()
    model.requires_grad_(False)
    for m in (model.vision_tower, model.patchify, model.mm_projector, model.temporal_embed):
        m.requires_grad_(True)
    model.train()
    samples = make_samples(model.config, n)
    packed = [pack_row([samples[i] for i in row]) for row in greedy_rows([len(s) for s in samples], max_len)]
    padded = [pad_batch(samples[i : i + batch]) for i in range(0, n, batch)]
    _run(model, packed[:1])  # warm-up
    tp, real_p, total_p = _run(model, packed)
    td, real_d, total_d = _run(model, padded)
    assert real_p == real_d == sum(len(s) for s in samples)
    return {
        "benchmark": "pack",
        "samples": n,
        "frame_counts": sorted({int(s.pixels.shape[0]) for s in samples}),
        "packed": {"rows": len(packed), "max_len": max_len, "seconds": round(tp, 3), "tokens_computed": total_p,
                   "real_token_fraction": round(real_p / total_p, 4), "row_fill": round(real_p / (len(packed) * max_len), 4),
                   "real_tok_s": round(real_p / tp, 1)},
        "padded": {"batches": len(padded), "batch": batch, "seconds": round(td, 3), "tokens_computed": total_d,
                   "real_token_fraction": round(real_d / total_d, 4), "real_tok_s": round(real_d / td, 1)},
        "real_token_fraction": round(real_p / total_p, 4),
        "speedup_vs_padded": round((real_p / tp) / (real_d / td), 3),
    }


def format_pack(r: dict) -> str:
    p, d = r["packed"], r["padded"]
    return "\n".join([
        "| batching | real-token fraction | real tokens/s | seconds |", "|---|---|---|---|",
        f"| packed ({p['rows']} rows <= {p['max_len']}) | {p['real_token_fraction']} | {p['real_tok_s']} | {p['seconds']} |",
        f"| padded ({d['batches']} x {d['batch']}) | {d['real_token_fraction']} | {d['real_tok_s']} | {d['seconds']} |",
        f"\nspeedup_vs_padded: {r['speedup_vs_padded']}"])
