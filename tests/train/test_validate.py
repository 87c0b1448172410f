"""Validation during training (eval_data, eval_every) and the loggers (train/validate.py, train/loggers.py)."""

import json
import os

import pytest
import torch

from kangaroo.model import KangarooForConditionalGeneration, tiny_config
from kangaroo.train import Recipe, Trainer


def _recipe(tiny_dir, synth_dir, **kw):
    base = dict(name="v", init=tiny_dir, image_size=56, min_frames=2, max_frames=4, seconds_per_frame=4.0,
                max_seq_len=400, max_steps=3, warmup_steps=1, save_every=3, lr=1e-3, train=["projector", "llm"],
                data=[dict(path=str(synth_dir / "captions.json"), format="captions")],
                eval_data=[dict(path=str(synth_dir / "mcqa.json"), format="mcqa"),
                           dict(path=str(synth_dir / "openqa.json"), format="openqa")],
                eval_every=2, eval_samples=4, eval_generate=3)
    base.update(kw)
    return Recipe.from_dict(base)


def test_validation_loss_and_accuracy_logged_and_plotted(tmp_path, tiny_dir, synth_dir):
    t = Trainer(_recipe(tiny_dir, synth_dir, eval_generate=2), str(tmp_path / "run"), progress=False)
    assert [k for k, _ in t.validator.items] == [0, 1, 0, 1]  # in turn from each source
    t.train()
    ev = [json.loads(x) for x in open(tmp_path / "run" / "eval.jsonl")]
    assert [e["step"] for e in ev] == [2, 3]  # every eval_every steps and at the end
    for e in ev:
        assert e["eval_samples"] == 4 and e["eval_skipped"] == 0 and e["eval_loss"] > 0
        assert e["eval_answered"] == 2 and 0 <= e["eval_accuracy"] <= 1  # one mcqa, one openqa
    assert ev[0]["eval_loss"] != ev[1]["eval_loss"]  # the model moved between them
    again = t.validate()  # the same samples at every validation: the same figure for the same weights
    assert again["eval_loss"] == pytest.approx(ev[1]["eval_loss"], rel=1e-6)
    assert t.model.training  # validation puts the model back in training mode
    assert os.path.getsize(tmp_path / "run" / "loss.png") > 0


def test_eval_loss_is_the_mean_over_answer_tokens(tmp_path, tiny_dir, synth_dir):
    from kangaroo.train.packing import pack_row

    t = Trainer(_recipe(tiny_dir, synth_dir, eval_generate=0, eval_samples=3), str(tmp_path / "run"), progress=False)
    total, n = 0.0, 0
    t.model.eval()
    with torch.no_grad():
        for k, i in t.validator.items:
            from kangaroo.train.data import encode_sample

            enc = encode_sample(t.validator.sources[k].sample(i), t.recipe, t.builder, t.model.config)
            row = pack_row([enc])
            total += float(t.model(**row)["loss_sum"])
            n += int((row["labels"][:, 1:] != -100).sum())
    t.model.train()
    got = t.validate()
    assert "eval_accuracy" not in got and got["eval_loss"] == pytest.approx(total / n, rel=1e-5)


def test_recipe_keys_for_data_at_scale(tiny_dir, synth_dir):
    for bad, msg in (({"loggers": ["mlflow"]}, "unknown loggers"), ({"max_failed_fraction": 1.5}, "max_failed_fraction"),
                     ({"global_rows": 0}, "global_rows"), ({"eval_every": -1}, "eval_every"),
                     ({"eval_data": [{"path": "x.json", "format": "nope"}]}, r"eval_data\[0\]")):
        with pytest.raises(ValueError, match=msg):
            _recipe(tiny_dir, synth_dir, **bad)
    r = _recipe(tiny_dir, synth_dir, loggers=["tensorboard"], global_rows=4)
    assert Recipe.from_dict(r.to_dict()) == r


def test_tensorboard_logger_writes_train_and_eval_scalars(tmp_path, tiny_dir, synth_dir):
    pytest.importorskip("tensorboard", reason="the tensorboard package (extra 'log', requirements.lock)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = _recipe(tiny_dir, synth_dir, loggers=["tensorboard"], eval_generate=0, eval_every=0)
    Trainer(r, str(tmp_path / "run"), progress=False).train()
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "eval/eval_loss"} <= tags
    rows = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([x["loss"] for x in rows], rel=1e-6)
    assert [e.step for e in acc.Scalars("eval/eval_loss")] == [3]


def test_wandb_logger_is_offline_and_rank_zero_only(tmp_path, monkeypatch, tiny_dir, synth_dir):
    """The W&B logger's contract with the wandb API (wandb is not in the lock: a stand-in module that
    records the calls; with wandb installed the same calls run for real)."""
    import sys
    import types

    from kangaroo.train.loggers import make_loggers

    calls = []

    class Run:
        def log(self, data, step):
            calls.append(("log", step, data))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(("init", kw)) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    r = _recipe(tiny_dir, synth_dir, loggers=["wandb"])
    assert make_loggers(r, str(tmp_path), rank=1).loggers == []  # other ranks log nothing
    lg = make_loggers(r, str(tmp_path), rank=0)
    lg.log(3, {"step": 3, "loss": 1.5, "skipped": {"decode_error": 2}, "note": "x"})
    lg.log(3, {"step": 3, "eval_loss": 2.0}, "eval")
    lg.close()
    assert calls[0][0] == "init" and calls[0][1]["mode"] == "offline" and calls[0][1]["dir"] == str(tmp_path)
    assert calls[1] == ("log", 3, {"train/loss": 1.5, "skipped/decode_error": 2.0})
    assert calls[2] == ("log", 3, {"eval/eval_loss": 2.0}) and calls[3] == ("finish",)
