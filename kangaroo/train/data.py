"""Training data: read what users already have, tokenize with loss on assistant tokens only.

Formats (``DataSource.format``):
    llava     [{"video"|"image": path, "conversations": [{"from": "human"|"gpt", "value": ...}]}]
              (JSON list or JSONL); "<video>"/"<image>" marks where the media goes
    mcqa      kangaroo synth / benchmark-style multiple choice -> one round, answer = the letter
    mcqa_fact the same records as text only, the answer stated before the question ("Fact: ..."):
              cheap practice at naming the letter of an option the model already knows
    openqa    {"video", "question", "answer"} -> one round
    captions  {"video", "caption"} -> "Describe the video." -> caption
    manifest  the curation manifest (JSONL): {"clip"|"video", "caption"} -> a caption sample

A ``Sample`` is media + messages; ``encode_sample`` decodes the frames with the
stage's dynamic sampler, preprocesses them and tokenizes the conversation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..prompts import IGNORE_INDEX as IGNORE
from ..prompts import LETTERS, ChatRenderer, mc_prompt
from ..video import DecodeOptions, SamplingConfig, load_video
from ..video.preprocess import PreprocessConfig, preprocess_frames
from .recipe import DataSource, Recipe

_ROLE = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass
class Sample:
    media: str | None  # a video or image path
    is_image: bool
    messages: list[dict]  # [{"role", "content", "video"?}]
    span: tuple[float, float] | None = None  # a clip of the video: [start, end) seconds
    mc: tuple[str, list[str], int] | None = None  # multiple choice: (question, candidates, answer index)
    reply: str = "letter"  # multiple choice: the reply style (DataSource.reply)


def mc_reply(candidates: list[str], answer: int, reply: str = "letter") -> str:
    """The reply to a multiple-choice round: "B", or "red circle (B)" for ``reply="text_letter"``."""
    return LETTERS[answer] if reply == "letter" else f"{candidates[answer]} ({LETTERS[answer]})"


def mc_messages(question: str, candidates: list[str], answer: int, video: bool, reply: str = "letter") -> list[dict]:
    """One multiple-choice round: the benchmark-style prompt, the reply naming the answer's letter."""
    return [{"role": "user", "content": mc_prompt(question, candidates), "video": video},
            {"role": "assistant", "content": mc_reply(candidates, answer, reply)}]


def shuffled(sample: Sample, rng) -> Sample:
    """A multiple-choice sample with its options in a fresh order drawn from ``rng``."""
    q, cands, ans = sample.mc
    order = [int(i) for i in rng.permutation(len(cands))]
    new = [cands[i] for i in order]
    return Sample(sample.media, sample.is_image,
                  mc_messages(q, new, order.index(ans), sample.media is not None, sample.reply),
                  sample.span, (q, new, order.index(ans)), sample.reply)


def read_records(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = text.strip()
    if not text:
        return []
    if text[0] == "[":
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _abs(root: str, p: str | None) -> str | None:
    return None if p is None else (p if os.path.isabs(p) else os.path.join(root, p))


def to_samples(src: DataSource) -> list[Sample]:
    root = src.root or os.path.dirname(os.path.abspath(src.path))
    out = []
    records = read_records(src.path)
    if src.families is not None:
        records = [r for r in records if r.get("family") in src.families]
        if not records:
            raise ValueError(f"{src.path}: no records of the families {src.families}")
    for r in records:
        if src.format == "llava":
            media = r.get("video") or r.get("image")
            msgs = []
            for turn in r["conversations"]:
                text = turn["value"]
                has = "<video>" in text or "<image>" in text
                text = text.replace("<video>", "").replace("<image>", "").strip()
                msgs.append({"role": _ROLE[turn["from"]], "content": text, "video": has})
            if media and not any(m.get("video") for m in msgs):
                next(m for m in msgs if m["role"] == "user")["video"] = True
            out.append(Sample(_abs(root, media), "image" in r and "video" not in r, msgs))
        elif src.format == "mcqa":
            mc = (r["question"], list(r["candidates"]), int(r["answer_index"]))
            out.append(Sample(_abs(root, r["video"]), False, mc_messages(*mc, video=True, reply=src.reply), mc=mc,
                              reply=src.reply))
        elif src.format == "mcqa_fact":  # text only: the answer is stated, the letter must be found
            mc = (f"Fact: {r['answer']}.\n{r['question']}", list(r["candidates"]), int(r["answer_index"]))
            out.append(Sample(None, False, mc_messages(*mc, video=False, reply=src.reply), mc=mc, reply=src.reply))
        elif src.format == "openqa":
            out.append(Sample(_abs(root, r["video"]), False, [
                {"role": "user", "content": r["question"], "video": True},
                {"role": "assistant", "content": r["answer"]}]))
        elif src.format == "manifest":  # kangaroo curate: clips (video + start/end) and images
            if not r.get("caption"):
                continue  # a filter-only curation row has no caption to learn
            image = r.get("kind") == "image" or ("image" in r and "video" not in r)
            span = (float(r["start"]), float(r["end"])) if not image and r.get("end") is not None else None
            prompt = "Describe the image." if image else "Describe the video."
            out.append(Sample(_abs(root, r.get("image") if image else (r.get("video") or r.get("clip"))), image, [
                {"role": "user", "content": prompt, "video": True},
                {"role": "assistant", "content": r["caption"]}], span))
        else:  # captions
            out.append(Sample(_abs(root, r.get("video") or r.get("clip")), False, [
                {"role": "user", "content": "Describe the video.", "video": True},
                {"role": "assistant", "content": r["caption"]}]))
    return out


def tokenize(renderer: ChatRenderer, messages: list[dict], n_visual: int) -> tuple[list[int], list[int]]:
    """(ids, labels): labels are the ids on assistant turns (their end token included), else IGNORE;
    the medium (if any) is a run of ``n_visual`` placeholder ids."""
    return renderer.labelled(messages, [n_visual] if n_visual else [])


def stage_sampling(recipe: Recipe, span: tuple[float, float] | None = None) -> SamplingConfig:
    start, end = span if span is not None else (None, None)
    return SamplingConfig(sampler="dynamic", min_frames=recipe.min_frames, max_frames=recipe.max_frames,
                          seconds_per_frame=recipe.seconds_per_frame, start=start, end=end)


@dataclass
class Encoded:
    ids: list[int]  # the sample's medium is a run of its placeholder id
    labels: list[int]
    pixels: torch.Tensor | None  # [T, 3, H, W]
    timestamps: torch.Tensor | None  # [T]

    def __len__(self) -> int:
        return len(self.ids)


def load_media(sample: Sample, recipe: Recipe, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    pre = PreprocessConfig(size=recipe.image_size, patch=patch)
    if sample.is_image:
        from PIL import Image

        with Image.open(sample.media) as im:
            frames = np.asarray(im.convert("RGB"))[None]
        return preprocess_frames(frames, pre), torch.zeros(1)
    f = load_video(sample.media, stage_sampling(recipe, sample.span), DecodeOptions(max_side=max(2 * recipe.image_size, 224)))
    ts = f.timestamps - (sample.span[0] if sample.span else 0.0)  # a clip's time starts at 0, like a video's
    return preprocess_frames(f.frames, pre), torch.as_tensor(ts, dtype=torch.float32)


def encode_sample(sample: Sample, recipe: Recipe, builder: ChatRenderer, config) -> Encoded:
    pixels = ts = None
    n_vis = 0
    if sample.media is not None:
        pixels, ts = load_media(sample, recipe, config.vision.patch_size)
        n_vis = config.num_visual_tokens(pixels.shape[0], pixels.shape[2], pixels.shape[3], ts.tolist())
    ids, labels = tokenize(builder, sample.messages, n_vis)
    return Encoded(ids, labels, pixels, ts)


class Mixture:
    """Weighted sampling over sources, deterministic in (seed, step): resuming replays it exactly."""

    def __init__(self, recipe: Recipe):
        self.sources = [to_samples(s) for s in recipe.data]
        if not self.sources or not any(self.sources):
            raise ValueError(f"recipe {recipe.name!r} has no training samples")
        w = np.array([s.weight if len(x) else 0.0 for s, x in zip(recipe.data, self.sources)], dtype=np.float64)
        self.p = w / w.sum()
        self.seed = recipe.seed
        self.shuffle = [s.shuffle_options for s in recipe.data]

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def draw(self, index: int) -> Sample:
        """The index-th sample of the stream (any index, in any order)."""
        rng = np.random.default_rng([self.seed, index])
        k = int(rng.choice(len(self.sources), p=self.p))
        sample = self.sources[k][int(rng.integers(len(self.sources[k])))]
        return shuffled(sample, rng) if self.shuffle[k] and sample.mc is not None else sample
