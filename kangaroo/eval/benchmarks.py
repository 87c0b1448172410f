"""Benchmark adapters: each reads a benchmark's released annotation files from a local
folder (nothing is downloaded) and yields ``Item``s. Registered by name in ``BENCHMARKS``.

Layouts read (the released ones):
    mvbench         json/<task>.json: [{video, question, candidates, answer(text), start?, end?}],
                    videos under video/<source dir>/ (MVBench's task -> folder table below);
                    episodic_reasoning's "videos" are folders of JPEG frames (tvqa/frames_fps3_hq/<video>/
                    00001.jpg ...), read as videos at the 3 fps the folder name states (video/frames.py)
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
    synthetic_open  the same videos' open questions (openqa.json), scored by rule against the known
                    truth (eval/open_scoring.py): "when" within 1 s, descriptions by event recall/precision
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


def _load(path: str, kind: type | None = None):
    """An annotation file's records; ``ValueError`` naming the file (and line) when it is malformed,
    or when its top level is not a ``kind`` (list or dict)."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # noqa: BLE001 - pyarrow's errors have no common base worth naming
            raise ValueError(f"{path}: not a readable parquet file ({e})") from None
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if path.endswith(".jsonl") or (text and text[0] != "[" and text[0] != "{"):
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {n}: not valid JSON ({e.msg}, column {e.colno})") from None
        data = out
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if kind is not None and not isinstance(data, kind):
        want = "a list of records" if kind is list else "a mapping"
        raise ValueError(f"{path}: expected {want} at the top level, got {type(data).__name__}")
    return data


class _Record:
    """``with _Record(path, k):`` around reading one record: a missing key, a wrong type or an answer
    that is not among the candidates becomes one ``ValueError`` naming the file, the record and the key."""

    def __init__(self, path: str, where):
        self.path, self.where = path, where

    def __enter__(self):
        return self

    def __exit__(self, et, e, tb):
        if et is None or issubclass(et, FileNotFoundError):
            return False
        if issubclass(et, KeyError):
            msg = f"missing key {e.args[0]!r}" if e.args else "missing key"
        elif issubclass(et, (TypeError, AttributeError, IndexError)):
            msg = f"malformed record ({e})"
        elif issubclass(et, ValueError):
            msg = str(e)
        else:
            return False
        raise ValueError(f"{self.path}: record {self.where}: {msg}") from None


def _index_of(answer, cands: list) -> int:
    if answer not in cands:
        raise ValueError(f"answer {answer!r} is not one of the candidates {cands}")
    return cands.index(answer)


def _choice(value, n: int, key: str) -> int:
    """An answer index: an integer (or its digits) in [0, n)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().lstrip("-").isdigit():
        raise ValueError(f"{key}: expected an option index, got {value!r}")
    k = int(value)
    if not 0 <= k < n:
        raise ValueError(f"{key}: {k} is not an option index (0..{n - 1})")
    return k


def _text_list(value, key: str) -> list:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{key}: expected a non-empty list of options, got {value!r}")
    return list(value)


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
        for i, r in enumerate(_load(path, list)):
            with _Record(path, i):
                cands = _text_list(r["candidates"], "candidates")
                items.append(Item(f"{task}/{i}", os.path.join(root, "video", folder, r["video"]), r["question"],
                                  cands, _index_of(r["answer"], cands), task, r.get("start") if timed else None,
                                  r.get("end") if timed else None))
    if not items:
        raise FileNotFoundError(f"no MVBench task files under {root}/json")
    return items


@BENCHMARKS.register("egoschema")
def egoschema(root: str) -> list[Item]:
    qpath, apath = _need(os.path.join(root, "questions.json")), _need(os.path.join(root, "subset_answers.json"))
    qs, answers = _load(qpath, list), _load(apath, dict)
    items = []
    for i, r in enumerate(qs):
        with _Record(qpath, i):
            uid = r["q_uid"]
            if not isinstance(uid, str):
                raise ValueError(f"q_uid: expected a string, got {uid!r}")
            if uid not in answers:
                continue  # the full set's answers are hidden: only the subset is scored locally
            cands = [r[f"option {k}"] for k in range(5)]
            question = r["question"]
        with _Record(apath, repr(uid)):
            answer = _choice(answers[uid], 5, uid)
        items.append(Item(uid, os.path.join(root, "videos", uid + ".mp4"), question, cands, answer, "egoschema"))
    return items


def _videomme(root: str, subs: bool) -> list[Item]:
    files = sorted(glob.glob(os.path.join(root, "**", "*.parquet"), recursive=True)) or \
        sorted(glob.glob(os.path.join(root, "*.json*")))
    if not files:
        raise FileNotFoundError(f"no Video-MME annotation (parquet/json) under {root}")
    items = []
    for i, r in enumerate(_load(files[0], list)):
        with _Record(files[0], i):
            cands = [re.sub(r"^[A-H]\.\s*", "", o) for o in _text_list(r["options"], "options")]
            srt = os.path.join(root, "subtitle", r["videoID"] + ".srt")
            sub = srt_text(srt) if subs and os.path.exists(srt) else None
            items.append(Item(r["question_id"], os.path.join(root, "videos", r["videoID"] + ".mp4"), r["question"],
                              cands, _letter_index(r["answer"]), f"{r['duration']}/{r['task_type']}", subtitles=sub,
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
        for i, r in enumerate(_load(path, list)):
            with _Record(path, i):
                cands = _text_list(r["candidates"], "candidates")
                items.append(Item(f"{stem}/{i}", os.path.join(root, "video", stem, r["video"]), r["question"], cands,
                                  _index_of(r["answer"], cands), r.get("question_type", stem)))
    if not items:
        raise FileNotFoundError(f"no MLVU task files under {root}/json")
    return items


@BENCHMARKS.register("longvideobench")
def longvideobench(root: str) -> list[Item]:
    items = []
    path = _need(os.path.join(root, "lvb_val.json"))
    for i, r in enumerate(_load(path, list)):
        with _Record(path, i):
            cands = _text_list(r["candidates"], "candidates")
            items.append(Item(r["id"], os.path.join(root, "videos", r["video_path"]), r["question"], cands,
                              _choice(r["correct_choice"], len(cands), "correct_choice"),
                              r.get("question_category", "all"),
                              extra={"duration_group": r.get("duration_group"),
                                     "group": f"duration {r['duration_group']}" if r.get("duration_group") else None}))
    return items


@BENCHMARKS.register("tempcompass")
def tempcompass(root: str) -> list[Item]:
    path = _need(os.path.join(root, "questions", "multi-choice.json"))
    items = []
    for vid, dims in _load(path, dict).items():
        with _Record(path, repr(vid)):
            for dim, qs in dims.items():
                for i, q in enumerate(qs):
                    question, cands = _split_options(q["question"])
                    items.append(Item(f"{vid}/{dim}/{i}", os.path.join(root, "videos", vid + ".mp4"), question, cands,
                                      _letter_index(q["answer"]), dim))
    return items


@BENCHMARKS.register("lvbench")
def lvbench(root: str) -> list[Item]:
    items = []
    path = _need(os.path.join(root, "video_info.meta.jsonl"))
    for i, v in enumerate(_load(path, list)):
        with _Record(path, i):
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
        for i, r in enumerate(csv.DictReader(f, delimiter="\t")):
            with _Record(path, i):
                items.append(Item(str(r["index"]), os.path.join(root, "video", r["video"] + ".mp4"), r["question"],
                                  [], r["answer"], r.get("dimensions", "all")))
    return items


@BENCHMARKS.register("synthetic")
def synthetic(root: str) -> list[Item]:
    tl_path = os.path.join(root, "timelines.json")
    durations = {}
    for i, t in enumerate(_load(tl_path, list) if os.path.exists(tl_path) else []):
        with _Record(tl_path, i):
            durations[t["video"]] = t["config"]["duration"]
    items = []
    path = _need(os.path.join(root, "mcqa.json"))
    for i, r in enumerate(_load(path, list)):
        with _Record(path, i):
            cands = _text_list(r["candidates"], "candidates")
            items.append(Item(f"{r['video']}/{i}", os.path.join(root, r["video"]), r["question"], cands,
                              _choice(r["answer_index"], len(cands), "answer_index"), r["family"],
                              extra={"evidence": r.get("evidence"),
                                     "group": synthetic_group(r, durations.get(r["video"]))}))
    return items


@BENCHMARKS.register("synthetic_open")
def synthetic_open(root: str) -> list[Item]:
    items = []
    path = _need(os.path.join(root, "openqa.json"))
    for i, r in enumerate(_load(path, list)):
        with _Record(path, i):
            if not isinstance(r.get("answer"), str) or not r.get("family"):
                raise ValueError("needs a text 'answer' and a 'family'")
            if r["family"] == "when" and not isinstance(r.get("answer_seconds"), (int, float)):
                raise ValueError("a 'when' question needs its 'answer_seconds'")
            items.append(Item(f"{r['video']}/open{i}", os.path.join(root, r["video"]), r["question"], [],
                              r["answer"], r["family"], extra={"record": {"answer_seconds": r.get("answer_seconds")}}))
    return items


RULE_SCORED = {"synthetic_open"}  # open-ended, scored by rule against the known truth (eval/open_scoring.py)


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
