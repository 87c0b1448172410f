"""Write a synthetic dataset: mp4 videos plus the JSON manifests the rest of the project reads.

    OUT/videos/synth_00000.mp4 ...
    OUT/timelines.json      ground truth per video (objects, events, cuts)
    OUT/captions.json       [{video, caption}]
    OUT/mcqa.json           multiple choice: {video, question, candidates, answer, answer_index, family, evidence}
    OUT/openqa.json         open-ended: {video, question, answer, family, evidence}
    OUT/conversations.json  LLaVA-style multi-round: {id, video, conversations: [{from, value}]}
    OUT/mc_conversations.json  the same, every multiple-choice question of the video, one per round
    OUT/images.json, image_mcqa.json  with --images-per-video: still frames, captioned and as multiple choice
    OUT/manifest.json       what was generated, with which settings

Video paths in the manifests are relative to OUT.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from tqdm import tqdm

from ..prompts import LETTERS
from .qa import mc_prompt, questions
from .render import write_video
from .timeline import SynthConfig, make_timeline


def _atomic_json(path: str, obj) -> None:
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
    os.replace(tmp, path)


def video_config(base: SynthConfig, rng: np.random.Generator, min_seconds: float, max_seconds: float,
                 vary: bool = True) -> SynthConfig:
    """Per-video settings: the duration drawn from [min, max]; cuts and needles vary when ``vary``."""
    dur = round(float(rng.uniform(min_seconds, max_seconds)), 2)
    if not vary:
        return dataclasses.replace(base, duration=dur)
    return dataclasses.replace(
        base,
        duration=dur,
        num_objects=int(rng.integers(max(1, base.num_objects - 1), base.num_objects + 2)),
        scene_cuts=int(rng.integers(0, 3)) if base.scene_cuts == 0 else base.scene_cuts,
        needle=bool(base.needle or rng.random() < 0.5),
    )


def generate_dataset(out: str | os.PathLike, num_videos: int, min_seconds: float, max_seconds: float, seed: int = 0,
                     base: SynthConfig | None = None, vary: bool = True, progress: bool = True,
                     images_per_video: int = 0, needle_image_share: float = 0.0) -> dict:
    if num_videos < 1:
        raise ValueError("num_videos must be >= 1")
    if not 0.0 <= needle_image_share <= 1.0:
        raise ValueError(f"needle_image_share must be in [0, 1], got {needle_image_share}")
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    out = os.fspath(out)
    os.makedirs(os.path.join(out, "videos"), exist_ok=True)
    base = base or SynthConfig()
    rng = np.random.default_rng(seed)
    timelines, captions, mcqa, openqa, convs, mc_convs, images, image_mc = [], [], [], [], [], [], [], []
    total_frames = 0
    plan = []
    for i in range(num_videos):
        cfg = video_config(base, rng, min_seconds, max_seconds, vary)
        vseed = int(rng.integers(0, 2**31 - 1))
        plan.append((i, cfg, vseed))
        total_frames += max(1, int(round(cfg.duration * cfg.fps)))
    bar = tqdm(total=total_frames, unit="frame", desc="synth", disable=not progress)
    for i, cfg, vseed in plan:
        tl = make_timeline(cfg, vseed)
        rel = f"videos/synth_{seed}_{i:05d}.mp4"
        write_video(tl, os.path.join(out, rel), progress=bar.update)
        timelines.append({"video": rel, **tl.to_dict()})
        items = questions(tl, vseed)
        for q in items:
            base_item = {"video": rel, **q}
            if q["family"] == "caption":
                captions.append({"video": rel, "caption": q["answer"], "duration": cfg.duration})
            if "candidates" in q:
                mcqa.append(base_item)
            open_item = {k: v for k, v in base_item.items() if k not in ("candidates", "answer_index")}
            openqa.append(open_item)
        convs.append(_conversation(rel, items, vseed))
        mc_convs.append(mc_conversation(rel, items, vseed))
        recs, mc = _images(tl, out, f"synth_{seed}_{i:05d}", images_per_video, vseed, needle_image_share)
        images.extend(recs)
        image_mc.extend(mc)
    bar.close()
    outputs = [("timelines", timelines), ("captions", captions), ("mcqa", mcqa), ("openqa", openqa),
               ("conversations", convs), ("mc_conversations", mc_convs)]
    if images_per_video:
        outputs += [("images", images), ("image_mcqa", image_mc)]
    for name, obj in outputs:
        _atomic_json(os.path.join(out, f"{name}.json"), obj)
    manifest = {
        "generator": "kangaroo.synth",
        "seed": seed,
        "num_videos": num_videos,
        "min_seconds": min_seconds,
        "max_seconds": max_seconds,
        "base_config": base.to_dict(),
        "vary": vary,
        "images_per_video": images_per_video,
        "needle_image_share": needle_image_share,
        "counts": {"videos": len(timelines), "captions": len(captions), "mcqa": len(mcqa), "openqa": len(openqa),
                   "conversations": len(convs), "mc_conversations": len(mc_convs), "images": len(images),
                   "image_mcqa": len(image_mc)},
        "families": sorted({q["family"] for q in openqa}),
    }
    _atomic_json(os.path.join(out, "manifest.json"), manifest)
    return manifest


def _images(tl, out: str, stem: str, n: int, seed: int, needle_share: float = 0.0) -> tuple[list[dict], list[dict]]:
    """Single frames as image-text pairs (LLaVA format): what is in the picture (curriculum stage 1),
    and the same pictures as multiple-choice questions (instruction tuning).

    ``needle_share``: the fraction of the pictures (in expectation) taken while the video's needle
    is on screen, for a tower that must learn the needle shapes, which are on screen for 1 s of a
    video and so in few pictures otherwise. 0 leaves the pictures exactly as they were."""
    from PIL import Image

    from .qa import article
    from .render import render_frame
    from .timeline import COLORS, NEEDLE_SHAPES, SHAPES

    if n <= 0:
        return [], []
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    rng = np.random.default_rng(seed + 2)
    needle = next((o for o in tl.objects if o.needle), None) if needle_share > 0 else None
    nrng = np.random.default_rng(seed + 5)  # its own stream: share 0 draws exactly what it drew before
    recs, mc = [], []
    for k in range(n):
        if needle is not None and nrng.random() < needle_share:  # a picture of the needle (needle_share)
            t = float(nrng.uniform(needle.t_in, max(needle.t_in, needle.t_out - 1e-3)))
        elif k % 2 and tl.objects:
            # every other picture is taken while a chosen object (the brief needle included) is on
            # screen, so rare objects are seen as often as common ones
            o = tl.objects[int(rng.integers(len(tl.objects)))]
            t = float(rng.uniform(o.t_in, max(o.t_in, o.t_out - 1e-3)))
        else:
            t = float(rng.uniform(0, tl.config.duration))
        rel = f"images/{stem}_{k}.png"
        Image.fromarray(render_frame(tl, t)).save(os.path.join(out, rel))
        names = [f"{o.color_at(t)} {o.shape}" for o in tl.visible_at(t)]
        answer = (" and ".join(article(n) for n in names).capitalize() + ".") if names else "Nothing, an empty scene."
        recs.append({"id": f"{stem}_{k}", "image": rel, "conversations": [
            {"from": "human", "value": "<image>\nWhat objects are in the picture?"}, {"from": "gpt", "value": answer}]})
        if names:  # the same picture as a multiple-choice question: which of these is in it?
            pick = names[int(rng.integers(len(names)))]
            pool = [f"{c} {s}" for s in SHAPES + NEEDLE_SHAPES for c in COLORS if f"{c} {s}" not in names]
            cands = [pick] + [pool[i] for i in rng.choice(len(pool), size=3, replace=False)]
            rng.shuffle(cands)
            q = "Which object is in the picture?" if len(names) == 1 else "Which of these objects is in the picture?"
            mc.append({"id": f"{stem}_{k}_mc", "image": rel, "conversations": [
                {"from": "human", "value": "<image>\n" + mc_prompt(q, cands)},
                {"from": "gpt", "value": "ABCD"[cands.index(pick)]}]})
    return recs, mc


def _conversation(video: str, items: list[dict], seed: int) -> dict:
    """A multi-round LLaVA-style conversation over one video: its questions, some as multiple choice."""
    rng = np.random.default_rng(seed + 1)
    turns = []
    for k, q in enumerate(items):
        if "candidates" in q and rng.random() < 0.5:
            ask = mc_prompt(q["question"], q["candidates"])
            reply = LETTERS[q["answer_index"]]
        else:
            ask, reply = q["question"], q["answer"]
        if k == 0:
            ask = "<video>\n" + ask
        turns += [{"from": "human", "value": ask}, {"from": "gpt", "value": reply}]
    return {"id": os.path.splitext(os.path.basename(video))[0], "video": video, "conversations": turns}


def mc_conversation(video: str, items: list[dict], seed: int) -> dict:
    """Every multiple-choice question of one video as the rounds of one conversation, in a
    random order: one copy of the video's tokens serves all its questions (about nine)."""
    rng = np.random.default_rng(seed + 3)
    mc = [q for q in items if "candidates" in q]
    turns = []
    for k in rng.permutation(len(mc)):
        q = mc[int(k)]
        ask = mc_prompt(q["question"], q["candidates"])
        turns += [{"from": "human", "value": ("<video>\n" if not turns else "") + ask},
                  {"from": "gpt", "value": LETTERS[q["answer_index"]]}]
    return {"id": os.path.splitext(os.path.basename(video))[0], "video": video, "conversations": turns}
