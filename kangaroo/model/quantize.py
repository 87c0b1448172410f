"""Weight-only quantisation of the LLM with torchao (``--quantize int8|int4``); the vision tower,
temporal embedding, projector and markers stay in the model's dtype.

    int8   torchao ``Int8WeightOnlyConfig``: per-channel int8 weights, activations in the
           model's dtype (CPU and CUDA).
    int4   CUDA: ``Int4WeightOnlyConfig`` (tinygemm's tile-packed layout, group 128, bf16 only:
           two weights per byte). CPU: torchao 0.18 has no packed int4 CPU kernel, so it is
           ``IntxWeightOnlyConfig(int4, per group of 32)``: int4 *values* (int4's accuracy cost)
           held one per int8 byte (int8's memory).

``lm_head``: quantised when it is its own matrix (Llama-3-8B's, 525 M weights); a head tied to
the input embeddings (SmolLM2) is left alone, since quantising it would untie it and add a
second copy of the table instead of saving one.

torchao is the optional ``quant`` extra (``pip install -e .[quant]``).
"""

from __future__ import annotations

import torch
from torch import nn

QUANT_MODES = ("int8", "int4")


def _torchao():
    try:
        import torchao.quantization as q
    except ImportError:
        raise ValueError("--quantize needs torchao: pip install -e '.[quant]' (torchao 0.18, CPU or CUDA)") from None
    return q


def quantize_config(mode: str, device: torch.device | str):
    """The torchao config for ``mode`` on ``device``."""
    q = _torchao()
    if mode == "int8":
        return q.Int8WeightOnlyConfig()
    if mode == "int4":
        if torch.device(device).type == "cuda":
            return q.Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d")
        from torchao.quantization.granularity import PerGroup

        return q.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))
    raise ValueError(f"unknown quantisation {mode!r}; choose from {', '.join(QUANT_MODES)}")


def head_is_tied(model) -> bool:
    llm = model.llm()
    head, emb = llm.get_output_embeddings(), llm.get_input_embeddings()
    return head is not None and head.weight.data_ptr() == emb.weight.data_ptr()


def quantize_llm(model, mode: str | None) -> dict:
    """Quantise the LLM's linear layers in place (``mode`` None: nothing); returns what was done."""
    if mode in (None, "none"):
        return {"quantize": None}
    llm = model.llm()
    dev = next(llm.parameters()).device
    if mode == "int4" and dev.type == "cuda" and next(llm.parameters()).dtype != torch.bfloat16:
        raise ValueError("int4 on CUDA needs a bfloat16 model (load it with dtype=torch.bfloat16)")
    cfg = quantize_config(mode, dev)
    tied = head_is_tied(model)
    names = []

    def pick(module: nn.Module, fqn: str) -> bool:
        ok = isinstance(module, nn.Linear) and not (tied and fqn.endswith("lm_head"))
        if ok:
            names.append(fqn)
        return ok

    _torchao().quantize_(llm, cfg, filter_fn=pick)
    return {"quantize": mode, "layers": len(names), "lm_head": any(n.endswith("lm_head") for n in names),
            "config": type(cfg).__name__}


def storage_bytes(module: nn.Module) -> int:
    """Bytes the module's parameters and buffers really hold (a quantised tensor: its inner tensors)."""

    def size(t: torch.Tensor) -> int:
        if hasattr(t, "__tensor_flatten__"):
            inner, _ = t.__tensor_flatten__()
            return sum(size(getattr(t, n)) for n in inner)
        return t.numel() * t.element_size()

    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        key = id(t)
        if key not in seen:
            seen.add(key)
            total += size(t)
    return total
