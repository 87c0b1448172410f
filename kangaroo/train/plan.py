"""``kangaroo plan``: per-GPU peak memory of inference and of each training stage, before buying GPUs.

What is counted, per GPU, for a packed row of ``frames`` frames (+ ``text_tokens`` of text):

- weights: float32 (the trainer keeps float32 parameters: they are the master copy), sharded
  over the GPUs by FSDP2 when there are several; inference: bfloat16, whole, on one GPU;
- gradients (float32, trainable parameters, sharded) and AdamW's two moments (float32, sharded);
- working copies: FSDP2 all-gathers bf16 copies of the root unit (everything but the decoder
  layers, and the vision blocks with ``shard_vision: blocks``) and of two decoder layers at a time;
  at the LLM's first layer the root's all-gather buffer is still held; at the end of the backward
  the root's reduce-scatter holds its gradients three times (``_fsdp_terms``); in one process
  autocast makes bf16 copies of every matmul weight in the graph;
- activations: bytes per token per decoder layer (per patch per vision block) as linear forms
  in the widths, per precision mode and per kind of LLM training (full / frozen / LoRA), with
  activation checkpointing (each layer keeps its input; one layer is recomputed at a time) or
  without. The coefficients were counted once on the CPU with ``memcount.ByteCounter`` on tiny
  models (two depths x two lengths x several widths: the differences isolate one layer and one
  token exactly; the counts came out as whole numbers of bytes per element);
- the loss: logits only on the labelled tokens (float32, log-softmax and gradient);
- inference: bf16 weights, the KV cache, and the prefill's largest transient.

Validated against counted tensor bytes of real training steps of tiny models of other shapes
(tests/train/test_plan.py; the error is in docs/training.md), per rank under 2 gloo ranks
(fsdp_count.py, ``kangaroo bench fsdp``, tests/train/test_plan_fsdp.py), and on a GPU against
``torch.cuda.max_memory_allocated`` by scripts/plan_gpu_check.py.
"""

from __future__ import annotations

import dataclasses
import glob
import os

import torch

GIB = 2**30
# activation bytes per token per decoder layer: (d, d_kv, ff, constant) coefficients; "autocast" is one
# process (float32 parameters, bf16 autocast: the residual stream stays float32), "bf16" is FSDP2's
# bf16 MixedPrecisionPolicy (bf16 parameters in compute), "fp32" no mixed precision
LLM_ACT = {("autocast", "train"): (30, 4, 8, 24), ("bf16", "train"): (20, 4, 8, 24), ("fp32", "train"): (32, 8, 16, 24),
           ("autocast", "frozen"): (12, 4, 6, 24), ("bf16", "frozen"): (12, 4, 6, 24), ("fp32", "frozen"): (24, 8, 12, 24)}
LORA_PER_TARGET = 2  # bytes per (d + r) per LoRA target per token: the adapter's saved input and its rank-r output
LLM_CKPT = {"autocast": 4, "bf16": 2, "fp32": 4}  # bytes per d per token per layer kept under checkpointing
# vision bytes per patch per block: (width, mlp_hidden, constant) coefficients
VIS_ACT = {"autocast": (20, 10, 48), "bf16": (20, 10, 32), "fp32": (40, 20, 48)}
VIS_CKPT = {"autocast": 2, "bf16": 2, "fp32": 4}
LOSS_BYTES = 14  # per labelled token per vocabulary entry: bf16 logits, float32 copy, log-softmax, gradient


@dataclasses.dataclass
class Setup:
    """What a training stage trains and how (a recipe's ``train`` list, ``bf16``, ``gradient_checkpointing``)."""

    train: list[str]
    bf16: bool = True
    checkpointing: bool = True
    image_size: int = 448
    lora_r: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    labelled: int = 128  # answer tokens per row (the loss's logits)
    foreach: bool = True  # AdamW's multi-tensor kernels (the default on GPUs; a loop over tensors on the CPU)
    shard_vision: str = "root"  # under FSDP: the tower in the root unit, or a unit per block (recipe key)

    @classmethod
    def from_recipe_file(cls, path: str, lora: bool = False) -> "Setup":
        import yaml

        with open(path) as f:
            r = yaml.safe_load(f)
        train = list(r["train"])
        if lora and "llm" in train:
            train[train.index("llm")] = "lora"
        lc = r.get("lora") or {}
        return cls(train=train, bf16=bool(r.get("bf16", False)), checkpointing=bool(r.get("gradient_checkpointing", False)),
                   image_size=int(r.get("image_size", 448)), lora_r=int(lc.get("r", 16)),
                   lora_targets=tuple(lc.get("targets", cls.lora_targets)), shard_vision=r.get("shard_vision", "root"))


def stage_recipes(folder: str | None = None) -> dict[int, str]:
    """{stage number: recipe file} of the shipped 8B recipes (recipes/kangaroo-8b/stageK_*.yaml)."""
    folder = folder or os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                    "recipes", "kangaroo-8b")
    files = sorted(glob.glob(os.path.join(folder, "stage*_*.yaml")))
    if not files:
        raise FileNotFoundError(f"no stage recipes in {folder}")
    return {int(os.path.basename(f)[5:].split("_")[0]): f for f in files}


def _count(cfg):
    """Parameter counts of a config's parts (a model on the meta device: nothing allocated)."""
    from ..model.modeling import KangarooForConditionalGeneration

    with torch.device("meta"):
        m = KangarooForConditionalGeneration(cfg)
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    llm = m.llm()
    layer = n(llm.model.layers[0])
    linears = {name.rsplit(".", 1)[-1]: (mod.in_features, mod.out_features)
               for name, mod in llm.model.layers[0].named_modules() if isinstance(mod, torch.nn.Linear)}
    block = n(m.vision_tower.blocks[0]) if len(m.vision_tower.blocks) else 0
    parts = {"vision": n(m.vision_tower), "temporal": n(m.temporal_embed), "patchify": n(m.patchify),
             "projector": n(m.mm_projector), "markers": m.markers.numel(), "layers": layer * len(llm.model.layers),
             "embed": n(llm.model.embed_tokens), "head": 0 if cfg.tie_word_embeddings else n(llm.lm_head),
             "norm": n(llm.model.norm)}
    return parts, layer, linears, block


def row_tokens(cfg, frames: int, image_size: int, text_tokens: int) -> int:
    ts = [2.0 * i for i in range(frames)]
    return cfg.num_visual_tokens(frames, image_size, image_size, ts) + text_tokens if frames else text_tokens


def _mode(bf16: bool, gpus: int) -> str:
    return "fp32" if not bf16 else ("bf16" if gpus > 1 else "autocast")


def train_memory(cfg, frames: int, gpus: int, setup: Setup, text_tokens: int = 256, counts=None) -> dict:
    """Bytes per GPU, by part, of one training step at its peak; ``counts``: ``_count(cfg)``, if known."""
    parts, layer, linears, block = counts or _count(cfg)
    tc, v = cfg.text_config, cfg.vision
    L = row_tokens(cfg, frames, setup.image_size, text_tokens)
    layers, d, ff = tc.num_hidden_layers, tc.hidden_size, tc.intermediate_size
    d_kv = tc.num_key_value_heads * (d // tc.num_attention_heads)
    total = sum(parts.values())
    lora = "lora" in setup.train
    lora_params = 0
    if lora:
        lora_params = layers * sum(setup.lora_r * (i + o) for name, (i, o) in linears.items() if name in setup.lora_targets)
    trainable = lora_params + sum(parts[k] for k in ("vision", "temporal", "patchify", "projector", "markers")
                                  if k in setup.train)
    if "llm" in setup.train:
        trainable += parts["layers"] + parts["embed"] + parts["head"] + parts["norm"]
    g = gpus
    mode = _mode(setup.bf16, g)
    out = {"weights": 4 * (total + lora_params) / g, "gradients": 4 * trainable / g, "optimizer": 8 * trainable / g}
    # working copies of the weights in compute precision
    wb = 2 if setup.bf16 else 0  # fp32 computes on the parameters themselves
    root = total - parts["layers"]
    vision_in_graph = "vision" in setup.train  # the tower is at the bottom: in the graph only if it trains
    if g > 1:  # FSDP2 (train/distributed.py): the units' gathered copies, at three moments (below)
        fsdp = _fsdp_terms(parts, layer, block, lora_params // layers, setup, v.depth, wb or 4)
        out["working_copies"] = fsdp["backward"]
    else:  # autocast's bf16 weight copies: trainable ones (cached), frozen ones kept for the input gradient
        llm_mm = parts["layers"] + parts["head"]
        train_mm = parts["projector"] + (parts["vision"] if vision_in_graph else 0) + (llm_mm if "llm" in setup.train else 0)
        frozen_mm = 0 if "llm" in setup.train else (parts["head"] if setup.checkpointing else llm_mm)
        out["working_copies"] = wb * (train_mm + frozen_mm)
    # activations
    llm_kind = "train" if "llm" in setup.train else "frozen"
    cd, ckv, cff, c0 = LLM_ACT[(mode, llm_kind)]
    per_layer = cd * d + ckv * d_kv + cff * ff + c0
    if lora:
        scale = 2 if mode == "fp32" else 1
        per_layer += scale * LORA_PER_TARGET * len(setup.lora_targets) * (d + setup.lora_r)
    if setup.checkpointing:
        llm_act = L * (layers * LLM_CKPT[mode] * d + per_layer)  # every layer's input + one layer recomputed
    else:
        llm_act = L * layers * per_layer
    patches = frames * ((setup.image_size // v.patch_size) ** 2 + int(v.use_cls))
    cw, cm, cv0 = VIS_ACT[mode]
    per_block = cw * v.width + cm * v.mlp_hidden + cv0
    if not vision_in_graph:
        vis_act = 0  # frozen at the bottom: no gradient flows, nothing is kept (transient below)
    elif setup.checkpointing:
        vis_act = patches * (v.depth * VIS_CKPT[mode] * v.width + per_block)
    else:
        vis_act = patches * v.depth * per_block
    ab = 4 if mode != "bf16" else 2  # the embeddings, the visual features and the residual stream's dtype
    edge = L * d * ab * 2 + patches * v.width * ab * 2  # embeddings + visual rows written into them; tower output
    out["activations"] = llm_act + vis_act + edge
    out["loss"] = LOSS_BYTES * setup.labelled * tc.vocab_size
    # AdamW's foreach kernels (the default on GPUs) hold a temporary the size of the trainable shard
    out["optimizer_step_temporaries"] = 4 * trainable / g if setup.foreach else 0
    # the peak: at the start of the backward (every activation kept, the loss's gradient), or at the
    # optimiser step (every gradient); weights and optimiser state are there throughout. Under FSDP
    # also: the start of the LLM's forward (the tower's activations, the root's all-gather buffer
    # not yet freed) and the root unit's reduce-scatter at the end of the backward
    moments = {"backward": out["working_copies"] + out["activations"] + out["loss"],
               "optimizer step": out["gradients"] + out["optimizer_step_temporaries"]}
    if g > 1:
        moments["forward"] = fsdp["forward"] + vis_act + edge
        moments["reduce-scatter"] = out["gradients"] + fsdp["reduce_scatter"]
        out["reduce_scatter_buffers"] = fsdp["reduce_scatter"]
    out["peak_at"] = max(moments, key=moments.get)
    out["total"] = out["weights"] + out["optimizer"] + moments[out["peak_at"]]
    out["activations_without_checkpointing"] = L * layers * per_layer + (patches * v.depth * per_block if vision_in_graph else 0)
    out["tokens"] = L
    return out


def _fsdp_terms(parts: dict, layer: int, block: int, lora_layer: int, setup: Setup, depth: int, wb: int) -> dict:
    """FSDP2's transient bytes per GPU (counted with fsdp_count.py under 2 gloo ranks): ``wb`` bytes per
    gathered parameter. ``backward``: the root unit gathered (the root is not resharded after the
    forward) and two decoder layers (the one running, the last one kept); ``forward``: at the first
    layer's all-gather, the root's all-gather buffer is still held besides its parameters (FSDP frees
    it after the next unit's copy-out); ``reduce_scatter``: the largest trainable unit's unsharded
    gradients (compute dtype), their float32 copy and the float32 reduce-scatter input, all at once."""
    blocks = setup.shard_vision == "blocks"
    root = sum(parts.values()) - parts["layers"] - (depth * block if blocks else 0)
    last = block if blocks and depth else root  # the last all-gather before the LLM's first layer
    trainable_root = sum(parts[k] for k in ("vision", "temporal", "patchify", "projector", "markers") if k in setup.train)
    if "vision" in setup.train and blocks:
        trainable_root -= depth * block
    layer_t = layer if "llm" in setup.train else lora_layer  # a decoder layer's trainable parameters
    if "llm" in setup.train:
        trainable_root += parts["embed"] + parts["head"] + parts["norm"]
    unit = max(trainable_root, layer_t, block if blocks and "vision" in setup.train else 0)
    rs = (wb + 4 + 4) if wb == 2 else 8  # bf16 gradients + float32 copy + reduce-scatter input; fp32: no copy
    return {"backward": wb * (root + 2 * layer), "forward": wb * (root + last + layer), "reduce_scatter": rs * unit}


def inference_memory(cfg, frames: int, image_size: int = 448, text_tokens: int = 256, counts=None) -> dict:
    """Bytes of one prefill + generation on one GPU (bf16 weights, KV cache for the whole row)."""
    parts = (counts or _count(cfg))[0]
    tc, v = cfg.text_config, cfg.vision
    L = row_tokens(cfg, frames, image_size, text_tokens)
    d, ff = tc.hidden_size, tc.intermediate_size
    d_kv = tc.num_key_value_heads * (d // tc.num_attention_heads)
    out = {"weights": 2 * sum(parts.values()), "kv_cache": 2 * 2 * tc.num_hidden_layers * L * d_kv}
    patches = frames * ((image_size // v.patch_size) ** 2 + int(v.use_cls))
    prefill = L * (2 * 2 * d + 2 * 3 * ff) + 2 * L * d  # one layer's transients + the residual stream
    vision = patches * (2 * 4 * v.width + 2 * 3 * v.mlp_hidden)
    out["activations"] = prefill + vision + 2 * L * d  # the tower's transients are still referenced
    out["logits"] = 4 * tc.vocab_size
    out["total"] = sum(out.values())
    out["tokens"] = L
    return out


def max_frames(fn, budget: float, hi: int = 4096) -> int:
    """The largest frame count whose ``fn(frames)["total"]`` fits in ``budget`` bytes (0: not even one)."""
    lo, top = 0, hi
    if fn(1)["total"] > budget:
        return 0
    while lo < top:
        mid = (lo + top + 1) // 2
        if fn(mid)["total"] <= budget:
            lo = mid
        else:
            top = mid - 1
    return lo


def load_config(model: str):
    from ..model.config import KangarooConfig, kangaroo_8b_config

    if model == "8b":
        return kangaroo_8b_config()
    path = os.path.join(model, "config.json")
    if not os.path.exists(path):
        raise ValueError(f"--model {model!r}: neither '8b' nor a model folder (no config.json)")
    return KangarooConfig.from_pretrained(model)


def plan(model: str, frames: int, gpus: int, gpu_memory_gib: float, stage: int | None = None, lora: bool = False,
         text_tokens: int = 256, reserve_gib: float = 2.0, shard_vision: str | None = None) -> dict:
    """The report of ``kangaroo plan`` (``--json`` prints it): per phase (inference, stage K) the peak
    GiB per GPU, whether it fits in ``gpu_memory_gib`` less ``reserve_gib`` (CUDA context, allocator
    slack), the largest frame count that fits, and the breakdown."""
    if frames < 0 or gpus < 1 or gpu_memory_gib <= 0:
        raise ValueError("--frames must be >= 0, --gpus >= 1, --gpu-memory-gib > 0")
    cfg = load_config(model)
    recipes = stage_recipes()
    if stage is not None and stage not in recipes:
        raise ValueError(f"--stage {stage}: the stages are {sorted(recipes)}")
    budget = (gpu_memory_gib - reserve_gib) * GIB
    phases = {}
    img = Setup.from_recipe_file(recipes[max(recipes)]).image_size
    counts = _count(cfg)
    phases["inference"] = (lambda n: inference_memory(cfg, n, img, text_tokens, counts), img)
    for k in [stage] if stage is not None else sorted(recipes):
        s = Setup.from_recipe_file(recipes[k], lora=lora)
        if shard_vision is not None:  # otherwise the recipe's (root by default)
            s.shard_vision = shard_vision
        phases[f"stage{k}"] = ((lambda n, s=s: train_memory(cfg, n, gpus, s, text_tokens, counts)), s.image_size)
    report = {"model": model, "frames": frames, "gpus": gpus, "gpu_memory_gib": gpu_memory_gib, "lora": lora,
              "shard_vision": shard_vision or "recipe's",
              "reserve_gib": reserve_gib, "phases": {}}
    for name, (fn, size) in phases.items():
        m = fn(frames)
        report["phases"][name] = {
            "fits": m["total"] <= budget, "peak_gib_per_gpu": round(m["total"] / GIB, 2),
            "max_frames": max_frames(fn, budget), "tokens": m["tokens"], "image_size": size,
            "peak_at": m.get("peak_at", "prefill"),
            "breakdown_gib": {k: round(v / GIB, 3) for k, v in m.items() if k not in ("total", "tokens", "peak_at")}}
    main = report["phases"][f"stage{stage}" if stage is not None else "inference"]
    report.update(fits=main["fits"], peak_gib_per_gpu=main["peak_gib_per_gpu"], max_frames=main["max_frames"])
    return report


def format_plan(report: dict) -> str:
    lines = [f"{report['model']}: {report['frames']} frames, {report['gpus']} GPU(s) of {report['gpu_memory_gib']} GiB"
             f"{' (LoRA)' if report['lora'] else ''}; {report['reserve_gib']} GiB kept free per GPU"]
    for name, p in report["phases"].items():
        b = p["breakdown_gib"]
        parts = ", ".join(f"{k} {v:.1f}" for k, v in b.items() if k != "activations_without_checkpointing")
        lines.append(f"  {name:9s} {p['peak_gib_per_gpu']:8.1f} GiB/GPU  {'fits' if p['fits'] else 'DOES NOT FIT':12s}"
                     f" max frames {p['max_frames']:5d}  ({p['tokens']} tokens; {parts})")
    return "\n".join(lines)
