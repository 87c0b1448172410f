"""Process-group set-up and FSDP2 sharding for the trainer.

``shard_model`` applies ``torch.distributed.fsdp.fully_shard`` (FSDP2: per-parameter DTensor
sharding, frozen and trainable parameters in one unit, works over gloo on CPU):

- every LLM decoder layer is its own unit (its parameters are all-gathered just before it
  runs and freed after; with activation checkpointing the recompute gathers again);
- the root unit holds the rest: embeddings, head, projector, patchify, markers and the vision
  tower. The tower stays in the root on purpose: ranks see different numbers of videos per step,
  and an FSDP unit must run the same number of times on every rank or the collectives hang.
  Sharding it per block would need every rank to run it an equal, all-reduced number of times
  (padding with blank videos); that is not done (docs/training.md);
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


def shard_model(model, bf16: bool):
    """Shard ``model`` (a KangarooForConditionalGeneration) in place as the module docstring says."""
    from torch.distributed.fsdp import fully_shard

    mp = mixed_precision(bf16)
    layers = model.llm().model.layers
    for i, layer in enumerate(layers):
        # the last layer's parameters are needed again at once by the backward: keep them gathered
        fully_shard(layer, mp_policy=mp, reshard_after_forward=i < len(layers) - 1)
    fully_shard(model, mp_policy=mp)
    return model


def all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    """Sum (or max) a few numbers over the ranks, in float64 on ``device`` (nccl needs a GPU
    tensor); unchanged in one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()
