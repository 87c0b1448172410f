"""Loggers next to metrics.jsonl, switched in the recipe (``loggers: [tensorboard, wandb]``), rank 0 only.

- ``tensorboard``: event files in OUT/tensorboard (``torch.utils.tensorboard``; the ``tensorboard``
  package, extra ``log``): every number of a logged step as ``train/KEY``, the skip counts as
  ``skipped/REASON``, validation as ``eval/KEY``.
- ``wandb``: Weights & Biases in offline mode (OUT/wandb; ``wandb sync`` uploads it later), the same
  keys. Never online from here: a training run does not reach the network.
"""

from __future__ import annotations

import os


def _flat(metrics: dict, prefix: str) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if k == "step":
            continue
        if isinstance(v, dict):
            out.update({f"{k}/{r}": float(n) for r, n in v.items()})
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}/{k}"] = float(v)
    return out


class TensorBoardLogger:
    def __init__(self, out: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("loggers: tensorboard needs the tensorboard package (pip install 'kangaroo[log]')") from e
        self.writer = SummaryWriter(os.path.join(out, "tensorboard"))

    def log(self, step: int, metrics: dict, prefix: str = "train") -> None:
        for k, v in _flat(metrics, prefix).items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class WandbLogger:
    def __init__(self, out: str, recipe):
        try:
            import wandb
        except ImportError as e:
            raise ImportError("loggers: wandb needs the wandb package (pip install wandb)") from e
        self.run = wandb.init(project="kangaroo", name=recipe.name, dir=out, mode="offline", config=recipe.to_dict())

    def log(self, step: int, metrics: dict, prefix: str = "train") -> None:
        self.run.log(_flat(metrics, prefix), step=step)

    def close(self) -> None:
        self.run.finish()


class Loggers:
    """All the recipe's loggers as one (none on ranks other than 0)."""

    def __init__(self, loggers: list):
        self.loggers = loggers

    def log(self, step: int, metrics: dict, prefix: str = "train") -> None:
        for lg in self.loggers:
            lg.log(step, metrics, prefix)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()
        self.loggers = []


def make_loggers(recipe, out: str, rank: int = 0) -> Loggers:
    if rank != 0:
        return Loggers([])
    made = []
    for name in recipe.loggers:
        made.append(TensorBoardLogger(out) if name == "tensorboard" else WandbLogger(out, recipe))
    return Loggers(made)
