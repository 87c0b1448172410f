"""Released-parts stand-ins for tests: a tiny EVA-CLIP-layout vision checkpoint (the golden
script's seeded generator at small shapes) and a tiny random Llama folder with SmolLM2's real
tokenizer and chat template (it has no reserved tokens, so the placeholders are added)."""

from __future__ import annotations

import importlib.util
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_VISION = dict(width=64, depth=2, mlp=170, patch=14, grid=4, head_dim=64, embed=32)


def golden_module():
    spec = importlib.util.spec_from_file_location("timm_golden", os.path.join(ROOT, "scripts", "timm_golden.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def eva_clip_state(seed: int = 0, **shape) -> dict[str, torch.Tensor]:
    return golden_module().make_checkpoint(seed=seed, **{**TINY_VISION, **shape})


def to_timm(state: dict, fused: bool, prefix: str = "") -> dict:
    """EVA-CLIP names -> timm's (split q/k/v or fused qkv), under ``prefix`` (open_clip: visual.trunk.)."""
    out = {}
    for k, v in state.items():
        if not k.startswith("visual."):
            continue
        k = k[len("visual."):]
        k = (k.replace("attn.inner_attn_ln", "attn.norm").replace("mlp.ffn_ln", "mlp.norm")
             .replace("mlp.w1", "mlp.fc1_g").replace("mlp.w2", "mlp.fc1_x").replace("mlp.w3", "mlp.fc2"))
        if k.endswith("attn.q_bias") and not fused:
            k = k.replace("attn.q_bias", "attn.q_proj.bias")
        if k.endswith("attn.v_bias") and not fused:
            k = k.replace("attn.v_bias", "attn.v_proj.bias")
        out[prefix + k] = v
    if fused:
        for i in range(1 + max(int(k.split(".")[1]) for k in out if k.startswith(prefix + "blocks."))):
            b = f"{prefix}blocks.{i}.attn."
            out[b + "qkv.weight"] = torch.cat([out.pop(b + f"{n}_proj.weight") for n in "qkv"])
    return out


def tiny_llama_dir(path, dtype=torch.bfloat16, shard="1MB", seed: int = 0, reserved: int = 0, hidden: int = 64) -> str:
    """A random 2-layer Llama saved (sharded) with SmolLM2's tokenizer + chat template; ``reserved``:
    that many Llama-3-style ``<|reserved_special_token_N|>`` tokens added first, inside the vocabulary;
    4 heads of ``hidden // 4`` (vLLM needs a head dim >= 32: ``hidden=128``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from kangaroo.model.hub import load_smollm2

    tok = load_smollm2()[1]
    if reserved:
        tok.add_special_tokens({"additional_special_tokens": [f"<|reserved_special_token_{i}|>"
                                                              for i in range(reserved)]})
    cfg = LlamaConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=2 * hidden, vocab_size=len(tok), max_position_embeddings=4096, rope_theta=10000.0,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(dtype)
    model.save_pretrained(str(path), max_shard_size=shard)
    tok.save_pretrained(str(path))
    return str(path)
