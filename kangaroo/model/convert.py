"""``kangaroo convert``: the official Kangaroo release -> our layout, strictly.

Every official tensor is accounted for: mapped to ours by name (``_RULES``), by the user's
``--map FILE`` (JSON ``{official_key: our_key}``), or, for the parts whose official names were
never published (patchify, TPE, markers), by shape; what is left is listed as unmapped, by
name. Derived tables (the EVA rope) and EVA-CLIP's unused head are listed as skipped.

If any part of our model would stay at random init, the conversion fails (naming the parts
and their tensors) and writes nothing, unless ``allow_partial``: then the missing tensors get
the fresh-model init rules (``assemble.INIT_RULES``) and the folder's metadata lists the parts
as untrained. The LLM and the vision tower must always be complete.

Streaming: the model is built on the meta device and filled file by file from memory maps
(``tensorfile.py``): tensors whose dtype is kept are never copied into anonymous memory;
a converted dtype costs one tensor at a time (never a float32 copy of the model).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import shutil
import tempfile

import torch
from torch import nn

from .config import KangarooConfig, VisionConfig

REPORT = "conversion_report.json"
_RULES = [
    (r"^model\.(.*)$", r"language_model.model.\1"),
    (r"^lm_head\.(.*)$", r"language_model.lm_head.\1"),
    (r"^mm_projector\.(0|2)\.(weight|bias)$", r"mm_projector.\1.\2"),
    (r"^vision_tower\.(?:vision_tower\.|visual\.)?((?:blocks|patch_embed)\..*|pos_embed|cls_token)$", r"vision_tower.\1"),
]
_DERIVED = (r"rope\.freqs_(cos|sin)$", r"rotary_emb\.inv_freq$")  # recomputed from the config, not learned
_UNUSED = (r"^vision_tower\.(?:vision_tower\.|visual\.)?(norm|head|fc_norm)\.",)  # EVA-CLIP's head: not our features
# parts whose official names are unknown (SPEC section 1): candidates are matched by shape, ties by these hints
_SHAPE_PARTS = {"patchify": ("patchify", "conv3d", "st_", "merge", "pool", "spatial", "temporal_conv"),
                "temporal_embed": ("temporal", "time", "tpe", "frame_pos"),
                "markers": ("marker", "special", "vi_start", "eov", "eof")}
NEW_PARTS = ("temporal_embed", "patchify", "mm_projector", "markers")


def map_official_key(key: str) -> str | None:
    for pat, rep in _RULES:
        if re.match(pat, key):
            return re.sub(pat, rep, key)
    return None


def official_files(src: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(src, "*.safetensors"))) or sorted(glob.glob(os.path.join(src, "pytorch_model*.bin")))
    if not files:
        raise FileNotFoundError(f"{src}: no pytorch_model*.bin or *.safetensors")
    return files


def read_official_state(src: str) -> dict[str, torch.Tensor]:
    """Every official tensor (memory-mapped)."""
    from .tensorfile import read_tensors

    state = {}
    for f in official_files(src):
        state.update(read_tensors(f))
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


def part_of(key: str) -> str:
    return key.split(".")[0]


def plan(shapes: dict[str, tuple], expected: dict[str, tuple], key_map: dict | None = None,
         tied: bool = False) -> dict:
    """Decide where every official tensor goes, from names and shapes only (no data read)."""
    key_map = dict(key_map or {})
    bad = sorted(k for k in key_map if k not in shapes)
    if bad:
        raise ValueError(f"--map names official keys the checkpoint does not have: {bad}")
    mapped, by_map, unmapped, derived, unused, wrong = {}, {}, [], [], [], []
    for k, shp in shapes.items():
        if k in key_map:
            new = key_map[k]
            if new not in expected:
                raise ValueError(f"--map: {k} -> {new}: our model has no tensor {new!r}")
            by_map[k] = new
        elif any(re.search(p, k) for p in _DERIVED):
            derived.append(k)
            continue
        elif any(re.search(p, k) for p in _UNUSED):
            unused.append(k)
            continue
        else:
            new = map_official_key(k)
            if new is None or new not in expected:
                unmapped.append(k)
                continue
        if shp != expected[new]:
            wrong.append(f"{k} {shp} -> {new} {expected[new]}")
            continue
        mapped[k] = new
    targets = sorted(mapped.values())
    dup = sorted({t for t in targets if targets.count(t) > 1})
    if dup:
        raise ValueError(f"several official tensors map to {dup}")
    by_shape, ambiguous = match_by_shape(shapes, expected, mapped, unmapped)
    mapped.update(by_shape)
    unmapped = sorted(k for k in unmapped if k not in by_shape)
    missing = sorted(k for k in expected if k not in set(mapped.values()) and not (tied and k == "language_model.lm_head.weight"))
    return {"mapped": mapped, "by_map": by_map, "by_shape": by_shape, "ambiguous": ambiguous, "unmapped": unmapped,
            "derived_skipped": sorted(derived), "unused_skipped": sorted(unused), "wrong_shape": wrong,
            "missing": missing}


def _hints_other(key: str, part: str) -> bool:
    """The name points at another unnamed part (and not at this one): never a candidate here."""
    low = key.lower()
    mine = any(h in low for h in _SHAPE_PARTS[part])
    return not mine and any(h in low for p, hs in _SHAPE_PARTS.items() if p != part for h in hs)


def match_by_shape(shapes, expected, mapped, unmapped) -> tuple[dict, dict]:
    """Unmapped official tensors whose shape identifies one of our unnamed parts' tensors.

    A tensor whose name hints at another such part is never a candidate. Repeated until nothing
    changes: a target with one candidate of its shape takes it; with several,
    a sibling of a tensor already matched to the same part wins (``x.bias`` next to ``x.weight``),
    else a name hinting at the part. Targets left with several candidates are ambiguous (reported)."""
    taken = set(mapped.values())
    remaining = sorted(k for k in expected if part_of(k) in _SHAPE_PARTS and k not in taken)
    found: dict[str, str] = {}
    progress = True
    while progress and remaining:
        progress = False
        for ours in list(remaining):
            cands = [k for k in unmapped if shapes[k] == expected[ours] and k not in found
                     and not _hints_other(k, part_of(ours))]
            if len(cands) > 1:
                sib = [k for k in cands if any(k.rsplit(".", 1)[0] == o.rsplit(".", 1)[0]
                                               and part_of(t) == part_of(ours) for o, t in found.items())]
                hinted = [k for k in cands if any(h in k.lower() for h in _SHAPE_PARTS[part_of(ours)])]
                cands = sib if len(sib) == 1 else hinted if len(hinted) == 1 else cands
            if len(cands) == 1:
                found[cands[0]] = ours
                remaining.remove(ours)
                progress = True
    ambiguous = {}
    for ours in remaining:
        cands = sorted(k for k in unmapped if shapes[k] == expected[ours] and k not in found
                       and not _hints_other(k, part_of(ours)))
        if len(cands) > 1:
            ambiguous[ours] = cands
    return found, ambiguous


def _fresh_part(model, part: str, dtype: torch.dtype, seed: int):
    """A real (CPU) module/parameter for ``part`` initialised as a fresh model's."""
    from .assemble import init_new_parts

    if part == "vision_tower":
        from .vision import EVAVisionTower

        tower = EVAVisionTower(model.config.vision)
        tower.init_weights()
        return tower.to(dtype)
    if part in NEW_PARTS:
        init_new_parts(model, dtype, seed, only=part)
        return getattr(model, part)
    raise ValueError(f"part {part!r} cannot be initialised here")


def convert_official(src: str, out: str, dtype: torch.dtype = torch.bfloat16, key_map: dict | str | None = None,
                     allow_partial: bool = False, max_shard_size: str | int = "5GB", seed: int = 0) -> dict:
    """Convert an official checkpoint folder; returns (and writes) a report of every key."""
    from .assemble import _fresh_rotary
    from .modeling import KangarooForConditionalGeneration
    from .tensorfile import read_tensors, tensor_shapes

    if isinstance(key_map, str):
        with open(key_map) as f:
            key_map = json.load(f)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise FileExistsError(f"{out} exists and is not empty: choose a new folder")
    cfg = official_config(src)
    with torch.device("meta"):
        model = KangarooForConditionalGeneration(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    files = official_files(src)
    shapes = {}
    for f in files:
        shapes.update(tensor_shapes(f))
    p = plan(shapes, expected, key_map, tied=cfg.tie_word_embeddings)
    parts_missing = sorted({part_of(k) for k in p["missing"]})
    if p["wrong_shape"]:
        raise ValueError(f"{src}: tensors of the wrong shape: {p['wrong_shape']}")
    hard = [k for k in p["missing"] if part_of(k) == "language_model"]
    if hard:
        raise ValueError(f"{src}: the LLM is incomplete, missing {hard}")
    if parts_missing and not allow_partial:
        detail = "; ".join(f"{part}: {[k for k in p['missing'] if part_of(k) == part]}" for part in parts_missing)
        hint = f" (candidates by shape: {p['ambiguous']})" if p["ambiguous"] else ""
        raise ValueError(f"{src}: these parts would stay at random init: {detail}{hint}. Supply their official "
                         f"names with --map FILE (JSON {{official_key: our_key}}; unmapped: {p['unmapped']}), "
                         "or pass --allow-partial to convert anyway and mark them untrained")
    loaded = set()
    for f in files:  # stream: one file's memory map at a time, assigned into the meta model
        state = read_tensors(f)
        take = {p["mapped"][k]: (v if v.dtype == dtype else v.to(dtype)) for k, v in state.items() if k in p["mapped"]}
        model.load_state_dict(take, strict=False, assign=True)
        loaded.update(take)
        del state, take
    if cfg.tie_word_embeddings:
        model.language_model.tie_weights()
    _fresh_rotary(model.language_model)
    for part in parts_missing:  # --allow-partial: the fresh-model init, then whatever was mapped on top
        have = {k[len(part) + 1:]: t for k, t in model.state_dict().items() if part_of(k) == part and k in loaded}
        fresh = _fresh_part(model, part, dtype, seed)
        if isinstance(fresh, nn.Module):
            fresh.load_state_dict(have, strict=False)
            setattr(model, part, fresh)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if left:
        raise RuntimeError(f"conversion left tensors uninitialised: {left[:10]}")
    report = {"source": os.path.abspath(src), "dtype": str(dtype).replace("torch.", ""), "mapped": len(p["mapped"]),
              "mapped_by_map": p["by_map"], "matched_by_shape": p["by_shape"], "ambiguous": p["ambiguous"],
              "unmapped": p["unmapped"], "derived_skipped": p["derived_skipped"],
              "unused_skipped": p["unused_skipped"], "missing": p["missing"], "untrained": parts_missing}
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(out)) + ".part-", dir=parent)
    try:
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        report["media_tokens"] = _carry_tokenizer(src, tmp, model)
        with open(os.path.join(tmp, REPORT), "w") as fh:
            json.dump(report, fh, indent=1)
        if os.path.isdir(out):
            os.rmdir(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _carry_tokenizer(src: str, dst: str, model) -> dict | None:
    """The release's tokenizer, with the placeholders from tokens.py recorded in the config. Without
    a tokenizer, a Llama-3 vocabulary (128256) gets Llama-3's reserved_0 / _1 (128002 / 128003);
    anything else is left unset (reported)."""
    if not os.path.exists(os.path.join(src, "tokenizer_config.json")):
        if model.config.text_config.vocab_size == 128256:
            model.config.video_token_id, model.config.image_token_id = 128002, 128003
            model.config.save_pretrained(dst)
            return {"video": 128002, "image": 128003, "from": "Llama-3's reserved special tokens (no tokenizer)"}
        return None
    from transformers import AutoTokenizer

    from .tokens import ensure_media_tokens

    tok = AutoTokenizer.from_pretrained(src)
    ids = ensure_media_tokens(tok)
    model.config.video_token_id, model.config.image_token_id = ids["video"], ids["image"]
    model.config.save_pretrained(dst)
    tok.save_pretrained(dst)
    return {**ids, "from": "tokens.ensure_media_tokens on the release's tokenizer"}
