"""Training data: read what users already have, tokenize with loss on assistant tokens only.

Formats (``DataSource.format``):
    llava     [{"video"|"image": path, "conversations": [{"from": "human"|"gpt", "value": ...}]}]
              (JSON list or JSONL); "<video>"/"<image>" marks where the media goes. Several media:
              "image"/"video" are lists, and each tag is the next one, where the user wrote it
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

import os
import re
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from ..prompts import IGNORE_INDEX as IGNORE
from ..prompts import LETTERS, ChatRenderer, mc_prompt
from ..synth.qa import fmt_t, near_names
from ..video import DecodeOptions, SamplingConfig, load_video
from ..video.preprocess import PreprocessConfig, preprocess_frames
from .recipe import DataSource, Recipe
from .records import BadRecord, Records

_ROLE = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass
class Sample:
    media: str | None  # a video or image path
    is_image: bool
    messages: list[dict]  # [{"role", "content", "video"?}]
    span: tuple[float, float] | None = None  # a clip of the video: [start, end) seconds
    mc: tuple[str, list[str], int] | None = None  # multiple choice: (question, candidates, answer index)
    more_media: list[tuple[str, bool]] = field(default_factory=list)  # 2nd, 3rd... medium: (path, is_image)
    reply: str = "letter"  # multiple choice: the reply style (DataSource.reply)
    frames: int | None = None  # the video's frames, sampled uniformly (DataSource.uniform_frames); None = dynamic

    def all_media(self) -> list[tuple[str, bool]]:
        """Every medium in reading order: (path, is_image)."""
        return ([(self.media, self.is_image)] if self.media is not None else []) + list(self.more_media)


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
                  sample.span, (q, new, order.index(ans)), sample.more_media, sample.reply, sample.frames)


_TIME = re.compile(r"^(\d+(?:\.\d+)?) seconds$")


def time_jittered(sample: Sample, rng, jitter: float) -> Sample:
    """A multiple-choice sample whose options are all times ("4.5 seconds") with each moved by its
    own offset in [-jitter, +jitter] (rounded to 0.1 s, never below 0). Options that are not all
    times, or a draw where the right option would stop being the nearest to its old time, or two
    options would read the same, leave the sample as it was."""
    q, cands, ans = sample.mc
    times = [_TIME.match(c) for c in cands]
    if not all(times):
        return sample
    old = [float(m.group(1)) for m in times]
    new = [max(0.0, round(t + float(rng.uniform(-jitter, jitter)), 1)) for t in old]
    dist = [abs(t - old[ans]) for t in new]
    if len(set(new)) < len(new) or any(d <= dist[ans] for i, d in enumerate(dist) if i != ans):
        return sample
    texts = [f"{fmt_t(t)} seconds" for t in new]  # as kangaroo synth writes them
    return dataclasses.replace(sample, messages=mc_messages(q, texts, ans, sample.media is not None, sample.reply),
                               mc=(q, texts, ans))


def near_distracted(sample: Sample, record: dict, objects: list[dict] | None, rng) -> Sample:
    """An appear_at sample ("which object is on screen at t?") whose wrong options are the names shown
    nearest in time to ``t`` (``synth.qa.near_names`` over the video's timeline ``objects``), each put in
    a wrong option's place in an order drawn from ``rng``; the right option and its letter stay. Where
    fewer than the wrong options' number are near, the rest keep their names. Any other sample, or
    one without a timeline, is left as it was."""
    if record.get("family") != "appear_at" or "time" not in record or not objects:
        return sample
    q, cands, ans = sample.mc
    near = near_names(objects, float(record["time"]), {cands[ans]}, len(cands) - 1)
    wrong = [i for i in range(len(cands)) if i != ans]
    names = (near + [cands[i] for i in wrong if cands[i] not in near])[: len(wrong)]
    new = list(cands)
    for i, n in zip(wrong, [names[j] for j in rng.permutation(len(names))]):
        new[i] = n
    return dataclasses.replace(sample, messages=mc_messages(q, new, ans, sample.media is not None, sample.reply),
                               mc=(q, new, ans))


def read_records(path: str) -> list[dict]:
    """Every record of a JSON list or JSONL file, in memory (small files; training reads ``Records``)."""
    return list(Records(path))


def _abs(root: str, p: str | None) -> str | None:
    return None if p is None else (p if os.path.isabs(p) else os.path.join(root, p))


_TAG = re.compile(r"(<image>|<video>)")


def _as_list(v) -> list:
    return [] if v is None else (list(v) if isinstance(v, (list, tuple)) else [v])


def _llava(r: dict, root: str) -> Sample:
    """A LLaVA record. One medium: the tag is dropped and the medium opens its turn (as LLaVA's own
    loader does). Several (``"image": [...]`` and/or ``"video": [...]``): each ``<image>``/``<video>``
    tag is the next image/video, placed where the user wrote it."""
    images, videos = _as_list(r.get("image")), _as_list(r.get("video"))
    turns = r["conversations"]
    if len(images) + len(videos) <= 1:
        media = (videos or images or [None])[0]
        msgs = []
        for turn in turns:
            text = turn["value"]
            has = "<video>" in text or "<image>" in text
            text = text.replace("<video>", "").replace("<image>", "").strip()
            msgs.append({"role": _ROLE[turn["from"]], "content": text, "video": has})
        if media and not any(m.get("video") for m in msgs):
            next(m for m in msgs if m["role"] == "user")["video"] = True
        if not media:
            for m in msgs:
                m["video"] = False
        return Sample(_abs(root, media), bool(images) and not videos, msgs)
    left = {"<image>": list(images), "<video>": list(videos)}
    order, msgs = [], []
    for turn in turns:
        parts = []
        for piece in _TAG.split(turn["value"]):
            if piece in left:
                if not left[piece]:
                    raise ValueError(f"more {piece} tags than {piece[1:-1]}s in the record")
                order.append((_abs(root, left[piece].pop(0)), piece == "<image>"))
                parts.append({"type": piece[1:-1]})
            elif piece.strip():
                parts.append({"type": "text", "text": piece.strip()})
        msgs.append({"role": _ROLE[turn["from"]], "content": parts})
    if left["<image>"] or left["<video>"]:
        raise ValueError(f"{len(left['<image>'])} images and {len(left['<video>'])} videos have no tag in the "
                         "conversation (with several media, each needs its <image>/<video> where it goes)")
    return Sample(order[0][0], order[0][1], msgs, more_media=order[1:])


def to_sample(src: DataSource, r: dict, root: str) -> Sample | None:
    """One record of ``src`` as a sample (None: a record with nothing to learn, e.g. a filter-only
    curation row without a caption)."""
    if src.format == "llava":
        return _llava(r, root)
    if src.format == "mcqa":
        mc = (r["question"], list(r["candidates"]), int(r["answer_index"]))
        return Sample(_abs(root, r["video"]), False, mc_messages(*mc, video=True, reply=src.reply), mc=mc,
                      reply=src.reply)
    if src.format == "mcqa_fact":  # text only: the answer is stated, the letter must be found
        mc = (f"Fact: {r['answer']}.\n{r['question']}", list(r["candidates"]), int(r["answer_index"]))
        return Sample(None, False, mc_messages(*mc, video=False, reply=src.reply), mc=mc, reply=src.reply)
    if src.format == "openqa":
        return Sample(_abs(root, r["video"]), False, [
            {"role": "user", "content": r["question"], "video": True},
            {"role": "assistant", "content": r["answer"]}])
    if src.format == "manifest":  # kangaroo curate: clips (video + start/end) and images
        if not r.get("caption"):
            return None  # a filter-only curation row has no caption to learn
        image = r.get("kind") == "image" or ("image" in r and "video" not in r)
        span = (float(r["start"]), float(r["end"])) if not image and r.get("end") is not None else None
        prompt = "Describe the image." if image else "Describe the video."
        return Sample(_abs(root, r.get("image") if image else (r.get("video") or r.get("clip"))), image, [
            {"role": "user", "content": prompt, "video": True},
            {"role": "assistant", "content": r["caption"]}], span)
    if not (r.get("video") or r.get("clip")):
        raise KeyError("video")
    return Sample(_abs(root, r.get("video") or r.get("clip")), False, [  # captions
        {"role": "user", "content": "Describe the video.", "video": True},
        {"role": "assistant", "content": r["caption"]}])


class Source:
    """One data source, read lazily (``Records``): ``len(source)``, ``source.sample(i)``."""

    def __init__(self, src: DataSource):
        self.src = src
        self.root = src.root or os.path.dirname(os.path.abspath(src.path))
        self.records = Records(src.path, src.families)
        if src.families is not None and not len(self.records):
            raise ValueError(f"{src.path}: no records of the families {src.families}")
        self.timelines: dict[str, list[dict]] = {}  # video -> its timeline's objects (near_distractors)
        if src.near_distractors > 0:
            path = os.path.join(os.path.dirname(os.path.abspath(src.path)), "timelines.json")
            if not os.path.exists(path):
                raise ValueError(f"{src.path}: near_distractors needs the videos' timelines, and {path} is missing "
                                 "(kangaroo synth writes it beside mcqa.json)")
            self.timelines = {t["video"]: t["objects"] for t in read_records(path)}

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, i: int) -> Sample | None:
        """Record ``i`` as a sample; a record that lacks what its format needs is a ``BadRecord``."""
        r = self.records[i]
        try:
            return to_sample(self.src, r, self.root)
        except (KeyError, TypeError, ValueError, IndexError, StopIteration) as e:
            raise BadRecord(self.src.path, i, f"{type(e).__name__}: {e}") from None


def to_samples(src: DataSource) -> list[Sample]:
    """Every sample of a source, in memory (small sources: the tag trainer, tests)."""
    source = Source(src)
    return [s for s in (source.sample(i) for i in range(len(source))) if s is not None]


def tokenize(renderer: ChatRenderer, messages: list[dict], n_visual: int) -> tuple[list[int], list[int]]:
    """(ids, labels): labels are the ids on assistant turns (their end token included), else IGNORE;
    the medium (if any) is a run of ``n_visual`` placeholder ids."""
    return renderer.labelled(messages, [n_visual] if n_visual else [])


def stage_sampling(recipe: Recipe, span: tuple[float, float] | None = None,
                   frames: int | None = None) -> SamplingConfig:
    """The stage's dynamic rate, or ``frames`` spread uniformly (the way an evaluation at a fixed
    frame count samples)."""
    start, end = span if span is not None else (None, None)
    if frames is not None:
        return SamplingConfig(sampler="uniform", num_frames=frames, start=start, end=end)
    return SamplingConfig(sampler="dynamic", min_frames=recipe.min_frames, max_frames=recipe.max_frames,
                          seconds_per_frame=recipe.seconds_per_frame, start=start, end=end)


def frames_fit_warning(recipe: Recipe, config, text_tokens: int = 64) -> str | None:
    """A warning when a video at the stage's most frames (``max_frames``, or a source's
    ``uniform_frames``) cannot fit a row with ``text_tokens`` of text: such samples are skipped as
    ``too_long``, silently for the mixture they were meant to weigh in (None: everything fits)."""
    size, spf = recipe.image_size, recipe.seconds_per_frame

    def length(n: int) -> int:
        return config.num_visual_tokens(n, size, size, [i * spf for i in range(n)])

    most = max([recipe.max_frames] + [n for s in recipe.data for n in s.uniform_frames])
    room = recipe.max_seq_len - text_tokens
    if length(most) <= room:
        return None
    fit = max((n for n in range(1, most + 1) if length(n) <= room), default=0)
    return (f"warning: a video at {most} frames takes {length(most)} positions, beyond max_seq_len "
            f"{recipe.max_seq_len} less {text_tokens} for text: a sample with more than {fit} frames (a video over "
            f"~{fit * spf:.0f} s at seconds_per_frame {spf}) is skipped as too_long. Raise max_seq_len to "
            f"{length(most) + text_tokens} or lower max_frames to {fit}.")


@dataclass
class Encoded:
    ids: list[int]  # each medium is a run of its placeholder id
    labels: list[int]
    pixels: torch.Tensor | None  # the first medium: [T, 3, H, W]
    timestamps: torch.Tensor | None  # [T]
    more: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # further media, in order

    def __len__(self) -> int:
        return len(self.ids)

    def media(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every medium's (pixels [T, 3, H, W], timestamps [T]), in reading order."""
        return ([(self.pixels, self.timestamps)] if self.pixels is not None else []) + list(self.more)


def load_medium(path: str, is_image: bool, recipe: Recipe, patch: int,
                span: tuple[float, float] | None = None,
                frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One image or video as (pixels [T, 3, H, W], timestamps [T]) at the stage's size and sampling."""
    pre = PreprocessConfig(size=recipe.image_size, patch=patch)
    if is_image:
        from PIL import Image

        with Image.open(path) as im:
            frames = np.asarray(im.convert("RGB"))[None]
        return preprocess_frames(frames, pre), torch.zeros(1)
    f = load_video(path, stage_sampling(recipe, span, frames), DecodeOptions(max_side=max(2 * recipe.image_size, 224)))
    ts = f.timestamps - (span[0] if span else 0.0)  # a clip's time starts at 0, like a video's
    return preprocess_frames(f.frames, pre), torch.as_tensor(ts, dtype=torch.float32)


def load_media(sample: Sample, recipe: Recipe, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample's (first) medium."""
    return load_medium(sample.media, sample.is_image, recipe, patch, sample.span, sample.frames)


def encode_sample(sample: Sample, recipe: Recipe, builder: ChatRenderer, config) -> Encoded:
    """Decode, preprocess and tokenize a sample (every medium, each where the conversation puts it)."""
    media = []
    for k, (path, is_image) in enumerate(sample.all_media()):
        head = k == 0  # the span and a fixed frame count apply to the first medium
        media.append(load_medium(path, is_image, recipe, config.vision.patch_size, sample.span if head else None,
                                 sample.frames if head else None))
    lengths = [config.num_visual_tokens(p.shape[0], p.shape[2], p.shape[3], t.tolist()) for p, t in media]
    ids, labels = builder.labelled(sample.messages, lengths)
    first = media[0] if media else (None, None)
    return Encoded(ids, labels, first[0], first[1], media[1:])


class Mixture:
    """Weighted sampling over sources, deterministic in (seed, index): resuming replays it exactly.
    Sources are read lazily (``Source``): memory does not grow with the data set."""

    def __init__(self, recipe: Recipe):
        self.sources = [Source(s) for s in recipe.data]
        if not self.sources or not any(len(s) for s in self.sources):
            raise ValueError(f"recipe {recipe.name!r} has no training samples")
        w = np.array([s.weight if len(x) else 0.0 for s, x in zip(recipe.data, self.sources)], dtype=np.float64)
        self.p = w / w.sum()
        self.seed = recipe.seed
        self.shuffle = [s.shuffle_options for s in recipe.data]
        self.uniform = [(list(s.uniform_frames), s.uniform_share) for s in recipe.data]
        self.jitter = [s.time_jitter_s for s in recipe.data]
        self.near = [s.near_distractors for s in recipe.data]

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def draw(self, index: int) -> Sample | None:
        """The index-th sample of the stream (any index, in any order); None: a record with nothing
        to learn; a record that cannot be read raises ``BadRecord``."""
        rng = np.random.default_rng([self.seed, index])
        k = int(rng.choice(len(self.sources), p=self.p))
        source = self.sources[k]
        i = int(rng.integers(len(source)))
        sample = source.sample(i)
        if sample is not None and self.shuffle[k] and sample.mc is not None:
            sample = shuffled(sample, rng)
        # drawn after the rest, and only when asked for: recipes without it keep their stream
        counts, share = self.uniform[k]
        if sample is not None and share > 0 and not sample.is_image and sample.media is not None \
                and rng.random() < share:
            sample = dataclasses.replace(sample, frames=int(rng.choice(counts)))
        if sample is not None and self.jitter[k] > 0 and sample.mc is not None:
            sample = time_jittered(sample, rng, self.jitter[k])
        if sample is not None and self.near[k] > 0 and sample.mc is not None and rng.random() < self.near[k]:
            r = source.records[i]
            sample = near_distracted(sample, r, source.timelines.get(r.get("video")), rng)
        return sample
