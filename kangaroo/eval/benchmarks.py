"""Benchmark adapters: each reads a benchmark's released annotation files from a local
folder (nothing is downloaded) and yields ``Item``s. Registered by name in ``BENCHMARKS``.

Layouts read (the released ones):
    mvbench         json/<task>.json: [{video, question, candidates, answer(text), start?, end?}],
                    videos under video/<source dir>/ (MVBench's task -> folder table below)
    egoschema       questions.json [{q_uid, question, "option 0".."option 4"}] + subset_answers.json
                    {q_uid: index}; videos/<q_uid>.mp4 (only questions with an answer are scored)
    videomme        a parquet (or JSON/JSONL) of {video_id, videoID, duration, domain, sub_category,
                    task_type, question_id, question, options ["A. ...", ...], answer "A"};
                    videos/<videoID>.mp4, subtitle/<videoID>.srt (``videomme_sub`` adds them)
    mlvu            json/<k>_<task>.json: [{video, duration, question, candidates, answer(text),
                    question_type}], videos under video/<k>_<task>/
    longvideobench  lvb_val.json: [{id, video_id, video_path, duration, question, candidates,
                    correct_choice, question_category, duration_group}]; videos/<video_path>
    tempcompass     questions/multi-choice.json {video_id: {dimension: [{question (with "A. .."
                    lines), answer "A. ..."}]}}; videos/<video_id>.mp4
    lvbench         video_info.meta.jsonl {key, qa: [{uid, question (with "(A) .." lines), answer,
                    question_type: [...]}]}; videos/<key>.mp4
    mmbench_video   MMBench-Video.tsv (index, video, question, answer, dimensions); open-ended,
                    scored 0-3 by a judge endpoint (``needs_judge``)
    synthetic       ``kangaroo synth`` output: mcqa.json
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
from dataclasses import dataclass, field

from ..prompts import LETTERS
from ..registry import Registry

BENCHMARKS: Registry = Registry("benchmark")


@dataclass
class Item:
    qid: str
    video: str  # absolute path
    question: str
    candidates: list[str]  # empty for open-ended
    answer: int | str  # index into candidates, or the reference text (open-ended)
    task: str  # task / category for per-task accuracy
    start: float | None = None
    end: float | None = None
    subtitles: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def open_ended(self) -> bool:
        return not self.candidates


def _load(path: str):
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8") as f:
        text = f.read().strip()
    if path.endswith(".jsonl") or (text and text[0] != "[" and text[0] != "{"):
        return [json.loads(x) for x in text.splitlines() if x.strip()]
    return json.loads(text)


def _need(path: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"benchmark file not found: {path}")
    return path


def _split_options(text: str) -> tuple[str, list[str]]:
    """'Question?\\n(A) x\\n(B) y' or 'Question?\\nA. x\\nB. y' -> ('Question?', ['x', 'y'])."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    q, opts = [], []
    for ln in lines:
        m = re.match(r"^\(?([A-H])[\)\.:]\s*(.*)$", ln)
        if m and LETTERS.index(m.group(1)) == len(opts):
            opts.append(m.group(2).strip())
        elif not opts:
            q.append(ln)
    return " ".join(q), opts


def _letter_index(ans: str) -> int:
    m = re.match(r"^\(?([A-H])\b", ans.strip())
    if not m:
        raise ValueError(f"answer {ans!r} does not start with an option letter")
    return LETTERS.index(m.group(1))


# MVBench task file -> (video folder, has start/end)
MVBENCH_TASKS = {
    "action_sequence": ("star/Charades_v1_480", True), "action_prediction": ("star/Charades_v1_480", True),
    "action_antonym": ("ssv2_video", False), "fine_grained_action": ("Moments_in_Time_Raw/videos", False),
    "unexpected_action": ("FunQA_test/test", False), "object_existence": ("clevrer/video_validation", False),
    "object_interaction": ("star/Charades_v1_480", True), "object_shuffle": ("perception/videos", False),
    "moving_direction": ("clevrer/video_validation", False), "action_localization": ("sta/sta_video", True),
    "scene_transition": ("scene_qa/video", False), "action_count": ("perception/videos", False),
    "moving_count": ("clevrer/video_validation", False), "moving_attribute": ("clevrer/video_validation", False),
    "state_change": ("perception/videos", False), "fine_grained_pose": ("nturgbd", False),
    "character_order": ("perception/videos", False), "egocentric_navigation": ("vlnqa", False),
    "episodic_reasoning": ("tvqa/frames_fps3_hq", True), "counterfactual_inference": ("clevrer/video_validation", False),
}


@BENCHMARKS.register("mvbench")
def mvbench(root: str) -> list[Item]:
    items = []
    for path in sorted(glob.glob(os.path.join(root, "json", "*.json"))):
        task = os.path.splitext(os.path.basename(path))[0]
        folder, timed = MVBENCH_TASKS.get(task, ("", False))
        for i, r in enumerate(_load(path)):
            cands = list(r["candidates"])
            items.append(Item(f"{task}/{i}", os.path.join(root, "video", folder, r["video"]), r["question"], cands,
                              cands.index(r["answer"]), task, r.get("start") if timed else None,
                              r.get("end") if timed else None))
    if not items:
        raise FileNotFoundError(f"no MVBench task files under {root}/json")
    return items


@BENCHMARKS.register("egoschema")
def egoschema(root: str) -> list[Item]:
    qs = _load(_need(os.path.join(root, "questions.json")))
    answers = _load(_need(os.path.join(root, "subset_answers.json")))
    items = []
    for r in qs:
        if r["q_uid"] not in answers:
            continue  # the full set's answers are hidden: only the subset is scored locally
        cands = [r[f"option {k}"] for k in range(5)]
        items.append(Item(r["q_uid"], os.path.join(root, "videos", r["q_uid"] + ".mp4"), r["question"], cands,
                          int(answers[r["q_uid"]]), "egoschema"))
    return items


def _videomme(root: str, subs: bool) -> list[Item]:
    files = sorted(glob.glob(os.path.join(root, "**", "*.parquet"), recursive=True)) or \
        sorted(glob.glob(os.path.join(root, "*.json*")))
    if not files:
        raise FileNotFoundError(f"no Video-MME annotation (parquet/json) under {root}")
    items = []
    for r in _load(files[0]):
        cands = [re.sub(r"^[A-H]\.\s*", "", o) for o in r["options"]]
        srt = os.path.join(root, "subtitle", r["videoID"] + ".srt")
        sub = srt_text(srt) if subs and os.path.exists(srt) else None
        items.append(Item(r["question_id"], os.path.join(root, "videos", r["videoID"] + ".mp4"), r["question"], cands,
                          _letter_index(r["answer"]), f"{r['duration']}/{r['task_type']}", subtitles=sub,
                          extra={"duration": r["duration"], "domain": r.get("domain"), "group": r["duration"]}))
    return items


def srt_text(path: str) -> str:
    """The spoken lines of an .srt file, in order (indices and timings dropped)."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line or line.isdigit() or "-->" in line:
                continue
            out.append(re.sub(r"<[^>]+>", "", line))
    return "\n".join(out)


@BENCHMARKS.register("videomme")
def videomme(root: str) -> list[Item]:
    return _videomme(root, subs=False)


@BENCHMARKS.register("videomme_sub")
def videomme_sub(root: str) -> list[Item]:
    return _videomme(root, subs=True)


@BENCHMARKS.register("mlvu")
def mlvu(root: str) -> list[Item]:
    items = []
    for path in sorted(glob.glob(os.path.join(root, "json", "*.json"))):
        stem = os.path.splitext(os.path.basename(path))[0]
        for i, r in enumerate(_load(path)):
            cands = list(r["candidates"])
            items.append(Item(f"{stem}/{i}", os.path.join(root, "video", stem, r["video"]), r["question"], cands,
                              cands.index(r["answer"]), r.get("question_type", stem)))
    if not items:
        raise FileNotFoundError(f"no MLVU task files under {root}/json")
    return items


@BENCHMARKS.register("longvideobench")
def longvideobench(root: str) -> list[Item]:
    items = []
    for r in _load(_need(os.path.join(root, "lvb_val.json"))):
        items.append(Item(r["id"], os.path.join(root, "videos", r["video_path"]), r["question"], list(r["candidates"]),
                          int(r["correct_choice"]), r.get("question_category", "all"),
                          extra={"duration_group": r.get("duration_group"),
                                 "group": f"duration {r['duration_group']}" if r.get("duration_group") else None}))
    return items


@BENCHMARKS.register("tempcompass")
def tempcompass(root: str) -> list[Item]:
    data = _load(_need(os.path.join(root, "questions", "multi-choice.json")))
    items = []
    for vid, dims in data.items():
        for dim, qs in dims.items():
            for i, q in enumerate(qs):
                question, cands = _split_options(q["question"])
                items.append(Item(f"{vid}/{dim}/{i}", os.path.join(root, "videos", vid + ".mp4"), question, cands,
                                  _letter_index(q["answer"]), dim))
    return items


@BENCHMARKS.register("lvbench")
def lvbench(root: str) -> list[Item]:
    items = []
    for v in _load(_need(os.path.join(root, "video_info.meta.jsonl"))):
        for q in v["qa"]:
            question, cands = _split_options(q["question"])
            types = q.get("question_type") or ["all"]
            items.append(Item(str(q["uid"]), os.path.join(root, "videos", v["key"] + ".mp4"), question, cands,
                              _letter_index(q["answer"]), types[0], extra={"types": types}))
    return items


@BENCHMARKS.register("mmbench_video")
def mmbench_video(root: str) -> list[Item]:
    path = _need(os.path.join(root, "MMBench-Video.tsv"))
    items = []
    with open(path, encoding="utf-8") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            items.append(Item(str(r["index"]), os.path.join(root, "video", r["video"] + ".mp4"), r["question"], [],
                              r["answer"], r.get("dimensions", "all")))
    return items


@BENCHMARKS.register("synthetic")
def synthetic(root: str) -> list[Item]:
    tl_path = os.path.join(root, "timelines.json")
    durations = {t["video"]: t["config"]["duration"] for t in _load(tl_path)} if os.path.exists(tl_path) else {}
    items = []
    for i, r in enumerate(_load(_need(os.path.join(root, "mcqa.json")))):
        items.append(Item(f"{r['video']}/{i}", os.path.join(root, r["video"]), r["question"], list(r["candidates"]),
                          int(r["answer_index"]), r["family"],
                          extra={"evidence": r.get("evidence"), "group": synthetic_group(r, durations.get(r["video"]))}))
    return items


def synthetic_group(r: dict, duration: float | None) -> str | None:
    """A finer bucket than the family, for the breakdown in results.json: "count=3" (the true
    count), "when@4/5" (the object first appears in the 4th fifth of the video), "needle@2/5"
    (the needle's depth)."""
    if r["family"] == "count" and "count" in r:
        return f"count={r['count']}"
    if r["family"] == "when" and duration and "answer_seconds" in r:
        return f"when@{min(int(r['answer_seconds'] / duration * 5), 4) + 1}/5"
    if r["family"] == "needle" and "depth" in r:
        return f"needle@{min(int(r['depth'] * 5), 4) + 1}/5"
    return None


NEEDS_JUDGE = {"mmbench_video"}
