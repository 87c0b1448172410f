"""Process-group set-up and FSDP2 sharding for the trainer.

``shard_model`` applies ``torch.distributed.fsdp.fully_shard`` (FSDP2: per-parameter DTensor
sharding, frozen and trainable parameters in one unit, works over gloo on CPU):

- every LLM decoder layer is its own unit (its parameters are all-gathered just before it
  runs and freed after; with activation checkpointing the recompute gathers again);
- the root unit holds the rest: embeddings, head, projector, patchify, markers and, with
  ``shard_vision="root"`` (the default), the vision tower. Ranks see different numbers of videos per
  step, and an FSDP unit must run the same number of times, in the same order, on every rank or
  the collectives hang; the root unit runs once per forward whatever the videos;
- with ``shard_vision="blocks"`` each tower block is a unit of its own (gathered for one tower call,
  freed after it), and every rank calls the tower equally often: before each row, ``media_pads``
  all-reduces the largest number of tower calls of that row over the ranks, and a rank with fewer
  runs blank one-frame media for the rest inside the model's forward (``media_pad``), after its real
  media and before the LLM, their output times zero added to the loss: no value changes, the
  backward reduces every block as often on every rank (the autograd engine runs the backward in
  the reverse order of the forward's nodes, the same on every rank). Which mode is better:
  docs/training.md;
- with ``bf16`` the units compute in bfloat16 (``MixedPrecisionPolicy(param_dtype=bf16,
  reduce_dtype=fp32)``): the sharded parameters, the optimiser state and the gradient reduction
  stay in float32, so the fp32 parameters are the master copy.

LoRA works under it unchanged: the adapters are parameters of the decoder layers' units.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(world: int) -> torch.device:
    """Start the process group when ``world > 1`` (nccl on GPUs, gloo on CPU) and return this
    process's device: ``cuda:LOCAL_RANK``, or the CPU."""
    _, _, local = world_info()
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")


def mixed_precision(bf16: bool):
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if not bf16:
        return MixedPrecisionPolicy()  # everything in the parameters' dtype (float32)
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def shard_model(model, bf16: bool, shard_vision: str = "root"):
    """Shard ``model`` (a KangarooForConditionalGeneration) in place as the module docstring says."""
    from torch.distributed.fsdp import fully_shard

    if shard_vision not in ("root", "blocks"):
        raise ValueError(f"shard_vision: must be root or blocks, got {shard_vision!r}")
    mp = mixed_precision(bf16)
    if shard_vision == "blocks":
        for block in model.vision_tower.blocks:
            fully_shard(block, mp_policy=mp)
    layers = model.llm().model.layers
    for i, layer in enumerate(layers):
        # the last layer's parameters are needed again at once by the backward: keep them gathered
        fully_shard(layer, mp_policy=mp, reshard_after_forward=i < len(layers) - 1)
    fully_shard(model, mp_policy=mp)
    return model


def media_pads(model, rows: list[dict], device: torch.device) -> list[int]:
    """For ``shard_vision="blocks"``: per row of this rank (every rank has as many rows), the blank
    media to run so that it calls the tower as often as the busiest rank does on that row, and at
    least once (a row without video must still give the visual parameters a gradient).
    Collective: every rank calls it with its rows of the step, before the first forward."""
    def calls(row) -> int:  # what the forward will run: the tower only if the row has media placeholders
        if not row.get("videos") or not bool(model.media_mask(row["input_ids"]).any()):
            return 0
        return sum(model.tower_calls(int(px.shape[0])) for px, _ in row["videos"])

    own = [calls(row) for row in rows]
    top = all_reduce([float(n) for n in own], device, op="max")
    return [max(1, int(t)) - n for n, t in zip(own, top)]


def all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    """Sum (or max) a few numbers over the ranks, in float64 on ``device`` (nccl needs a GPU
    tensor); unchanged in one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()
