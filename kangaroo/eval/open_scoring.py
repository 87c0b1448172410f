"""Rule-based scores for open-ended answers whose ground truth is known exactly (the synthetic set's
``openqa.json``): no judge model, so a score cannot drift with the judge.

    when       "When does the red circle first appear?" -> a time read from the answer ("4.5 seconds",
               "at 4.5 s", "0:04.5", "4.5"); right when within ``WHEN_TOLERANCE_S`` of the truth;
               the absolute error is kept for the median
    caption    "Describe what happens in the video." -> the answer's sentences read as events
               ("a blue circle appears", "the blue circle turns orange", "the orange circle leaves",
               "a green star flashes briefly", "the scene cuts") and matched with the reference's
               (as multisets): event recall and precision, not a right/wrong verdict
    others     appear_at, order, needle, count: right when the reference answer's words are in the
               answer (articles and punctuation ignored) and it names no other coloured shape; a count
               is right when the first number it states ("2", "two times") is the true one
"""

from __future__ import annotations

import re
from collections import Counter

from ..synth.timeline import COLORS, NEEDLE_SHAPES, SHAPES

WHEN_TOLERANCE_S = 1.0
_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}  # issue #27: "when" answers within +-1 s of the truth
_NUM = r"(\d+(?:\.\d+)?)"


def read_seconds(text: str) -> float | None:
    """The first time an answer states, in seconds: "4.5 seconds", "at 4.5s", "1:05" / "0:04.5"
    (minutes:seconds), "4.5". None when it states none."""
    t = text.strip().lower()
    m = re.search(r"(\d+):(\d{1,2}(?:\.\d+)?)", t)
    if m:
        return int(m.group(1)) * 60 + float(m.group(2))
    m = re.search(_NUM + r"\s*(?:seconds?|secs?|s)\b", t) or re.search(_NUM, t)
    return float(m.group(1)) if m else None


def _simplify(s: str) -> str:
    s = re.sub(r"[^\w\s]", " ", s.lower())
    s = re.sub(r"\b(the|a|an)\b", " ", s)
    return " ".join(s.split())


def caption_events(text: str) -> Counter:
    """The events a description states, one per sentence, normalised ("the blue circle turns orange."
    -> "blue circle turns orange"); sentences that state no event of the synthetic grammar are kept as
    they are and can only lower precision."""
    events = Counter()
    for sentence in re.split(r"[.\n;!]+", text):
        s = _simplify(sentence)
        if s:
            events[s] += 1
    return events


def score_caption(output: str, reference: str) -> dict:
    got, ref = caption_events(output), caption_events(reference)
    hit = sum((got & ref).values())
    return {"events_matched": hit, "events_reference": sum(ref.values()), "events_output": sum(got.values()),
            "recall": round(hit / max(1, sum(ref.values())), 4), "precision": round(hit / max(1, sum(got.values())), 4)}


def score_open(family: str, output: str, reference: str, record: dict) -> dict:
    """{"correct": bool | None, ...family metrics} for one open answer; ``record`` is the openqa.json
    row (it holds ``answer_seconds`` for "when")."""
    output = output or ""
    if family == "when":
        said = read_seconds(output)
        truth = float(record["answer_seconds"])
        err = None if said is None else round(abs(said - truth), 3)
        return {"correct": err is not None and err <= WHEN_TOLERANCE_S, "seconds": said, "abs_err_s": err}
    if family == "caption":
        return {"correct": None, **score_caption(output, reference)}
    ref, out = _simplify(reference), _simplify(output)
    if family == "count":
        nums = re.findall(rf"\b(\d+|{'|'.join(_WORDS)})\b", out)
        return {"correct": bool(nums) and str(_WORDS.get(nums[0], nums[0])) == ref}
    named = _objects(out)  # every "colour shape" the answer names: a hedge naming two is wrong
    return {"correct": bool(ref) and re.search(rf"\b{re.escape(ref)}\b", out) is not None
            and named <= _objects(ref)}


def _objects(text: str) -> set[str]:
    shapes = "|".join(SHAPES + NEEDLE_SHAPES)
    return set(re.findall(rf"\b(?:{'|'.join(COLORS)})\s+(?:{shapes})\b", text))


def summarise(records: list[dict]) -> dict:
    """The open-answer figures of an evaluation: per family n and accuracy; for "when" the share within
    the tolerance and the median error; for captions micro-averaged event recall and precision."""
    out: dict = {}
    fams: dict[str, list[dict]] = {}
    for r in records:
        fams.setdefault(r["task"], []).append(r)
    for fam, rs in sorted(fams.items()):
        if fam == "caption":
            m = sum(r.get("events_matched", 0) for r in rs)
            out[fam] = {"n": len(rs), "event_recall": round(m / max(1, sum(r.get("events_reference", 0) for r in rs)), 4),
                        "event_precision": round(m / max(1, sum(r.get("events_output", 0) for r in rs)), 4)}
            continue
        d = {"n": len(rs), "accuracy": round(sum(bool(r.get("correct")) for r in rs) / len(rs), 4)}
        if fam == "when":
            errs = sorted(r["abs_err_s"] for r in rs if r.get("abs_err_s") is not None)
            d.update(within_s=WHEN_TOLERANCE_S, unparsed=sum(r.get("seconds") is None for r in rs),
                     median_abs_err_s=errs[len(errs) // 2] if errs else None)
        out[fam] = d
    return out
