"""Validation during training: a held-out split's loss and, for QA data, generated-answer accuracy.

The split is the recipe's ``eval_data`` (sources like ``data``); its first ``eval_samples``
samples, taken in turn from each source in file order (no mixture weights, no shuffling: the same
samples at every validation), are encoded with the stage's sampling. ``eval_loss`` is the mean
loss over their answer tokens, one sample per forward (no packing). Of those, the first
``eval_generate`` QA samples (formats ``mcqa``: the letter read by ``extract_choice``; ``openqa``:
the normalised text equal to the answer) are answered by greedy generation through the one eval
core (``kangaroo.eval.core.answer``), giving ``eval_accuracy``. Samples that cannot be read are
skipped and counted (``eval_skipped``).

Under torch.distributed every rank takes part in the loss (samples dealt round-robin, every rank
running the same number of forwards, as FSDP needs); generation runs in a single process only (a
sharded model cannot generate on one rank alone), so ``eval_accuracy`` is left out there.
"""

from __future__ import annotations

import copy
import re

import torch
import torch.distributed as dist

from .data import Source, encode_sample, stage_sampling
from .distributed import media_pads
from .packing import pack_row, to_device

QA_FORMATS = ("mcqa", "openqa")


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


class Validator:
    def __init__(self, recipe, tokenizer, builder, config):
        self.recipe, self.tok, self.builder, self.config = recipe, tokenizer, builder, config
        sources = [Source(d) for d in recipe.eval_data]
        if not any(len(s) for s in sources):
            raise ValueError(f"recipe {recipe.name!r}: eval_data has no records")
        self.items: list[tuple[int, int]] = []  # (source, record), in turn from each source
        depth = 0
        while len(self.items) < recipe.eval_samples and depth < max(len(s) for s in sources):
            self.items += [(k, depth) for k, s in enumerate(sources) if depth < len(s)]
            depth += 1
        self.items = self.items[: recipe.eval_samples]
        self.sources = sources

    def _samples(self, picks):
        for k, i in picks:
            try:
                s = self.sources[k].sample(i)
                if s is None:
                    continue
                yield k, s, encode_sample(s, self.recipe, self.builder, self.config)
            except Exception:  # noqa: BLE001 - a held-out sample that cannot be read is counted, not fatal
                yield k, None, None

    @torch.no_grad()
    def run(self, net, model, device, step: int) -> dict:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        was_training = model.training
        model.eval()
        mine = self.items[rank::world]
        n_fwd = -(-len(self.items) // world)  # every rank runs as many forwards
        sums = torch.zeros(3, dtype=torch.float64)  # loss sum, answer tokens, skipped
        done = 0
        for _, s, enc in self._samples(mine):
            if enc is None:
                sums[2] += 1
                continue
            loss, n = self._loss(net, model, device, enc)
            sums[0] += loss
            sums[1] += n
            done += 1
        if world > 1 and done < n_fwd:  # padding forwards (not counted) so that FSDP ranks stay in step
            blank = next((e for _, _, e in self._samples(self.items) if e is not None), None)
            for _ in range(n_fwd - done if blank is not None else 0):
                self._loss(net, model, device, blank)
        if world > 1:
            dist.all_reduce(sums)
        out = {"step": step, "eval_loss": float(sums[0] / max(1.0, float(sums[1]))),
               "eval_samples": int(len(self.items) - sums[2]), "eval_skipped": int(sums[2])}
        if world == 1 and self.recipe.eval_generate:
            out.update(self.accuracy(model))
        if was_training:
            model.train()
        return out

    def _loss(self, net, model, device, enc) -> tuple[float, int]:
        row = pack_row([enc])
        pad = 0
        if self.recipe.shard_vision == "blocks" and dist.is_available() and dist.is_initialized():
            pad = media_pads(model, [row], device)[0]  # every rank calls the tower as often (distributed.py)
        row = to_device(row, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.recipe.bf16):
            out = net(**row, media_pad=pad)
        n = int((row["labels"][:, 1:] != -100).sum())
        return float(out["loss_sum"]), n

    def accuracy(self, model) -> dict:
        """Greedy answers to the first ``eval_generate`` QA samples, read by the eval core."""
        from ..eval import core
        from ..model.chat import KangarooChat
        from ..video.preprocess import PreprocessConfig

        qa = [(k, i) for k, i in self.items if self.sources[k].src.format in QA_FORMATS][: self.recipe.eval_generate]
        if not qa:
            return {}
        gen_cfg = copy.deepcopy(model.generation_config)  # KangarooChat sets its stop tokens: put it back after
        kc = KangarooChat(model, self.tok, preprocess=PreprocessConfig(size=self.recipe.image_size),
                          sampling=stage_sampling(self.recipe), encoder_cache_mb=0)
        right = n = 0
        for k, i in qa:
            try:
                rec = self.sources[k].records[i]
                rows = kc.encode(self.sources[k].sample(i).media)[0]
            except Exception:  # noqa: BLE001 - counted in eval_skipped by the loss pass
                continue
            if self.sources[k].src.format == "mcqa":
                q = core.Question(rec["question"], list(rec["candidates"]))
                ok = core.answer(kc, rows, [q], "generate")[0]["pred"] == int(rec["answer_index"])
            else:
                got = core.answer(kc, rows, [core.Question(rec["question"])], "generate")[0]["output"]
                ok = _norm(got) == _norm(rec["answer"])
            right += int(ok)
            n += 1
        model.generation_config = gen_cfg
        return {"eval_accuracy": right / n, "eval_answered": n} if n else {}
