"""Kangaroo from released parts: an EVA02 vision checkpoint + an HF Llama folder -> a model folder.

``kangaroo assemble --vision CKPT --llm DIR --out DIR`` writes a full HF-style folder
(config.json, sharded safetensors + index, tokenizer with its chat template, generation config,
``kangaroo_assembly.json``) that ``load_model`` / ``init:`` in a recipe read like any other.

- Vision: any layout ``eva_checkpoint.py`` reads (EVA-CLIP ``.pt``, open_clip, timm); the
  absolute position embedding is resized to ``image_size`` (bicubic, align_corners=False, no
  antialias, as EVA-CLIP does); the RoPE is evaluated on the new grid, rescaled to the
  pre-training grid (``vision.py``), as EVA-CLIP's ``VisionRotaryEmbeddingFast`` does.
- LLM: built on the meta device and filled shard by shard (``assign``: one copy of the LLM in
  memory, never two); with ``dtype="auto"`` (the LLM folder's own dtype) every LLM tensor is
  carried over bit for bit. The vocabulary is not enlarged: the media placeholders come from
  ``tokens.ensure_media_tokens`` (Llama-3: its reserved special tokens).
- The new parts are initialised for a fresh stage 1 by the rules in ``INIT_RULES``, which are
  written into the folder's metadata.

Nothing is written unless everything checks: the folder is built under a temporary name next to
``out`` and renamed at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import torch
from torch import nn

from .config import KangarooConfig
from .eva_checkpoint import load_vision_checkpoint

ASSEMBLY = "kangaroo_assembly.json"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

INIT_RULES = {
    "vision_tower": "the vision checkpoint (pos_embed resized to the image size; RoPE evaluated on the grid)",
    "language_model": "the LLM folder, every tensor as stored (bit for bit at dtype auto)",
    "patchify": "average pool: every depthwise 3-D kernel weight 1/(kt*kh*kw), bias 0. Patchify first trains "
                "in stage 3 (SPEC section 2): until then it must merge neighbouring patches without distorting "
                "the pre-trained tower's features, and a mean does exactly that (a random kernel would feed the "
                "projector noise for two stages).",
    "temporal_embed": "sincos of seconds with the learned gain at 0: the pre-trained tower's features reach the "
                      "projector unchanged at step 0 (a zero-initialised residual), and the gain still gets a "
                      "gradient (d out / d gain = sincos(t)), so the TPE grows as training finds it useful.",
    "mm_projector": "PyTorch's default nn.Linear init (kaiming-uniform, a=sqrt(5); uniform bias), as LLaVA's "
                    "stage-1 mlp2x_gelu projector starts; seeded.",
    "markers": "normal(0, std of the LLM's input embedding table), seeded: the four learned markers start at the "
               "scale of ordinary token embeddings.",
}
_IGNORED_LLM = ("rotary_emb.inv_freq",)  # old checkpoints store it; it is recomputed


def llm_files(llm: str) -> list[str]:
    """The LLM folder's weight files, in order (sharded or not; safetensors or weights-only .bin)."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        p = os.path.join(llm, index)
        if os.path.exists(p):
            with open(p) as f:
                names = sorted(set(json.load(f)["weight_map"].values()))
            return [os.path.join(llm, n) for n in names]
    for pattern in ("model.safetensors", "pytorch_model.bin"):
        if os.path.exists(os.path.join(llm, pattern)):
            return [os.path.join(llm, pattern)]
    raise FileNotFoundError(f"{llm}: no model.safetensors(.index.json) or pytorch_model.bin(.index.json)")


def read_shard(path: str) -> dict[str, torch.Tensor]:
    """One weight file, memory-mapped (``tensorfile.py``): kept-dtype tensors cost no anonymous memory."""
    from .tensorfile import read_tensors

    return read_tensors(path)


def llm_config(llm: str):
    from transformers import AutoConfig

    if not os.path.exists(os.path.join(llm, "config.json")):
        raise FileNotFoundError(f"{llm}: no config.json, not an HF LLM folder")
    cfg = AutoConfig.from_pretrained(llm)
    if cfg.model_type != "llama":
        raise ValueError(f"{llm}: a {cfg.model_type!r} model; Kangaroo's LLM is a Llama")
    return cfg


def folder_dtype(llm: str) -> torch.dtype:
    """The LLM folder's own dtype (config.json ``dtype`` / ``torch_dtype``; float32 when unstated)."""
    with open(os.path.join(llm, "config.json")) as f:
        raw = json.load(f)
    name = raw.get("dtype") or raw.get("torch_dtype") or "float32"
    if name not in DTYPES:
        raise ValueError(f"{llm}: unsupported dtype {name!r}")
    return DTYPES[name]


def load_llm_shards(lm: nn.Module, files: list[str], dtype: torch.dtype, tied: bool) -> dict:
    """Fill a meta-device LlamaForCausalLM shard by shard; refuse anything missing or unknown."""
    want = {k: tuple(v.shape) for k, v in lm.state_dict().items()}
    seen, unknown, wrong = set(), [], []
    for path in files:
        shard = read_shard(path)
        take = {}
        for k, v in shard.items():
            if k.endswith(_IGNORED_LLM):
                continue
            if k not in want:
                unknown.append(k)
            elif tuple(v.shape) != want[k]:
                wrong.append(f"{k} {tuple(v.shape)} (want {want[k]})")
            else:
                take[k] = v if v.dtype == dtype else v.to(dtype)
        del shard
        lm.load_state_dict(take, strict=False, assign=True)
        seen.update(take)
        del take
    missing = sorted(k for k in want if k not in seen and not (tied and k == "lm_head.weight"))
    if missing or unknown or wrong:
        raise ValueError(f"the LLM folder does not fit its config: missing {missing}, unknown {sorted(unknown)}, "
                         f"wrong shape {wrong}")
    if tied:
        lm.tie_weights()
    return {"files": [os.path.basename(f) for f in files], "tensors": len(seen)}


def _fresh_rotary(lm: nn.Module) -> None:
    """The LLM's RoPE buffers are not in its checkpoint: compute them (they were on the meta device)."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    lm.model.rotary_emb = LlamaRotaryEmbedding(config=lm.config)


def table_std(w: torch.Tensor, rows: int = 4096) -> float:
    """The standard deviation of a (large) table, a block of rows at a time: never a float32 copy."""
    n, total, sq = w.numel(), 0.0, 0.0
    for i in range(0, w.shape[0], rows):
        block = w[i : i + rows].detach().double()
        total, sq = total + float(block.sum()), sq + float((block * block).sum())
    mean = total / n
    return max(sq / n - mean * mean, 0.0) ** 0.5 * (n / max(n - 1, 1)) ** 0.5


def init_new_parts(model, dtype: torch.dtype, seed: int, only: str | None = None) -> None:
    """Materialise and initialise patchify, TPE, projector and markers (``INIT_RULES``); ``only``: one
    of them. Each part draws from its own seeded stream, so the rules do not depend on one another."""
    def stream(name: str) -> torch.Generator:
        return torch.Generator().manual_seed(seed * 1000 + ("temporal_embed", "patchify", "mm_projector",
                                                             "markers").index(name))

    parts = [only] if only else ["temporal_embed", "patchify", "mm_projector", "markers"]
    with torch.no_grad():
        for name in parts:
            if name != "markers":
                getattr(model, name).to_empty(device="cpu")
        if "patchify" in parts:
            model.patchify.reset_parameters()
        if "temporal_embed" in parts:
            te = model.temporal_embed
            if hasattr(te, "gain"):
                nn.init.zeros_(te.gain)
            elif hasattr(te, "table"):
                nn.init.normal_(te.table.weight, std=0.02, generator=stream("temporal_embed"))
        if "mm_projector" in parts:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=stream("mm_projector"))))
                for m in model.mm_projector:
                    if isinstance(m, nn.Linear):
                        m.reset_parameters()
        if "markers" in parts:
            emb = model.get_input_embeddings().weight
            std = table_std(emb) if emb.device.type != "meta" else 0.02
            model.markers = nn.Parameter(torch.randn(model.markers.shape, generator=stream("markers")) * std)
        for name in parts:
            if name == "markers":
                model.markers.data = model.markers.data.to(dtype)
            else:
                getattr(model, name).to(dtype)


def _no_meta(model) -> None:
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if left:
        raise RuntimeError(f"assembly left tensors uninitialised: {left[:10]}")


def build(vision: str, llm: str, image_size: int = 448, dtype: str = "auto", heads: int | None = None,
          seed: int = 0, tpe: str = "sincos"):
    """(model, tokenizer, report) in memory; ``assemble`` writes them."""
    from transformers import AutoTokenizer

    from .modeling import KangarooForConditionalGeneration
    from .tokens import ensure_media_tokens, media_token_strings

    vcfg, vstate, vreport = load_vision_checkpoint(vision, image_size=image_size, heads=heads)  # refuses first
    text = llm_config(llm)
    files = llm_files(llm)
    target = folder_dtype(llm) if dtype == "auto" else DTYPES.get(dtype)
    if target is None:
        raise ValueError(f"--dtype must be auto or one of {sorted(DTYPES)}, got {dtype!r}")
    tok = AutoTokenizer.from_pretrained(llm)
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"{llm}: the tokenizer has no chat template (Kangaroo chats in the LLM's own template)")
    media = ensure_media_tokens(tok)
    cfg = KangarooConfig(vision_config=dataclasses.asdict(vcfg), text_config=text.to_dict(), tpe=tpe,
                         video_token_id=media["video"], image_token_id=media["image"])
    with torch.device("meta"):
        model = KangarooForConditionalGeneration(cfg)
    model.vision_tower.load_state_dict({k: v.to(target) for k, v in vstate.items()}, strict=True, assign=True)
    del vstate
    lreport = load_llm_shards(model.language_model, files, target, cfg.tie_word_embeddings)
    _fresh_rotary(model.language_model)
    init_new_parts(model, target, seed)
    _no_meta(model)
    report = {"format": "kangaroo-assembly", "dtype": str(target).replace("torch.", ""), "seed": seed,
              "image_size": vcfg.image_size, "vision": vreport, "llm": {"path": os.path.abspath(llm), **lreport},
              "media_tokens": {k: {"id": media[k], "token": s} for k, s in media_token_strings(tok).items()},
              "vocab_enlarged": False, "init": dict(INIT_RULES), "untrained": ["temporal_embed", "patchify",
                                                                                "mm_projector", "markers"]}
    if tpe != "sincos":
        report["init"]["temporal_embed"] = f"{tpe}: the module's own init (see kangaroo/model/temporal.py)"
    return model.eval(), tok, report


def assemble(vision: str, llm: str, out: str, image_size: int = 448, dtype: str = "auto", heads: int | None = None,
             seed: int = 0, max_shard_size: str | int = "5GB") -> dict:
    """Write the assembled model folder to ``out`` (refused if it exists and is not empty)."""
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise FileExistsError(f"{out} exists and is not empty: choose a new folder")
    model, tok, report = build(vision, llm, image_size, dtype, heads, seed)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(out)) + ".part-", dir=parent)
    try:
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        tok.save_pretrained(tmp)
        gen = os.path.join(llm, "generation_config.json")
        if os.path.exists(gen):
            shutil.copyfile(gen, os.path.join(tmp, "generation_config.json"))
        report["files"] = sorted(os.listdir(tmp)) + [ASSEMBLY]
        with open(os.path.join(tmp, ASSEMBLY), "w") as f:
            json.dump(report, f, indent=1)
        if os.path.isdir(out):
            os.rmdir(out)  # empty, checked above
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def assembly_metadata(path: str) -> dict | None:
    p = os.path.join(path, ASSEMBLY)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


__all__ = ["assemble", "build", "INIT_RULES", "ASSEMBLY", "assembly_metadata", "llm_files"]
