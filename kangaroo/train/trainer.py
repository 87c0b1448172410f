"""The curriculum trainer: packed rows, accumulation, bf16, checkpointing, exact resume, FSDP.

One optimiser step = ``global_rows`` packed rows of one global row order (train/stream.py),
dealt to the processes, each accumulating its share; the loss is the mean over every labelled
token of the step (rows and processes together), so packing, accumulation and the world size
change nothing but speed. The rows are a deterministic function of (seed, row index), and a
checkpoint stores the trainable weights, the optimiser, the schedule, the data position and every
rank's RNG states: ``--resume`` continues exactly, and on another number of processes. Samples
that cannot be read are skipped and counted.

Under ``torchrun`` (WORLD_SIZE > 1) the model is sharded with FSDP2 (distributed.py),
checkpoints are sharded (checkpoint.py); the gloo backend runs it on CPU. Throughput metrics: metrics.py.
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager

import torch
import torch.distributed as dist

from ..model.tokens import ensure_media_tokens
from ..prompts import ChatRenderer
from ..model.modeling import KangarooForConditionalGeneration
from .data import Mixture, frames_fit_warning
from .loader import SampleLoader, auto_workers
from . import checkpoint as ckpt
from .distributed import all_reduce, init_distributed, media_pads, shard_model, world_info
from .loop import checkpoint_dir, checkpoint_steps, read_checkpoint, run_steps, truncate_metrics
from .metrics import StepFlops, bf16_warning, device_peak_flops, peak_memory_gib, reset_peak, step_metrics
from .packing import pack_row, to_device
from .recipe import Recipe
from .stream import RowStream

SMOL_BASE = "smollm2-135m-instruct"


def module_map(model: KangarooForConditionalGeneration) -> dict:
    return {"vision": model.vision_tower, "temporal": model.temporal_embed, "patchify": model.patchify,
            "projector": model.mm_projector, "llm": model.language_model}


def build_model(recipe: Recipe, previous: str | None = None):
    """(model, tokenizer, base_llm) for the recipe's ``init``."""
    from ..model.weights import build_smol, load_model

    init = previous if recipe.init == "previous" else recipe.init
    if init is None:
        raise ValueError(f"recipe {recipe.name!r} starts from 'previous' but there is no previous stage")
    if init == "smol":
        model, tok = build_smol(tpe=recipe.tpe or "sincos", seed=recipe.seed)
        base = SMOL_BASE
    else:
        init = resolve_8b(init)
        from ..model.hub import resolve_model_path
        from ..model.weights import META

        # LoRA adapters of the init stay adapters unless this stage trains the whole LLM (then merged first)
        model, tok = load_model(init, merge_lora="llm" in recipe.train)
        if recipe.tpe is not None:
            model.switch_tpe(recipe.tpe)
        base = SMOL_BASE if os.path.exists(os.path.join(resolve_model_path(init), META)) else None
    if recipe.time_labels is not None:  # a fresh or loaded model alike
        model.set_time_labels(tok if recipe.time_labels else None)
    if recipe.frames_per_slot is not None:
        model.set_frames_per_slot(recipe.frames_per_slot)
    from ..model.processing import KangarooProcessor

    KangarooProcessor.from_config(model.config, tok)  # the placeholders: in the tokenizer and the config
    return model, tok, base


def resolve_8b(init: str) -> str:
    """``init: 8b`` is the folder in $KANGAROO_INIT: ``kangaroo assemble`` output (EVA02-CLIP-L +
    Llama-3-8B-Instruct, new parts at their stage-1 init) or ``kangaroo convert`` output. Never a
    random model: unset, or not a model folder, is an error that says how to make one."""
    if init != "8b":
        return init
    path = os.environ.get("KANGAROO_INIT")
    how = ("make one with `kangaroo assemble --vision EVA02_CLIP_L_psz14_s4B.pt --llm Meta-Llama-3-8B-Instruct "
           "--out DIR` (or `kangaroo convert`) and set KANGAROO_INIT=DIR (docs/8b.md)")
    if not path:
        raise ValueError(f"init: 8b needs the model folder in $KANGAROO_INIT, which is not set: {how}")
    if not os.path.exists(os.path.join(path, "config.json")):
        raise ValueError(f"init: 8b: KANGAROO_INIT={path} is not a model folder (no config.json): {how}")
    return path


def set_trainable(model, recipe: Recipe) -> None:
    lora = recipe.lora and (recipe.lora.r, recipe.lora.alpha, recipe.lora.dropout, recipe.lora.targets)
    freeze_except(model, recipe.train, lora, recipe.gradient_checkpointing)


def freeze_except(model, train: list[str], lora: tuple | None, checkpointing: bool) -> None:
    """Freeze every parameter but those of the parts named in ``train`` (``module_map``'s names,
    "markers", "lora": adapters ``lora = (r, alpha, dropout, targets)`` added first if missing)."""
    from ..model.weights import apply_lora

    model.requires_grad_(False)
    if "lora" in train and not hasattr(model.language_model, "peft_config"):
        apply_lora(model, lora[0], lora[1], lora[2], list(lora[3]))
    mods = module_map(model)
    for name in train:
        if name == "markers":
            model.markers.requires_grad_(True)
        elif name == "lora":
            for n, p in model.language_model.named_parameters():
                p.requires_grad_("lora_" in n)
        else:
            mods[name].requires_grad_(True)
    if checkpointing:
        model.gradient_checkpointing_enable()


def load_trainable(model, state: dict) -> None:
    """Copy a checkpoint's trainable parameters into ``model`` (set up by ``set_trainable``)."""
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(f"the checkpoint does not match the recipe's trainable parameters (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}): another recipe, or another init model?")
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)


def lr_lambda(recipe: Recipe):
    def f(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        prog = (step - recipe.warmup_steps) / max(1, recipe.max_steps - recipe.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, prog)))

    return f


class Trainer:
    def __init__(self, recipe: Recipe, out: str, previous: str | None = None, progress: bool = True):
        self.recipe, self.out, self.progress, self.previous = recipe, out, progress, previous
        self.rank, self.world, _ = world_info()
        self.device = init_distributed(self.world)
        if self.rank == 0 and (w := bf16_warning(self.device, recipe.bf16)):
            print(w, file=sys.stderr)
        torch.manual_seed(recipe.seed)
        self.model, self.tok, self.base_llm = build_model(recipe, previous)
        set_trainable(self.model, recipe)
        self.model.to(self.device).train()
        self.flops = StepFlops(self.model)
        self.peak_flops = device_peak_flops(self.device)
        self.builder = ChatRenderer(self.tok, ensure_media_tokens(self.tok))
        self.mixture = Mixture(recipe)
        if self.rank == 0 and recipe.objective == "lm" and (w := frames_fit_warning(recipe, self.model.config)):
            print(w, file=sys.stderr)
        self.loader = SampleLoader(recipe, self.mixture, self.tok, self.model.config,
                                   workers=auto_workers(recipe.data_workers, self.device.type == "cuda"))
        self.stream = self._make_stream()
        self.net = shard_model(self.model, recipe.bf16, recipe.shard_vision) if self.world > 1 else self.model
        self.pad_media = self.world > 1 and recipe.shard_vision == "blocks"  # equal tower calls on every rank
        llm_ids = {id(p) for p in self.model.language_model.parameters()}
        vis_ids = {id(p) for p in self.model.vision_tower.parameters()}
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trainable if id(p) not in llm_ids and id(p) not in vis_ids], "lr": recipe.lr},
                  {"params": [p for p in trainable if id(p) in vis_ids], "lr": recipe.vision_lr or recipe.lr},
                  {"params": [p for p in trainable if id(p) in llm_ids], "lr": recipe.llm_lr or recipe.lr}]
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise ValueError(f"recipe {recipe.name!r} trains nothing")
        self.opt = torch.optim.AdamW(groups, weight_decay=recipe.weight_decay, betas=(0.9, 0.95))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(recipe))
        self.step = 0
        os.makedirs(out, exist_ok=True)
        if self.rank == 0:
            recipe.save(os.path.join(out, "recipe.yaml"))
        self.validator = self._make_validator()
        self.loggers = self._make_loggers()

    # ---- data, validation, loggers (train/stream.py, train/validate.py, train/loggers.py) -------
    def _make_stream(self) -> RowStream:
        cfg = self.model.config
        media = {i for i in (cfg.video_token_id, cfg.image_token_id) if i is not None}
        return RowStream(self.loader, self.recipe, media, rank=self.rank, world=self.world)

    def _make_validator(self):
        if not self.recipe.eval_data:
            return None
        from .validate import Validator

        return Validator(self.recipe, self.tok, self.builder, self.model.config)

    def _make_loggers(self):
        from .loggers import make_loggers

        return make_loggers(self.recipe, self.out, rank=self.rank)

    def validate(self) -> dict:
        """The held-out split's metrics (every rank takes part under FSDP; {} without eval_data)."""
        if self.validator is None:
            return {}
        return self.validator.run(self.net, self.model, self.device, self.step)

    def data_state(self) -> dict:
        """The global data position (collective: every rank calls it), JSON-able; saved with every
        rank's checkpoint shard."""
        return self.stream.state_dict()

    def load_data_state(self, states: list[dict]) -> None:
        """Continue from a checkpoint's data position. The position is global (one row order for every
        world size, train/stream.py), so any rank's copy serves, on any number of processes."""
        self.stream.load_state_dict(states[0])

    # ---- loop ---------------------------------------------------------------------------
    def train(self, resume: bool = False, stop_at: int | None = None) -> dict:
        """Run to ``max_steps``; ``stop_at`` stops early after that step, as an interruption would."""
        try:
            return self._train(resume, stop_at)
        finally:
            self.loader.close()  # later calls encode in-process
            self.loggers.close()

    def _train(self, resume: bool, stop_at: int | None) -> dict:
        if resume:
            self.load_checkpoint()
        return run_steps(self, self._step, postfix, self.recipe.name, stop_at, rank=self.rank)

    def _step(self) -> dict:
        """One optimiser step over ``rows_per_step`` packed rows; returns its metrics."""
        r = self.recipe
        reset_peak(self.device)
        t0 = time.perf_counter()
        rows = [(pack_row(samples), len(samples)) for samples, _ in self.stream.next_rows()]
        n_tok = sum(int((row["labels"][:, 1:] != -100).sum()) for row, _ in rows)
        # the loss is the sum over every labelled token of the step, on every rank, over their count:
        # each rank backpropagates its sum / total * world and FSDP averages over the world
        total = max(1.0, all_reduce([n_tok], self.device)[0])
        pads = media_pads(self.model, [row for row, _ in rows], self.device) if self.pad_media else [0] * len(rows)
        loss_sum, tokens, flops = 0.0, 0, 0.0
        for (row, _), pad in zip(rows, pads):
            flops += self.flops.row(row)
            row = to_device(row, self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=r.bf16):
                out = self.net(**row, media_pad=pad)  # blank media: every rank calls the tower as often
                loss = out["loss_sum"]
                if self.world > 1 and not row["videos"] and not self.pad_media:
                    loss = loss + self.model.dummy_visual_loss()  # every rank must give every parameter a gradient
            (loss * self.world / total).backward()
            loss_sum += float(out["loss_sum"].detach())
            tokens += row["input_ids"].numel()
        gnorm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], r.grad_clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        dt = time.perf_counter() - t0
        loss_all, tok_all, flops_all, pad_all = all_reduce([loss_sum, tokens, flops, sum(pads)], self.device)
        mem = peak_memory_gib(self.device)
        if mem is not None:
            mem = all_reduce([mem], self.device, op="max")[0]
        data = self.stream.totals()
        self.stream.check(data)
        return {"step": self.step, "loss": loss_all / total, "lr": self.sched.get_last_lr()[0],
                "grad_norm": float(gnorm), "tokens": tokens, "tok_s": tokens / dt,
                **step_metrics(flops_all, tok_all, dt, self.world, self.peak_flops, mem),
                "samples": sum(n for _, n in rows), "row": self.stream.row,
                "samples_tried": data["tried"], "skipped": data["skipped"],
                **({"vision_pad_calls": int(pad_all)} if self.pad_media else {})}

    # ---- checkpoints ------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Collective: every rank writes its own shards (kangaroo/train/checkpoint.py)."""
        ckpt.save(os.path.join(self.out, "checkpoints"), self.step, self.model, self.opt, self.sched,
                  self.data_state(), self.rank, self.world)

    def load_checkpoint(self) -> bool:
        ck = checkpoint_dir(self.out)
        if ck is None:
            return False
        meta = ckpt.read_meta(ck)
        if meta["format"] == 1:
            self._load_format1()
        else:
            _, data = ckpt.load(ck, self.model, self.opt, self.sched, self.rank, self.world)
            self.load_data_state(data)
        self.step = meta["step"]
        if self.rank == 0:  # the steps after the checkpoint are trained again: log each step once
            truncate_metrics(os.path.join(self.out, "metrics.jsonl"), self.step)
        return True

    def _load_format1(self) -> None:
        """A checkpoint from before sharded checkpoints: whole trainable state + optimiser on rank 0."""
        state, blob, st = read_checkpoint(self.out)
        if st["world"] != self.world:
            raise ValueError(f"this checkpoint (the old, unsharded format) was written with {st['world']} processes "
                             f"and can only resume with as many (now {self.world}); checkpoints written by this "
                             "version resume on any number")
        if "data" not in st:
            raise ValueError(f"{self.out}: this checkpoint (the old, unsharded format) has no data position "
                             "in the global row order (it was written before it); export it with "
                             "`kangaroo export` and start a new run from the exported model")
        if self.world > 1:
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                                 set_optimizer_state_dict)

            opts = StateDictOptions(full_state_dict=True, strict=False)
            set_model_state_dict(self.model, state, options=opts)
            set_optimizer_state_dict(self.model, self.opt, blob["optimizer"], options=opts)
        else:
            load_trainable(self.model, state)
            self.opt.load_state_dict(blob["optimizer"])
        self.sched.load_state_dict(blob["scheduler"])
        torch.set_rng_state(blob["torch_rng"])
        self.stream.load_state_dict(st["data"])

    def export(self, path: str) -> str | None:
        """Save the trained model. Under FSDP nothing is gathered: rank 0 alone reads the last
        checkpoint (written by every rank, just before) into a plain copy of the model and saves that."""
        if self.world == 1:
            return export_model(self.model, self.tok, self.recipe, self.base_llm, path)
        if self.rank != 0:
            return None
        model, _, _ = build_model(self.recipe, self.previous)
        set_trainable(model, self.recipe)
        ckpt.load_model_only(checkpoint_dir(self.out), model)
        return export_model(model, self.tok, self.recipe, self.base_llm, path)


def postfix(m: dict) -> dict:
    """The progress bar's view of a step's metrics."""
    out = {"loss": f"{m['loss']:.3f}", "tok_s/gpu": f"{m['tok_s_per_gpu']:.0f}"}
    if "mfu" in m:
        out["mfu"] = f"{m['mfu']:.1%}"
    if "peak_mem_gib" in m:
        out["mem"] = f"{m['peak_mem_gib']:.1f}G"
    return out


def export_model(model, tok, recipe: Recipe, base_llm: str | None, path: str) -> str:
    """Save a trained model: compact (base LLM by name + LoRA adapters) unless the LLM trained in full."""
    from ..model.weights import save_model

    lora = None
    if hasattr(model.language_model, "peft_config"):  # adapters trained here, or carried from the init
        lc = model.language_model.peft_config["default"]
        lora = {"r": lc.r, "alpha": lc.lora_alpha, "dropout": lc.lora_dropout, "targets": sorted(lc.target_modules)}
    full_llm = "llm" in recipe.train
    return save_model(model, tok, path, base_llm=None if full_llm else base_llm, lora=None if full_llm else lora)


def export_checkpoint(run: str, path: str, step: int | None = None, previous: str | None = None) -> dict:
    """Export a run's checkpoint (the latest, or the one at ``step``) as a model folder, the way
    the run exports its last step: to evaluate a run while it trains, or an earlier step of it.
    The run's ``recipe.yaml`` rebuilds the model; ``previous`` is the model folder its ``init:
    previous`` started from (``kangaroo train --init-from``)."""
    recipe = Recipe.load(os.path.join(run, "recipe.yaml"))
    if recipe.objective != "lm":
        raise ValueError(f"{run}: only language-model stages export checkpoints (this one's objective is {recipe.objective!r})")
    ck = checkpoint_dir(run, step)
    if ck is None:
        have = checkpoint_steps(run)
        raise FileNotFoundError(f"{run}: no checkpoint at step {step}; it has steps {have}" if step is not None
                                else f"{run}: no checkpoints")
    meta = ckpt.read_meta(ck)
    model, tok, base = build_model(recipe, previous)
    set_trainable(model, recipe)
    if meta["format"] == 1:
        load_trainable(model, read_checkpoint(run, step, optimizer=False)[0])
    else:  # shards of any number of ranks, read in this one process
        ckpt.load_model_only(ck, model)
    export_model(model, tok, recipe, base, path)
    return {"run": run, "step": meta["step"], "out": path}


def run_curriculum(recipes: list[Recipe], out: str, resume: bool = False, progress: bool = True,
                   reuse: int = 0) -> list[dict]:
    """Run stages in order; each starts from the previous stage's exported model.

    The first ``reuse`` stages are taken as finished in ``out`` (copied there from a run
    that shares them, as ablation variants do)."""
    results, previous = [], None
    for i, r in enumerate(recipes):
        stage_out = os.path.join(out, f"{i + 1}_{r.name}")
        done = os.path.join(stage_out, "model", "config.json")
        if (resume or i < reuse) and os.path.exists(done):
            previous = os.path.join(stage_out, "model")
            results.append({"stage": r.name, "skipped": "already finished"})
            continue
        t = make_trainer(r, stage_out, previous=previous, progress=progress)
        results.append({"stage": r.name, **t.train(resume=resume)})
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # rank 0 exports the stage's model; no rank may start the next stage before
        previous = os.path.join(stage_out, "model")
    return results


@contextmanager
def distributed_session():
    """Wrap a training command. Under ``torchrun``, on the way out: wait for every rank (rank 0
    exports alone while the others have finished; no wait after an error, which would hang the
    others) and tear the process group down, so that no rank exits with the backend's threads
    still running (gloo aborts the process then). Nothing to do in one process."""
    ok = False
    try:
        yield
        ok = True
    finally:
        if dist.is_available() and dist.is_initialized():
            if ok:
                dist.barrier()
            dist.destroy_process_group()


def make_trainer(recipe: Recipe, out: str, previous: str | None = None, progress: bool = True):
    """The trainer for the recipe's objective: ``Trainer`` (lm) or ``TagTrainer`` (tags)."""
    if recipe.objective == "tags":
        from .tags import TagTrainer

        return TagTrainer(recipe, out, previous=previous, progress=progress)
    return Trainer(recipe, out, previous=previous, progress=progress)
