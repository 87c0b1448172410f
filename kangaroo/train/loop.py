"""The step loop both trainers share (``Trainer``, ``TagTrainer``) and what it writes: metrics
as JSONL (and to the recipe's loggers), validation (eval.jsonl), a loss-curve PNG with the
held-out curve, and checkpoints that are either whole or absent."""

from __future__ import annotations

import json
import os
import shutil
from typing import Callable

import torch
from tqdm import tqdm


def run_steps(trainer, one_step: Callable[[], dict], postfix: Callable[[dict], dict], title: str,
              stop_at: int | None = None, rank: int = 0) -> dict:
    """Call ``one_step()`` (one optimiser step: it advances ``trainer.step`` and returns the
    step's metrics) until ``recipe.max_steps``: each step's metrics go to ``metrics.jsonl`` and
    the progress bar, a checkpoint every ``save_every`` steps; ``stop_at`` stops after that
    step, as an interruption would. At the end: the model exported to OUT/model, loss.png."""
    r = trainer.recipe
    bar = tqdm(total=r.max_steps, initial=trainer.step, desc=r.name, unit="step",
               disable=not trainer.progress or rank != 0)
    metrics_path = os.path.join(trainer.out, "metrics.jsonl")
    loggers = getattr(trainer, "loggers", None)  # TensorBoard / W&B (train/loggers.py); none on other ranks
    last: dict = {}
    while trainer.step < r.max_steps:
        last = one_step()
        if rank == 0:
            if trainer.step % r.log_every == 0:
                append_metrics(metrics_path, last)
                if loggers is not None:
                    loggers.log(trainer.step, last)
            bar.set_postfix(**postfix(last))
            bar.update(1)
        run_validation(trainer, rank, loggers)
        if trainer.step % r.save_every == 0 or trainer.step == r.max_steps:
            trainer.save_checkpoint()
        if stop_at is not None and trainer.step >= stop_at:
            bar.close()
            return last
    bar.close()
    trainer.export(os.path.join(trainer.out, "model"))
    if rank == 0:
        plot_losses(metrics_path, os.path.join(trainer.out, "loss.png"), title)
        if last.get("skipped"):
            tqdm.write(f"{r.name}: skipped samples by reason {last['skipped']} of {last.get('samples_tried')} tried")
    return last


def run_validation(trainer, rank: int, loggers) -> None:
    """Validate (``trainer.validate``, every rank) every ``eval_every`` steps and at the last step;
    rank 0 writes the result to OUT/eval.jsonl and the loggers."""
    r = trainer.recipe
    validate = getattr(trainer, "validate", None)
    if validate is None or not r.eval_data:
        return
    if not ((r.eval_every and trainer.step % r.eval_every == 0) or trainer.step == r.max_steps):
        return
    ev = validate()
    if rank == 0 and ev:
        append_metrics(os.path.join(trainer.out, "eval.jsonl"), ev)
        if loggers is not None:
            loggers.log(trainer.step, ev, "eval")


def write_checkpoint(out: str, step: int, state: dict, optim: dict, meta: dict) -> str:
    """OUT/checkpoints/step_N/{trainable.safetensors, optim.pt, state.json}, written to a
    temporary folder and renamed (a checkpoint is either whole or absent), then ``latest``."""
    from safetensors.torch import save_file

    ckdir = os.path.join(out, "checkpoints")
    final = os.path.join(ckdir, f"step_{step:07d}")
    tmp = final + ".part"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file(state, os.path.join(tmp, "trainable.safetensors"))
    torch.save(optim, os.path.join(tmp, "optim.pt"))
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(meta, f)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _atomic_write(os.path.join(ckdir, "latest"), os.path.basename(final))
    return final


def checkpoint_dir(out: str, step: int | None = None) -> str | None:
    """OUT's checkpoint folder at ``step`` (None: the latest), or None if there is none."""
    ckdir = os.path.join(out, "checkpoints")
    if step is None:
        latest = os.path.join(ckdir, "latest")
        return os.path.join(ckdir, open(latest).read().strip()) if os.path.exists(latest) else None
    ck = os.path.join(ckdir, f"step_{step:07d}")
    return ck if os.path.isdir(ck) else None


def checkpoint_steps(out: str) -> list[int]:
    """The steps OUT has whole checkpoints of, in order."""
    ckdir = os.path.join(out, "checkpoints")
    names = os.listdir(ckdir) if os.path.isdir(ckdir) else []
    return sorted(int(n[5:]) for n in names if n.startswith("step_") and n[5:].isdigit())


def read_checkpoint(out: str, step: int | None = None, optimizer: bool = True) -> tuple[dict, dict, dict] | None:
    """(trainable state, optimiser blob or {}, state.json) of OUT's checkpoint at ``step``
    (None: the latest), or None."""
    from safetensors.torch import load_file

    ck = checkpoint_dir(out, step)
    if ck is None:
        return None
    with open(os.path.join(ck, "state.json")) as f:
        meta = json.load(f)
    blob = torch.load(os.path.join(ck, "optim.pt"), weights_only=True) if optimizer else {}
    return load_file(os.path.join(ck, "trainable.safetensors")), blob, meta


def append_metrics(path: str, row: dict) -> None:
    """One step's metrics as a line of ``metrics.jsonl``."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def truncate_metrics(path: str, step: int) -> None:
    """Drop the rows of steps after ``step`` from ``metrics.jsonl`` (a resumed run trains them
    again and logs them anew: each step is in the file once)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    _atomic_write(path, "".join(rows))


def _atomic_write(path: str, text: str) -> None:
    tmp = path + ".part"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def plot_losses(metrics_path: str, png: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if not os.path.exists(metrics_path):
        return
    rows = [json.loads(line) for line in open(metrics_path) if line.strip()]
    if not rows:
        return
    steps, loss = [r["step"] for r in rows], [r["loss"] for r in rows]
    eval_path = os.path.join(os.path.dirname(metrics_path), "eval.jsonl")
    evals = [json.loads(line) for line in open(eval_path) if line.strip()] if os.path.exists(eval_path) else []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, lw=0.8, alpha=0.45, label="step")
    k = max(1, len(rows) // 20)  # a packed step's loss depends on which samples it drew: show the trend too
    if k > 1:
        import numpy as np

        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, lw=1.8, label=f"mean of {k} steps")
    if evals:  # the held-out split (train/validate.py) on the same axes; accuracy on its own
        ax.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", lw=1.5, ms=3, label="held-out")
        acc = [(e["step"], e["eval_accuracy"]) for e in evals if "eval_accuracy" in e]
        if acc:
            ax2 = ax.twinx()
            ax2.plot(*zip(*acc), "s--", color="tab:green", lw=1.2, ms=3, label="held-out accuracy")
            ax2.set_ylabel("accuracy (generated answers)")
            ax2.set_ylim(0, 1)
            ax2.legend(loc="upper center", fontsize=8)
    if k > 1 or evals:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
