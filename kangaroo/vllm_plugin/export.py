"""A pre-quantised copy of a full Kangaroo folder for vLLM's CPU int8 kernels (no vLLM import).

vLLM 0.32's CPU build quantises a dense Llama online only to fp8 (``--quantization fp8_per_block``
works; docs/serving.md lists what each method does); its int8 path (``CPUInt8ScaledMMLinearKernel``,
oneDNN) takes pre-quantised checkpoints. ``export_w8a8`` writes one in the compressed-tensors
``int-quantized`` layout, which vLLM reads from ``config.json``'s ``quantization_config``:

- the LLM's linear layers (``q/k/v/o_proj``, ``gate/up/down_proj``): int8 weights, one float32 scale
  per output channel (symmetric, ``scale = max|w| / 127``), activations quantised per token at run
  time by vLLM (W8A8);
- everything else as it was: embeddings and ``lm_head``, norms, the vision tower, TPE, patchify,
  projector and markers (our visual modules are not vLLM layers, so vLLM never quantises them).

The copy is for vLLM only: ``kangaroo.load`` refuses it (``quantization_config``); quantise our own
engine with ``--quantize int8|int4`` (torchao) instead.

    kangaroo export-vllm --scheme w8a8 FOLDER OUT     then     vllm serve OUT --dtype bfloat16 ...
"""

from __future__ import annotations

import json
import os
import re
import shutil

import torch
from tqdm import tqdm

SCHEMES = ("w8a8",)
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


def export_w8a8(src: str, out: str, progress: bool = True) -> str:
    """``src`` (a full Kangaroo folder) -> ``out``: the same folder with the LLM's linear layers in W8A8."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    if os.path.abspath(src) == os.path.abspath(out):
        raise ValueError("export into a new folder, not over the source")
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    if "KangarooForConditionalGeneration" not in cfg.get("architectures", []):
        raise ValueError(f"{src}: not a full Kangaroo folder (architectures {cfg.get('architectures')})")
    if "quantization_config" in cfg or "quantization_config" in cfg.get("text_config", {}):
        raise ValueError(f"{src}: already carries a quantization_config")
    shards = sorted(n for n in os.listdir(src) if n.endswith(".safetensors"))
    if not shards:
        raise FileNotFoundError(f"{src}: no .safetensors weights")
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(src):  # tokenizer, chat template, processor and generation configs as they are
        if not name.endswith(".safetensors") and name not in ("config.json", "model.safetensors.index.json"):
            path = os.path.join(src, name)
            if os.path.isfile(path):
                shutil.copy2(path, os.path.join(out, name))
    weight_map, quantized = {}, 0
    for shard in tqdm(shards, desc="w8a8 shards", disable=not progress):
        tensors = {}
        with safe_open(os.path.join(src, shard), "pt") as f:
            for key in f.keys():
                t = f.get_tensor(key)
                if _LINEAR.match(key):
                    tensors[key], tensors[key[:-len("weight")] + "weight_scale"] = quantize_channelwise(t)
                    quantized += 1
                else:
                    tensors[key] = t
        save_file(tensors, os.path.join(out, shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard))
    if not quantized:
        raise ValueError(f"{src}: no LLM linear weights (language_model.model.layers.N.*_proj.weight) found")
    if len(shards) > 1:
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
    cfg["quantization_config"] = w8a8_config()
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return out


def export_quantized(src: str, out: str, scheme: str = "w8a8", progress: bool = True) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    return export_w8a8(src, out, progress)
