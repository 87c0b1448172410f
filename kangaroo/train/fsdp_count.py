"""Counted tensor bytes per rank of a sharded (FSDP2) training step: the ground truth for the
planner's multi-GPU terms (plan.py, ``--gpus`` > 1) and for ``shard_vision`` root vs blocks.

On every rank of a process group (``torchrun``; gloo on the CPU), ``count_sharded_step`` builds the
model as the trainer does (same seed on every rank, ``freeze_except``, ``shard_model``), runs one
step (the optimiser state exists from there on), and counts the next one with
``torch.distributed._tools.fsdp2_mem_tracker.FSDPMemTracker``: a TorchDispatchMode that sees DTensors'
local shards, FSDP's all-gather and reduce-scatter buffers and the ``UntypedStorage.resize_`` FSDP2
frees its unsharded parameters with (which ``memcount.ByteCounter`` cannot see), not the process RSS.

``python -m torch.distributed.run --nproc_per_node G -m kangaroo.train.fsdp_count CASES.json OUT.json``
runs a list of cases (``Case``); ``run_cases`` launches that and reads the result back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from .plan import Setup


@dataclasses.dataclass
class Case:
    """One counted step: a model config (``KangarooConfig.to_dict()``), a row of ``videos`` videos of
    ``frames`` frames (``videos_per_rank``: rank r's own count instead), a plan.Setup's fields (its
    ``shard_vision`` says how the tower is sharded)."""

    name: str
    config: dict
    frames: int
    setup: dict
    text_tokens: int = 256
    videos: int = 1
    videos_per_rank: list[int] | None = None
    timed_steps: int = 0  # further steps timed after the counted one (median seconds)

    def make_setup(self) -> Setup:
        return Setup(**{**self.setup, "train": list(self.setup["train"])})


def tiny_8b_layout(vision_depth: int = 8, llm_layers: int = 4, image_size: int = 112):
    """The Kangaroo-8B layout (EVA02-CLIP-L-style tower with a cls token and SwiGLU, Llama-3 with 4:1
    grouped-query attention and an untied head, the 8B's patchify and projector) at tiny widths."""
    from ..model.config import KangarooConfig, VisionConfig, llama3_8b_instruct

    vision = dataclasses.asdict(VisionConfig(image_size=image_size, width=64, depth=vision_depth, heads=4,
                                             mlp_hidden=170, rope_pretrain_grid=4))
    text = {**llama3_8b_instruct(), "hidden_size": 128, "num_hidden_layers": llm_layers, "num_attention_heads": 8,
            "num_key_value_heads": 2, "intermediate_size": 448, "vocab_size": 4096}
    return KangarooConfig(vision_config=vision, text_config=text, video_token_id=4094, image_token_id=4095)


def count_sharded_step(case: Case) -> dict:
    """This rank's counted peak bytes (and its breakdown) of one steady-state step of ``case``.
    Collective: every rank of the initialised process group calls it with the same case."""
    import torch.distributed as dist
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

    from ..model.config import KangarooConfig
    from ..model.modeling import KangarooForConditionalGeneration
    from .distributed import media_pads, shard_model
    from .memcount import _row, set_trainable_parts, train_step

    rank = dist.get_rank()
    cfg = KangarooConfig.from_dict(case.config)
    s = case.make_setup()
    torch.manual_seed(0)
    model = KangarooForConditionalGeneration(cfg)
    set_trainable_parts(model, s)
    shard_model(model, s.bf16, s.shard_vision)
    params = [p for p in model.parameters() if p.requires_grad]  # the DTensor shards
    videos = case.videos_per_rank[rank] if case.videos_per_rank else case.videos
    row = _row(cfg, case.frames, s.image_size, case.text_tokens, s.labelled, seed=rank, videos=videos)
    pad = media_pads(model, [row], torch.device("cpu"))[0] if s.shard_vision == "blocks" else 0
    opt, step = train_step(model, params, row, s.bf16, foreach=s.foreach, media_pad=pad)
    step()  # the optimiser's state exists from here on
    tracker = FSDPMemTracker(model, opt)
    tracker.track_inputs((row,))
    with tracker:
        step()
    peak = tracker.get_tracker_snapshot("peak")
    snap = peak[torch.device("cpu")] if torch.device("cpu") in peak else next(iter(peak.values()))
    times = []
    for _ in range(case.timed_steps):
        dist.barrier()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    by_kind = {str(getattr(k, "value", k)): int(v) for k, v in snap.items()}
    return {"rank": rank, "peak": by_kind.pop("Total"), "by_kind": by_kind, "media_pad": pad,
            "step_s": statistics.median(times) if times else None}


def main(argv: list[str] | None = None) -> int:
    """Worker: every rank counts every case; rank 0 writes [{case, ranks: [per-rank result]}]."""
    import torch.distributed as dist

    cases_path, out_path = (argv if argv is not None else sys.argv[1:])[:2]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        cases = [Case(**c) for c in json.load(open(cases_path))]
        results = []
        for c in cases:
            mine = count_sharded_step(c)
            every: list = [None] * dist.get_world_size()
            dist.all_gather_object(every, mine)
            results.append({"case": dataclasses.asdict(c), "ranks": every})
        if dist.get_rank() == 0:
            with open(out_path, "w") as f:
                json.dump(results, f, indent=1)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


def run_cases(cases: list[Case], world: int = 2, timeout: float = 600) -> list[dict]:
    """Count ``cases`` under ``torchrun --nproc_per_node world`` (gloo, CPU) in a child process."""
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
        sock.close()
        cases_path, out_path = os.path.join(tmp, "cases.json"), os.path.join(tmp, "out.json")
        with open(cases_path, "w") as f:
            json.dump([dataclasses.asdict(c) for c in cases], f)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--master_port", port,
               "-m", "kangaroo.train.fsdp_count", cases_path, out_path]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
        if p.returncode != 0:
            raise RuntimeError(f"torchrun of {len(cases)} counting cases failed:\n{p.stderr[-3000:]}")
        with open(out_path) as f:
            return json.load(f)


if __name__ == "__main__":
    raise SystemExit(main())
