"""Weights I/O: load by name or folder, build the small default, convert the official release.

Loading is safetensors-only (``use_safetensors=True``); the official pickled
``pytorch_model.bin`` is read by ``convert_official`` with ``torch.load(weights_only=True)``,
which refuses to run code.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re

import torch

from .config import KangarooConfig, VisionConfig
from .hub import load_smollm2, resolve_model_path
from .modeling import KangarooForConditionalGeneration


def load_model(name_or_dir: str, device: str = "cpu", dtype: torch.dtype | None = None):
    """(model, tokenizer) from a built-in name or an HF-style folder."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_dir)
    model = KangarooForConditionalGeneration.from_pretrained(path, use_safetensors=True, dtype=dtype or torch.float32)
    if os.path.exists(os.path.join(path, "tokenizer_config.json")):
        tok = AutoTokenizer.from_pretrained(path)
    else:
        _, tok = load_smollm2()
    return model.to(device).eval(), tok


def smol_vision() -> VisionConfig:
    """The small EVA-style tower of kangaroo-smol (trained from scratch)."""
    return VisionConfig(image_size=112, patch_size=14, width=192, depth=4, heads=3, mlp_hidden=512, rope_pretrain_grid=8)


def build_smol(tpe: str = "sincos", seed: int = 0):
    """A fresh kangaroo-smol: random small tower + patchify + projector, real SmolLM2-135M-Instruct."""
    llm, tok = load_smollm2()
    text = llm.config.to_dict()
    cfg = KangarooConfig(vision_config=dataclasses.asdict(smol_vision()), text_config=text, tpe=tpe, frame_chunk=32)
    torch.manual_seed(seed)
    model = KangarooForConditionalGeneration(cfg)
    missing, unexpected = model.language_model.load_state_dict(llm.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"SmolLM2 weights did not fit: missing {missing}, unexpected {unexpected}")
    if cfg.tie_word_embeddings:
        model.language_model.tie_weights()
    return model, tok


# ---- the official release -> our layout ------------------------------------------------------
# Official names (SPEC section 1): ``model`` (LlamaModel), ``lm_head``, ``vision_tower`` with
# EVA-CLIP names, ``mm_projector.0/2``. Patchify/TPE names were never published: whatever
# matches nothing below is reported as unmapped, by name.
_RULES = [
    (r"^model\.(.*)$", r"language_model.model.\1"),
    (r"^lm_head\.(.*)$", r"language_model.lm_head.\1"),
    (r"^mm_projector\.(0|2)\.(weight|bias)$", r"mm_projector.\1.\2"),
    (r"^vision_tower\.(?:vision_tower\.|visual\.)?((?:blocks|patch_embed)\..*|pos_embed|cls_token)$", r"vision_tower.\1"),
]
_DERIVED = (r"rope\.freqs_(cos|sin)$",)  # recomputed from the config, not learned


def map_official_key(key: str) -> str | None:
    for pat, rep in _RULES:
        if re.match(pat, key):
            return re.sub(pat, rep, key)
    return None


def read_official_state(src: str) -> dict[str, torch.Tensor]:
    files = sorted(glob.glob(os.path.join(src, "*.safetensors")))
    if files:
        from safetensors.torch import load_file

        state = {}
        for f in files:
            state.update(load_file(f))
        return state
    bins = sorted(glob.glob(os.path.join(src, "pytorch_model*.bin")))
    if not bins:
        raise FileNotFoundError(f"{src}: no pytorch_model*.bin or *.safetensors")
    state = {}
    for f in bins:
        try:
            state.update(torch.load(f, map_location="cpu", weights_only=True, mmap=True))
        except Exception as e:  # weights_only refuses code objects: say so, never fall back
            raise ValueError(f"{f}: cannot be loaded safely with weights_only=True ({e})") from None
    return state


def official_config(src: str, vision: VisionConfig | None = None) -> KangarooConfig:
    with open(os.path.join(src, "config.json")) as f:
        raw = json.load(f)
    from transformers import LlamaConfig

    llama_keys = set(LlamaConfig().to_dict())
    text = {k: v for k, v in raw.items() if k in llama_keys and k not in ("architectures", "auto_map", "model_type")}
    text["model_type"] = "llama"
    vis = raw.get("vision_config") or dataclasses.asdict(vision or VisionConfig())  # hard-coded officially
    return KangarooConfig(vision_config=vis, text_config=text)


def convert_official(src: str, out: str, dtype: torch.dtype = torch.bfloat16) -> dict:
    """Convert an official checkpoint folder; returns (and writes) a report of every key."""
    cfg = official_config(src)
    state = read_official_state(src)
    with torch.device("meta"):
        model = KangarooForConditionalGeneration(cfg)
    expected = dict(model.state_dict())
    mapped, unmapped, derived = {}, [], []
    for k, v in state.items():
        if any(re.search(p, k) for p in _DERIVED):
            derived.append(k)
            continue
        new = map_official_key(k)
        if new is None or new not in expected:
            unmapped.append(k)
        elif tuple(v.shape) != tuple(expected[new].shape):
            unmapped.append(f"{k} (shape {tuple(v.shape)} != {tuple(expected[new].shape)})")
        else:
            mapped[new] = v.to(dtype)
    missing = sorted(k for k in expected if k not in mapped)
    model = KangarooForConditionalGeneration(cfg).to(dtype)  # real tensors, default init for missing parts
    model.load_state_dict(mapped, strict=False)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if os.path.exists(os.path.join(src, f)):
            with open(os.path.join(src, f), "rb") as a, open(os.path.join(out, f), "wb") as b:
                b.write(a.read())
    report = {"source": src, "mapped": len(mapped), "unmapped": sorted(unmapped), "derived_skipped": sorted(derived),
              "missing": missing}
    with open(os.path.join(out, "conversion_report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return report
