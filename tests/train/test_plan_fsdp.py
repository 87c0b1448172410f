"""`kangaroo plan --gpus 2` against counted tensor bytes per rank of sharded training steps (FSDP2 over
2 gloo ranks under torchrun, counted by FSDPMemTracker: kangaroo/train/fsdp_count.py), on a tiny
model of the 8B layout whose shape is not the one the bench's table (docs/training.md) was measured on."""

import dataclasses

import pytest

from kangaroo.train.bench_fsdp import plan_cases, plan_errors
from kangaroo.train.fsdp_count import run_cases, tiny_8b_layout

TOL = 0.10  # the bench's table: at most 6.9% off on the tiny 8B layout (before the fix: -21% for stage 4)


@pytest.mark.timeout(600)
def test_plan_matches_counted_bytes_per_rank_on_2_ranks():
    cfg = tiny_8b_layout(vision_depth=6, llm_layers=3)
    cases = plan_cases(cfg, stages=["stage 4 (everything)", "stage 5 LoRA"], checkpointing=(True,))
    cases += plan_cases(cfg, "blocks", stages=["stage 4 (everything)"], checkpointing=(True,))
    # and a step whose rank 0 has no video and rank 1 two (blocks: rank 0 runs 2 blank tower calls)
    uneven = dataclasses.replace(cases[-1], name="uneven", videos_per_rank=[0, 2])
    res = run_cases(cases + [uneven], world=2)
    assert all(len(r["ranks"]) == 2 and r["ranks"][0]["peak"] > 0 for r in res)
    assert [x["media_pad"] for x in res[-1]["ranks"]] == [2, 0]
    for row in plan_errors(res[:-1], cfg, world=2, single=False):
        print(f"{row['case']}: predicted {row['predicted_mib']:.2f} MiB, counted {row['counted_mib']:.2f} MiB "
              f"({row['error']:+.1%}, peak at {row['peak_at']})")
        assert abs(row["error"]) <= TOL, row
