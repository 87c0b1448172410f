"""Curriculum training: recipes, data, packing, the trainer."""

from .packing import greedy_rows, pack_row, pad_batch
from .recipe import DataSource, LoraConfig, Recipe
from .trainer import Trainer, distributed_session, export_checkpoint, make_trainer, run_curriculum

__all__ = ["greedy_rows", "pack_row", "pad_batch", "DataSource", "LoraConfig", "Recipe", "Trainer", "distributed_session", "export_checkpoint", "make_trainer", "run_curriculum"]
