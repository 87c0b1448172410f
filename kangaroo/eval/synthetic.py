"""Accuracy on synthetic multiple-choice QA (``kangaroo synth`` output), per question family.

Each video is decoded and encoded once per frame count; every question about it reuses
those visual rows in a fresh conversation. Answers are read with ``extract_choice``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

from tqdm import tqdm

from ..model.chat import Conversation, GenerationConfig, KangarooChat
from ..synth.qa import mc_prompt
from ..video import SamplingConfig
from .extract import extract_choice


def evaluate_mcqa(kc: KangarooChat, data_dir: str, frames: int, limit: int | None = None,
                  families: list[str] | None = None, progress: bool = True) -> dict:
    with open(os.path.join(data_dir, "mcqa.json")) as f:
        items = json.load(f)
    if families:
        items = [q for q in items if q["family"] in families]
    if limit:
        items = items[:limit]
    by_video = defaultdict(list)
    for q in items:
        by_video[q["video"]].append(q)
    gen = GenerationConfig.greedy(6)
    correct, total = defaultdict(int), defaultdict(int)
    preds = []
    bar = tqdm(total=len(items), desc=f"synthetic@{frames}f", disable=not progress)
    for video, qs in by_video.items():
        rows, info = kc.encode(os.path.join(data_dir, video), SamplingConfig(num_frames=frames))
        for q in qs:
            conv = Conversation(visual=rows, frames=info)
            out = kc.ask(conv, mc_prompt(q["question"], q["candidates"]), gen)
            pred = extract_choice(out, q["candidates"])
            ok = pred == q["answer_index"]
            correct[q["family"]] += ok
            total[q["family"]] += 1
            preds.append({"video": video, "family": q["family"], "question": q["question"], "output": out,
                          "pred": pred, "answer_index": q["answer_index"], "correct": bool(ok)})
            bar.update(1)
    bar.close()
    fam = {k: round(correct[k] / total[k], 4) for k in sorted(total)}
    n = sum(total.values())
    return {"frames": frames, "n": n, "accuracy": round(sum(correct.values()) / max(1, n), 4), "per_family": fam,
            "counts": dict(total), "predictions": preds}
