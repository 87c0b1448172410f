"""Golden outputs of timm's EVA02-CLIP-L/14 on a seeded random checkpoint (EVA-CLIP layout).

Our vision tower (kangaroo/model/vision.py) must compute what timm's ``Eva`` computes on the
same weights. timm cannot live in the runtime environment (it pulls in torchvision), so this
script runs in a throw-away venv and writes small golden files; the test
(tests/model/test_timm_fidelity.py) regenerates the same seeded checkpoint with this module's
``make_checkpoint`` in the runtime env, loads it through ``kangaroo assemble``'s reader and
compares.

Run (once; the outputs are committed under tests/model/golden/)::

    python3 -m venv /tmp/timmenv
    /tmp/timmenv/bin/pip install /opt/wheels/torch-2.13.0+cpu-*.whl timm   # or: pip install torch timm
    nice -n 10 /tmp/timmenv/bin/python scripts/timm_golden.py --out tests/model/golden

The checkpoint has the full EVA02-CLIP-L shapes (24 blocks, width 1024, SwiGLU 2730, 16x16
pre-training grid) and the official file's extras (rope tables, final norm, CLIP head, a
text tower, ``logit_scale``), filled with seeded noise; the extras must be ignored.
timm loads it through its own ``checkpoint_filter_fn`` with ``antialias=False`` (timm's
default resamples ``pos_embed`` with antialias on, unlike EVA-CLIP's own interpolation).
Outputs: the last block's patch tokens (CLS dropped, before the final norm) for one seeded
frame at 224 px (``eva02_large_patch14_clip_224``) and 448 px (``eva02_large_patch14_clip_336``
at ``img_size=448``): the L2 norms of 256 evenly spaced tokens and 256 values at seeded positions.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

SEED = 1234
EVA02_L = dict(width=1024, depth=24, mlp=2730, patch=14, grid=16, head_dim=64, embed=768)
SUBSAMPLE = 256  # values kept per output
NORMS = 256  # token norms kept per output


def _shapes(width: int, depth: int, mlp: int, patch: int, grid: int, head_dim: int, embed: int) -> dict:
    """Every tensor of an EVA-CLIP EVA02 checkpoint (``visual.*`` + a small text tower)."""
    w, rope = width, (grid * grid, head_dim)
    s = {"visual.patch_embed.proj.weight": (w, 3, patch, patch), "visual.patch_embed.proj.bias": (w,),
         "visual.cls_token": (1, 1, w), "visual.pos_embed": (1, 1 + grid * grid, w),
         "visual.rope.freqs_cos": rope, "visual.rope.freqs_sin": rope,
         "visual.norm.weight": (w,), "visual.norm.bias": (w,), "visual.head.weight": (embed, w),
         "visual.head.bias": (embed,), "logit_scale": (),
         "text.positional_embedding": (77, embed), "text.token_embedding.weight": (512, embed),
         "text.ln_final.weight": (embed,), "text.ln_final.bias": (embed,), "text.text_projection": (embed, embed)}
    for i in range(depth):
        b = f"visual.blocks.{i}."
        for n in ("norm1", "norm2", "attn.inner_attn_ln"):
            s[b + n + ".weight"], s[b + n + ".bias"] = (w,), (w,)
        for n in ("q_proj", "k_proj", "v_proj"):
            s[b + f"attn.{n}.weight"] = (w, w)
        s[b + "attn.q_bias"], s[b + "attn.v_bias"] = (w,), (w,)
        s[b + "attn.proj.weight"], s[b + "attn.proj.bias"] = (w, w), (w,)
        s[b + "attn.rope.freqs_cos"], s[b + "attn.rope.freqs_sin"] = rope, rope
        s[b + "mlp.w1.weight"], s[b + "mlp.w1.bias"] = (mlp, w), (mlp,)
        s[b + "mlp.w2.weight"], s[b + "mlp.w2.bias"] = (mlp, w), (mlp,)
        s[b + "mlp.ffn_ln.weight"], s[b + "mlp.ffn_ln.bias"] = (mlp,), (mlp,)
        s[b + "mlp.w3.weight"], s[b + "mlp.w3.bias"] = (w, mlp), (w,)
    return s


def _scale(key: str) -> tuple[float, float]:
    """(mean, std) of the noise: LayerNorm gains near 1, q/k large enough for peaked attention."""
    if key.endswith(("norm1.weight", "norm2.weight", "ln.weight", "ffn_ln.weight")):
        return 1.0, 0.1
    if key.endswith(("q_proj.weight", "k_proj.weight")):
        return 0.0, 0.05
    if "patch_embed.proj.weight" in key:
        return 0.0, 0.04
    return 0.0, 0.02


def make_checkpoint(seed: int = SEED, **shape) -> dict[str, torch.Tensor]:
    """A seeded random EVA-CLIP-layout state dict (float32), the same in any env with this torch."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shp in _shapes(**{**EVA02_L, **shape}).items():
        mean, std = _scale(k)
        out[k] = torch.randn(shp, generator=g) * std + mean
    return out


def make_frames(size: int, seed: int = SEED + 1) -> torch.Tensor:
    return torch.randn((1, 3, size, size), generator=torch.Generator().manual_seed(seed))


def fingerprint(state: dict[str, torch.Tensor]) -> dict[str, float]:
    """A few sums that tell a different checkpoint from a different model."""
    keys = ("visual.pos_embed", "visual.blocks.0.attn.q_proj.weight", "visual.blocks.23.mlp.w3.weight")
    return {k: float(state[k].double().sum()) for k in keys if k in state}


def summarise(tokens: torch.Tensor, seed: int = SEED) -> dict:
    """tokens [N, C] -> the L2 norms of 256 evenly spaced tokens + a fixed subsample of values
    (indices from the seed), at 7 significant digits (float32's precision)."""
    n = tokens.shape[0]
    rows = torch.linspace(0, n - 1, min(n, NORMS)).round().long()
    flat = tokens.reshape(-1)
    idx = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))[:SUBSAMPLE].sort().values
    r7 = lambda xs: [float(f"{x:.7g}") for x in xs]  # noqa: E731
    return {"shape": list(tokens.shape), "norm_rows": rows.tolist(), "norms": r7(tokens[rows].norm(dim=-1).tolist()),
            "index": idx.tolist(), "values": r7(flat[idx].tolist())}


def _import_timm():
    # The CPU torch wheel comes without torchvision's C++ ops, and torchvision's import registers
    # fake kernels for them (torchvision::nms, qnms, roi_align, ...), failing on the first that does
    # not exist. Each missing op is defined (a placeholder schema; timm never runs them) and the
    # import retried.
    import re
    import sys

    lib = getattr(_import_timm, "lib", None) or torch.library.Library("torchvision", "FRAGMENT")
    _import_timm.lib = lib  # keep the registrations alive
    for _ in range(64):
        try:
            import torchvision  # noqa: F401
            break
        except RuntimeError as e:
            m = re.search(r"operator torchvision::(\w+) does not exist", str(e))
            if not m:
                raise
            lib.define(f"{m.group(1)}(Tensor x) -> Tensor")
            for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
                del sys.modules[name]
    import timm
    from timm.models.eva import checkpoint_filter_fn

    return timm, checkpoint_filter_fn


def timm_tokens(state: dict, size: int) -> torch.Tensor:
    timm, checkpoint_filter_fn = _import_timm()
    name = "eva02_large_patch14_clip_224" if size == 224 else "eva02_large_patch14_clip_336"
    model = timm.create_model(name, pretrained=False, img_size=size, num_classes=0).eval()
    sd = checkpoint_filter_fn(state, model, antialias=False)
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}  # the CLIP head is not used here
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"timm did not take the checkpoint: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        out = model.forward_intermediates(make_frames(size), indices=1, norm=False, output_fmt="NLC",
                                          intermediates_only=True)[-1]
    return out[0]  # [N, C], prefix (CLS) dropped by timm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--sizes", default="224,448")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    state = make_checkpoint()
    timm, _ = _import_timm()
    os.makedirs(args.out, exist_ok=True)
    for size in (int(s) for s in args.sizes.split(",")):
        rec = {"timm": timm.__version__, "torch": torch.__version__, "seed": SEED, "image_size": size,
               "fingerprint": fingerprint(state), **summarise(timm_tokens(state, size))}
        path = os.path.join(args.out, f"timm_eva02_l_{size}.json")
        with open(path, "w") as f:
            json.dump(rec, f, separators=(",", ":"))
        print(path, rec["shape"])


if __name__ == "__main__":
    main()
