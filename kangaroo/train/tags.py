"""Vision pre-training on caption tags, for a vision tower trained from scratch.

The paper starts from EVA02-CLIP, a tower already pre-trained on billions of image-text
pairs; a small tower trained from scratch (kangaroo-smol's) has no such start, and
learning to see only through the gradient of a frozen LLM's answer loss is slow: after
the language-model stages its features were no better than a random tower's under a
linear probe (docs/kangaroo-smol.md). This stage (``objective: tags``) does the tower's pre-training
the cheap way CatLIP does (Mehta et al., 2024): multi-label classification of the words
and word pairs of each image's caption ("red", "circle", "red circle"), with a linear
head on the pooled patch features. No LLM runs, so one step costs a few milliseconds
per image; the head is thrown away and the tower goes on to the next stage.

Data: the image-text records (``llava`` records with an ``image``, ``manifest`` image
rows) of the recipe's mixture; the caption is the assistant's text.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..video.preprocess import PreprocessConfig, preprocess_frames
from .data import to_samples
from .loop import read_checkpoint, run_steps, write_checkpoint
from .recipe import Recipe

STOP = frozenset("a an the and or of in on at to is are with its it this that there some one two nothing "
                 "picture image video scene".split())


def caption_terms(text: str) -> list[str]:
    """Content words and adjacent content-word pairs: 'A red circle.' -> [red, circle, red circle]."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    terms = [w for w in words if w not in STOP]
    pairs = [f"{a} {b}" for a, b in zip(words, words[1:]) if a not in STOP and b not in STOP]
    return list(dict.fromkeys(terms + pairs))


def build_vocab(captions: list[str], min_count: int = 3, max_terms: int = 4096) -> list[str]:
    """The tags: terms in at least ``min_count`` captions, most frequent first."""
    c = Counter(t for cap in captions for t in set(caption_terms(cap)))
    return [t for t, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count][:max_terms]


class TagHead(nn.Module):
    """Tower features [N, gh, gw, C] -> tag logits [N, V] from mean- and max-pooled patches.
    Max pooling rewards local detectors: the patch tokens the LLM will read must carry the
    evidence, not only a global summary."""

    def __init__(self, width: int, n_tags: int):
        super().__init__()
        self.norm = nn.LayerNorm(2 * width)
        self.fc = nn.Linear(2 * width, n_tags)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([feats.mean((1, 2)), feats.amax((1, 2))], dim=-1)  # [N, 2C]
        return self.fc(self.norm(pooled))


def _image_samples(recipe: Recipe):
    out = []
    for src in recipe.data:
        for s in to_samples(src):
            if s.is_image and s.media:
                cap = " ".join(m["content"] for m in s.messages if m["role"] == "assistant")
                out.append((s.media, cap))
    if not out:
        raise ValueError(f"recipe {recipe.name!r} (objective tags) has no image-caption records")
    return out


class Images:
    """The stage's images as uint8 [size, size, 3], decoded and resized once and kept in memory
    (3 * size**2 bytes each: 37 KB at 112 px) while they fit in ``cache_mb``; a larger set is
    decoded per step from its files instead (the same pixels, slower)."""

    def __init__(self, paths: list[str], size: int, cache_mb: int, progress: bool):
        self.paths, self.size = paths, size
        self.cached = len(paths) * 3 * size * size <= cache_mb * 2**20
        self.arr = None
        if self.cached:
            self.arr = np.empty((len(paths), size, size, 3), dtype=np.uint8)
            for i, p in enumerate(tqdm(paths, desc="images", unit="img", disable=not progress)):
                self.arr[i] = self._read(p)

    def _read(self, path: str) -> np.ndarray:
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((self.size, self.size), Image.BICUBIC))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx) -> np.ndarray:
        """uint8 [len(idx), size, size, 3]."""
        if self.cached:
            return self.arr[np.asarray(idx)]
        return np.stack([self._read(self.paths[i]) for i in np.asarray(idx)])


class TagTrainer:
    """Same interface as ``Trainer`` (train(resume), checkpoints, export); one process."""

    def __init__(self, recipe: Recipe, out: str, previous: str | None = None, progress: bool = True):
        from .trainer import build_model, set_trainable

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("objective 'tags' runs in one process (it trains only the small tower)")
        if not set(recipe.train) <= {"vision"}:
            raise ValueError(f"objective 'tags' trains only the vision tower, not {sorted(set(recipe.train) - {'vision'})}")
        self.recipe, self.out, self.progress, self.previous = recipe, out, progress, previous
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(recipe.seed)
        self.model, self.tok, self.base_llm = build_model(recipe, previous)
        set_trainable(self.model, recipe)
        samples = _image_samples(recipe)
        self.vocab = build_vocab([c for _, c in samples])
        index = {t: i for i, t in enumerate(self.vocab)}
        self.targets = torch.zeros(len(samples), len(self.vocab))
        for i, (_, cap) in enumerate(samples):
            for t in caption_terms(cap):
                if t in index:
                    self.targets[i, index[t]] = 1.0
        self.images = Images([p for p, _ in samples], recipe.image_size, recipe.image_cache_mb, progress)
        self.pre = PreprocessConfig(size=recipe.image_size, patch=self.model.config.vision.patch_size)
        self.head = TagHead(self.model.config.vision.width, len(self.vocab))
        self.model.to(self.device)
        self.head.to(self.device)
        tower = [p for p in self.model.parameters() if p.requires_grad]
        self.params = tower + list(self.head.parameters())
        # the new head at ``lr``; the tower at ``vision_lr`` when set (a tower that already sees, met by a
        # head that starts from random, wants a smaller rate so the head's first steps do not undo it)
        self.opt = torch.optim.AdamW([{"params": tower, "lr": recipe.vision_lr or recipe.lr},
                                      {"params": list(self.head.parameters()), "lr": recipe.lr}],
                                     weight_decay=recipe.weight_decay, betas=(0.9, 0.95))
        from .trainer import lr_lambda

        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(recipe))
        self.step = 0
        os.makedirs(out, exist_ok=True)
        recipe.save(os.path.join(out, "recipe.yaml"))
        with open(os.path.join(out, "tags.json"), "w") as f:
            json.dump(self.vocab, f, indent=0)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's images (deterministic in (seed, step), so resuming replays it) and targets."""
        rng = np.random.default_rng([self.recipe.seed, step])
        idx = torch.from_numpy(rng.choice(len(self.images), size=min(self.recipe.batch_size, len(self.images)),
                                          replace=False))
        x = preprocess_frames(self.images[idx.numpy()], self.pre)
        flip = torch.from_numpy(rng.random(len(idx)) < 0.5)  # a mirrored caption is the same caption
        x[flip] = x[flip].flip(-1)
        return x, self.targets[idx]

    def train(self, resume: bool = False, stop_at: int | None = None) -> dict:
        if resume:
            self.load_checkpoint()
        self.model.vision_tower.train()
        return run_steps(self, self._step, lambda m: {"loss": f"{m['loss']:.4f}", "exact": f"{m['exact_match']:.2f}",
                                                      "img_s": f"{m['img_s']:.0f}"},
                         f"{self.recipe.name} (tag BCE)", stop_at)

    def _step(self) -> dict:
        r = self.recipe
        t0 = time.perf_counter()
        x, y = self.batch(self.step)
        x, y = x.to(self.device), y.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=r.bf16):
            logits = self.head(self.model.vision_tower(x)).float()
        loss = F.binary_cross_entropy_with_logits(logits, y)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, r.grad_clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        dt = time.perf_counter() - t0
        exact = float(((logits > 0) == (y > 0.5)).all(-1).float().mean())
        return {"step": self.step, "loss": loss.item(), "lr": self.sched.get_last_lr()[0], "grad_norm": float(gnorm),
                "exact_match": exact, "img_s": len(x) / dt}

    # ---- checkpoints: the layout of Trainer's --------------------------------------------
    def _state(self) -> dict:
        s = {k: v.detach().cpu().clone() for k, v in self.model.named_parameters() if v.requires_grad}
        s.update({f"tag_head.{k}": v.detach().cpu().clone() for k, v in self.head.state_dict().items()})
        return s

    def save_checkpoint(self) -> None:
        write_checkpoint(self.out, self.step, self._state(),
                         {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()},
                         {"step": self.step, "world": 1})

    def load_checkpoint(self) -> bool:
        ck = read_checkpoint(self.out)
        if ck is None:
            return False
        state, blob, meta = ck
        params = dict(self.model.named_parameters())
        self.head.load_state_dict({k[len("tag_head."):]: v for k, v in state.items() if k.startswith("tag_head.")})
        with torch.no_grad():
            for k, v in state.items():
                if not k.startswith("tag_head."):
                    params[k].copy_(v)
        self.opt.load_state_dict(blob["optimizer"])
        self.sched.load_state_dict(blob["scheduler"])
        self.step = meta["step"]
        return True

    def export(self, path: str) -> str:
        from .trainer import export_model

        return export_model(self.model, self.tok, self.recipe, self.base_llm, path)
