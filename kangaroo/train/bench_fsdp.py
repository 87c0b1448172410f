"""``kangaroo bench fsdp``: FSDP2 on 2 gloo ranks (CPU), counted tensor bytes per rank (fsdp_count.py).

Two parts, one ``torchrun`` of every case (the baseline in the same run):

- ``shard_vision``: the vision tower in the root unit (baseline) against a unit per block
  (``shard_vision: blocks``, train/distributed.py), on the tiny 8B-layout model
  (``fsdp_count.tiny_8b_layout``), with the ranks' rows holding 1 and 2 videos (rank 0 pads one
  blank tower call in blocks mode): each rank's counted peak bytes and the median step time,
  ratios blocks / root. CPU step times over gloo are not GPU times (no NCCL, no overlap of
  communication with compute): the memory is the meaningful part;
- ``plan``: ``kangaroo plan``'s per-GPU prediction (plan.train_memory, --gpus 2 and 1) against the
  counted peak of rank 0 (2 ranks, equal rows) and of one process (memcount.count_train_step),
  for the training stages' setups with and without activation checkpointing.
"""

from __future__ import annotations

from .fsdp_count import Case, run_cases, tiny_8b_layout
from .plan import Setup, train_memory

MIB = 2**20
VIDEO = ["vision", "temporal", "patchify", "projector", "markers"]
STAGES = {"stages 1-3 (LLM frozen)": VIDEO, "stage 4 (everything)": VIDEO + ["llm"],
          "stage 5 (LLM, tower frozen)": ["temporal", "patchify", "projector", "markers", "llm"],
          "stage 5 LoRA": ["temporal", "patchify", "projector", "markers", "lora"]}
FRAMES = 8


def _setup(train, checkpointing=True, shard_vision="root") -> dict:
    return dict(train=list(train), image_size=112, checkpointing=checkpointing, lora_r=8, labelled=32, foreach=False,
                shard_vision=shard_vision)


def plan_cases(cfg, shard_vision: str = "root", checkpointing=(True, False), stages=None) -> list[Case]:
    return [Case(f"{name}{'' if ck else ', no checkpointing'}", cfg.to_dict(), FRAMES, _setup(train, ck, shard_vision))
            for name, train in STAGES.items() if stages is None or name in stages for ck in checkpointing]


def plan_errors(results: list[dict], cfg, world: int = 2, single: bool = True) -> list[dict]:
    """Per counted case: the prediction for ``world`` GPUs against rank 0's count (and, with
    ``single``, for one GPU against one process's count)."""
    from .memcount import count_train_step

    rows = []
    for r in results:
        c = Case(**r["case"])
        s = c.make_setup()
        pred = train_memory(cfg, c.frames, world, s)
        got = max(x["peak"] for x in r["ranks"])
        row = {"case": c.name + (" [blocks]" if s.shard_vision == "blocks" else ""), "shard_vision": s.shard_vision, "counted_mib": got / MIB,
               "predicted_mib": pred["total"] / MIB, "error": pred["total"] / got - 1, "peak_at": pred["peak_at"]}
        if single:
            one = count_train_step(cfg, c.frames, s)
            row.update(counted_1_mib=one / MIB, error_1=train_memory(cfg, c.frames, 1, s)["total"] / one - 1)
        rows.append(row)
    return rows


def bench_fsdp(quick: bool = False, progress: bool = True) -> dict:
    cfg = tiny_8b_layout()
    vis_stages = ["stages 1-3 (LLM frozen)"] if quick else ["stages 1-3 (LLM frozen)", "stage 4 (everything)"]
    vis = [Case(f"{name} [{mode}]", cfg.to_dict(), FRAMES, _setup(STAGES[name], True, mode), videos_per_rank=[1, 2],
                timed_steps=3 if quick else 5)
           for name in vis_stages for mode in ("root", "blocks")]
    plan = plan_cases(cfg, checkpointing=(True,) if quick else (True, False))
    plan += plan_cases(cfg, "blocks", checkpointing=(True,), stages=vis_stages)  # the planner's blocks terms
    if progress:
        print(f"counting {len(vis) + len(plan)} cases under torchrun (2 gloo ranks)...", flush=True)
    res = run_cases(vis + plan, world=2, timeout=1800)
    vrows = []
    for name in vis_stages:
        root, blocks = (next(r for r in res[: len(vis)] if r["case"]["name"] == f"{name} [{m}]") for m in ("root", "blocks"))
        peak = {m: [x["peak"] / MIB for x in r["ranks"]] for m, r in (("root", root), ("blocks", blocks))}
        step = {m: max(x["step_s"] for x in r["ranks"]) for m, r in (("root", root), ("blocks", blocks))}
        vrows.append({"case": name, "peak_mib_root": peak["root"], "peak_mib_blocks": peak["blocks"],
                      "memory_ratio_blocks_vs_root": max(peak["blocks"]) / max(peak["root"]),
                      "step_s_root": step["root"], "step_s_blocks": step["blocks"],
                      "time_ratio_blocks_vs_root": step["blocks"] / step["root"],
                      "blank_tower_calls": [x["media_pad"] for x in blocks["ranks"]]})
    return {"model": "tiny 8B layout (fsdp_count.tiny_8b_layout)", "frames": FRAMES, "world": 2, "backend": "gloo (CPU)",
            "shard_vision": vrows, "plan": plan_errors(res[len(vis):], cfg)}


def format_fsdp(rep: dict) -> str:
    lines = [f"FSDP2, {rep['world']} ranks over {rep['backend']}, {rep['model']}, {rep['frames']} frames per video",
             "", "shard_vision: blocks vs root (ranks' rows hold 1 and 2 videos; CPU times are not GPU times)", "",
             "| case | peak MiB per rank, root | blocks | memory blocks/root | step s root | blocks | time blocks/root |",
             "|---|---|---|---|---|---|---|"]
    for r in rep["shard_vision"]:
        lines.append(f"| {r['case']} | {', '.join(f'{x:.2f}' for x in r['peak_mib_root'])} | "
                     f"{', '.join(f'{x:.2f}' for x in r['peak_mib_blocks'])} | {r['memory_ratio_blocks_vs_root']:.3f} | "
                     f"{r['step_s_root']:.3f} | {r['step_s_blocks']:.3f} | {r['time_ratio_blocks_vs_root']:.2f} |")
    lines += ["", "kangaroo plan vs counted peak bytes per rank", "",
              "| case | 2 GPUs: counted MiB | predicted | error | peak at | 1 GPU: counted MiB | error |", "|---|---|---|---|---|---|---|"]
    for r in rep["plan"]:
        lines.append(f"| {r['case']} | {r['counted_mib']:.2f} | {r['predicted_mib']:.2f} | {r['error']:+.1%} | {r['peak_at']} | "
                     f"{r.get('counted_1_mib', float('nan')):.2f} | {r.get('error_1', float('nan')):+.1%} |")
    return "\n".join(lines)
