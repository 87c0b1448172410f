"""Pre-quantised copies of a full Kangaroo folder for vLLM's CPU int8 / int4 kernels (no vLLM import).

vLLM 0.32's CPU build quantises a dense Llama online only to fp8 (``--quantization fp8_per_block``
works; docs/serving.md lists what each method does); its int8 path (``CPUInt8ScaledMMLinearKernel``,
oneDNN) and its int4 path (``CPUWNA16LinearKernel``) take pre-quantised checkpoints. ``export_quantized``
writes one in the compressed-tensors layout, which vLLM reads from ``config.json``'s ``quantization_config``:

- ``w8a8`` (``int-quantized``): the LLM's linear layers (``q/k/v/o_proj``, ``gate/up/down_proj``) as
  int8 weights with one float32 scale per output channel (symmetric, ``scale = max|w| / 127``),
  activations quantised per token at run time by vLLM;
- ``w4a16`` (``pack-quantized``): the same layers as int4 weights (symmetric, ``[-8, 7]``, one scale per
  group of ``group`` inputs, the largest of 128 / 64 / 32 that divides every layer's input size),
  eight to an int32 (``q + 8`` in 4 bits each, lowest bits first), activations in the model's dtype;
- everything else as it was: embeddings and ``lm_head``, norms, the vision tower, TPE, patchify,
  projector and markers (our visual modules are not vLLM layers, so vLLM never quantises them).

The copy is for vLLM only: ``kangaroo.load`` refuses it (``quantization_config``); quantise our own
engine with ``--quantize int8|int4`` (torchao) instead.

    kangaroo export-vllm --scheme w8a8|w4a16 FOLDER OUT     then     vllm serve OUT --dtype bfloat16 ...
"""

from __future__ import annotations

import json
import os
import re
import shutil

import torch
from tqdm import tqdm

SCHEMES = ("w8a8", "w4a16")


def cpu_kernel_missing(scheme: str) -> str | None:
    """Why vLLM's CPU build cannot run ``scheme`` on this machine, or None. Its x86 wheel ships three
    kernel libraries and loads one by the CPU's features. The AVX2-only one (no AVX-512) has no int4
    GEMM (``cpu_gemm_wna16``), so a W4A16 copy starts and then fails at its first request. W8A8
    (oneDNN) runs on all three."""
    import platform

    if scheme == "w4a16" and platform.machine().lower() in ("x86_64", "amd64") and not torch.cpu._is_avx512_supported():
        return ("vLLM's CPU build has no int4 kernel (cpu_gemm_wna16) for x86 CPUs without AVX-512, "
                "and this CPU has none: serve the w8a8 copy, or w4a16 on an AVX-512 CPU or a GPU")
    return None


_LINEAR = re.compile(r"^language_model\.model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$")


def w8a8_config() -> dict:
    """The compressed-tensors ``quantization_config`` of int8 channel-wise weights, int8 dynamic per-token activations."""
    return {"quant_method": "compressed-tensors", "format": "int-quantized", "quantization_status": "compressed",
            "config_groups": {"group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False},
                "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token",
                                      "dynamic": True},
                "output_activations": None}},
            "ignore": [], "kv_cache_scheme": None}


def quantize_channelwise(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, in] -> (int8 [out, in], float32 scale [out, 1]); ``w ~= q * scale``."""
    if w.ndim != 2:
        raise ValueError(f"a linear weight is [out, in], got {tuple(w.shape)}")
    w = w.float()
    scale = (w.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-12)
    return torch.round(w / scale).clamp(-128, 127).to(torch.int8), scale


def w4a16_config(group: int) -> dict:
    """The compressed-tensors ``quantization_config`` of int4 group-wise weights, activations unquantised."""
    return {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
            "config_groups": {"group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": group,
                            "dynamic": False},
                "input_activations": None, "output_activations": None}},
            "ignore": [], "kv_cache_scheme": None}


def quantize_int4_groups(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, in] -> (int8 values in [-8, 7] [out, in], float32 scales [out, in / group]);
    ``w ~= q * scale`` of its group (symmetric, ``scale = max|w| / 7`` per group)."""
    if w.ndim != 2 or w.shape[1] % group:
        raise ValueError(f"a linear weight [out, in] with in divisible by {group}, got {tuple(w.shape)}")
    g = w.float().reshape(w.shape[0], -1, group)  # [out, groups, group]
    scale = (g.abs().amax(dim=2, keepdim=True) / 7.0).clamp(min=1e-12)
    q = torch.round(g / scale).clamp(-8, 7).to(torch.int8)
    return q.reshape(w.shape), scale.squeeze(2)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int8 values in [-8, 7] [out, in] -> int32 [out, in / 8]: value j of each eight in bits 4j..4j+3, as q + 8."""
    if q.shape[1] % 8:
        raise ValueError(f"int4 packing needs the input size divisible by 8, got {tuple(q.shape)}")
    u = (q.to(torch.int32) + 8).reshape(q.shape[0], -1, 8)
    shifts = torch.arange(8, dtype=torch.int32) * 4
    return (u << shifts).sum(dim=2, dtype=torch.int32)  # wraps into int32's sign bit like the reference packer


def _group_size(shapes: list[tuple[int, int]]) -> int:
    for g in (128, 64, 32):
        if all(i % g == 0 for _, i in shapes):
            return g
    raise ValueError(f"no int4 group size of 128 / 64 / 32 divides every linear layer's input size ({shapes[:3]}...)")


def _w8a8(key: str, t: torch.Tensor, group: int) -> dict[str, torch.Tensor]:
    q, scale = quantize_channelwise(t)
    return {key: q, key[:-len("weight")] + "weight_scale": scale}


def _w4a16(key: str, t: torch.Tensor, group: int) -> dict[str, torch.Tensor]:
    q, scale = quantize_int4_groups(t, group)
    base = key[:-len("weight")]
    return {base + "weight_packed": pack_int4(q), base + "weight_scale": scale,
            base + "weight_shape": torch.tensor(list(t.shape), dtype=torch.int64)}


_SCHEME = {"w8a8": (_w8a8, lambda group: w8a8_config()), "w4a16": (_w4a16, w4a16_config)}



def full_folder_config(folder: str, quantized: str) -> dict:
    """config.json of a full, unquantised Kangaroo folder; ValueError (``quantized`` says why a
    quantization_config is refused) for anything else."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    if "KangarooForConditionalGeneration" not in cfg.get("architectures", []):
        raise ValueError(f"{folder}: not a full Kangaroo folder (architectures {cfg.get('architectures')})")
    if "quantization_config" in cfg or "quantization_config" in cfg.get("text_config", {}):
        raise ValueError(f"{folder}: {quantized}")
    return cfg

def _export(src: str, out: str, scheme: str, progress: bool) -> str:
    from safetensors import safe_open
    from safetensors.torch import save_file

    if os.path.abspath(src) == os.path.abspath(out):
        raise ValueError("export into a new folder, not over the source")
    cfg = full_folder_config(src, "already carries a quantization_config")
    shards = sorted(n for n in os.listdir(src) if n.endswith(".safetensors"))
    if not shards:
        raise FileNotFoundError(f"{src}: no .safetensors weights")
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(src):  # tokenizer, chat template, processor and generation configs as they are
        if not name.endswith(".safetensors") and name not in ("config.json", "model.safetensors.index.json"):
            path = os.path.join(src, name)
            if os.path.isfile(path):
                shutil.copy2(path, os.path.join(out, name))
    convert, config = _SCHEME[scheme]
    shapes = []
    for shard in shards:
        with safe_open(os.path.join(src, shard), "pt") as f:
            shapes += [tuple(f.get_slice(k).get_shape()) for k in f.keys() if _LINEAR.match(k)]
    if not shapes:
        raise ValueError(f"{src}: no LLM linear weights (language_model.model.layers.N.*_proj.weight) found")
    group = _group_size(shapes) if scheme == "w4a16" else 0
    weight_map = {}
    for shard in tqdm(shards, desc=f"{scheme} shards", disable=not progress):
        tensors = {}
        with safe_open(os.path.join(src, shard), "pt") as f:
            for key in f.keys():
                t = f.get_tensor(key)
                tensors.update(convert(key, t, group) if _LINEAR.match(key) else {key: t})
        save_file(tensors, os.path.join(out, shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard))
    if len(shards) > 1:
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
    cfg["quantization_config"] = config(group)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return out


def export_quantized(src: str, out: str, scheme: str = "w8a8", progress: bool = True) -> str:
    """``src`` (a full Kangaroo folder) -> ``out``: the same folder with the LLM's linear layers in ``scheme``."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    return _export(src, out, scheme, progress)
