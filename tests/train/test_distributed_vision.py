"""The vision tower sharded per block under FSDP2 (``shard_vision: blocks``, two gloo ranks under
torchrun): ranks whose rows hold different numbers of videos do not hang (every rank pads to the
busiest one's tower calls), the losses equal the root-unit run's within 1e-6 relative, and an
interrupted run resumes from its DCP checkpoint with the sharded tower."""

import os

import pytest
import torch

from kangaroo.model import KangarooForConditionalGeneration, tiny_config
from kangaroo.train import Recipe
from kangaroo.train.memcount import _row

from .test_distributed import _close, _rows, _torchrun


def _recipe(tiny_dir, synth_dir, **kw):
    data = [dict(path=str(synth_dir / f), format=fmt, weight=1.0)
            for f, fmt in (("captions.json", "captions"), ("mcqa.json", "mcqa"), ("openqa.json", "openqa"))]
    base = dict(name="v", init=tiny_dir, image_size=56, min_frames=2, max_frames=4, seconds_per_frame=3.0,
                max_seq_len=320, max_steps=4, warmup_steps=1, save_every=2, lr=1e-3, rows_per_step=1,
                train=["vision", "projector", "llm"], bf16=True, gradient_checkpointing=True, data=data,
                eval_data=data[:1], eval_samples=3, eval_generate=0)
    base.update(kw)
    return Recipe.from_dict(base)


@pytest.mark.timeout(900)
def test_vision_blocks_pad_equal_root_and_resume(tmp_path, tiny_dir, synth_dir):
    root, blocks = tmp_path / "root.yaml", tmp_path / "blocks.yaml"
    _recipe(tiny_dir, synth_dir).save(root)
    _recipe(tiny_dir, synth_dir, shard_vision="blocks").save(blocks)
    _torchrun(["--recipe", str(root), "--out", str(tmp_path / "root")])
    ref = _rows(tmp_path / "root")
    assert [x["step"] for x in ref] == [1, 2, 3, 4] and "vision_pad_calls" not in ref[0]
    # per block, interrupted after step 3 (last checkpoint: step 2)
    _torchrun(["--recipe", str(blocks), "--out", str(tmp_path / "blocks"), "--stop-after", "3"])
    cut = _rows(tmp_path / "blocks")
    # the ranks' rows held different numbers of videos: some rank ran blank media to keep in step
    assert sum(x["vision_pad_calls"] for x in cut) > 0, cut
    _close([x["loss"] for x in cut], [x["loss"] for x in ref[:3]])
    assert not (tmp_path / "blocks" / "model").exists()
    _torchrun(["--recipe", str(blocks), "--out", str(tmp_path / "blocks"), "--resume"])
    rows = _rows(tmp_path / "blocks")
    assert [x["step"] for x in rows] == [1, 2, 3, 4]  # each step once
    _close([x["loss"] for x in rows], [x["loss"] for x in ref])
    assert os.path.exists(tmp_path / "blocks" / "model" / "config.json")
    assert os.path.exists(tmp_path / "blocks" / "eval.jsonl")  # the validation pass pads too


def test_tower_calls_and_media_pad_change_no_value():
    torch.manual_seed(0)
    cfg = tiny_config(vocab=300, video_token_id=298, image_token_id=299, frame_chunk=4)
    model = KangarooForConditionalGeneration(cfg)
    calls = []
    model.vision_tower.register_forward_hook(lambda *a: calls.append(1))
    row = _row(cfg, 10, 56, 32, 8, videos=2)  # 2 videos of 10 frames, 4 frames per tower call
    assert model.tower_calls(10) == 3
    base = model(**row)["loss_sum"]
    assert len(calls) == 6
    calls.clear()
    padded = model(**row, media_pad=2)["loss_sum"]
    assert len(calls) == 8  # 2 more tower calls, before the LLM
    assert torch.equal(padded, base)
    padded.backward()  # every visual parameter gets a gradient, the same as without the padding
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    model.zero_grad()
    base = model(**row)["loss_sum"]
    base.backward()
    assert all(torch.equal(grads[n], p.grad) for n, p in model.named_parameters())


def test_shard_vision_bad_value_is_a_clear_error(tiny_dir, synth_dir):
    with pytest.raises(ValueError, match="shard_vision: must be one of root, blocks, got 'layers'"):
        _recipe(tiny_dir, synth_dir, shard_vision="layers")
    from kangaroo.train.distributed import shard_model

    with pytest.raises(ValueError, match="shard_vision"):
        shard_model(None, True, "layers")
