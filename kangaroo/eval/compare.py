"""Paired comparison of two evaluation runs on the same questions.

Two checkpoints scored on the same few hundred questions differ by a point or two; whether that is
more than noise depends on how many questions changed, not on the two accuracies. ``compare_runs``
matches the runs' prediction records by question id and counts the discordant pairs: ``gained``
(wrong in A, right in B) and ``lost`` (right in A, wrong in B). Under "no difference" each
discordant question is equally likely to go either way, so the exact two-sided binomial (sign)
test on them — McNemar's exact test — gives the p-value. Reported overall, per task and per group
(the finer buckets of ``results.json``).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict

from .harness import load_predictions


def sign_test(gained: int, lost: int) -> float:
    """Exact two-sided p-value that ``gained`` vs ``lost`` discordant pairs arose from a fair coin."""
    n = gained + lost
    if n == 0:
        return 1.0
    k = min(gained, lost)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _pairs_summary(pairs: list[tuple[bool, bool]]) -> dict:
    gained = sum(1 for a, b in pairs if not a and b)
    lost = sum(1 for a, b in pairs if a and not b)
    n = len(pairs)
    return {"n": n, "accuracy_a": round(sum(a for a, _ in pairs) / n, 4), "accuracy_b": round(sum(b for _, b in pairs) / n, 4),
            "gained": gained, "lost": lost, "p_value": round(sign_test(gained, lost), 4)}


def _settings(out: str) -> dict:
    path = os.path.join(out, "results.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f).get("settings", {})


def compare_runs(a: str, b: str) -> dict:
    """Compare the evaluation folders ``a`` and ``b`` (``kangaroo eval --out``) question by question."""
    recs = {}
    for name, out in (("a", a), ("b", b)):
        if not os.path.isdir(out):
            raise FileNotFoundError(f"{name}: no evaluation folder at {out}")
        rs = load_predictions(out)
        if not rs:
            raise ValueError(f"{name}: no predictions in {out} (run kangaroo eval --out {out} first)")
        if any("correct" not in r for r in rs):
            raise ValueError(f"{name}: {out} has open-ended records without a right/wrong score; "
                             "a paired comparison needs multiple-choice results")
        recs[name] = {r["qid"]: r for r in rs}
    common = [q for q in recs["a"] if q in recs["b"]]
    if not common:
        raise ValueError("the two runs share no question ids: were they run on the same benchmark and data?")
    pairs = [(bool(recs["a"][q]["correct"]), bool(recs["b"][q]["correct"])) for q in common]
    by_task, by_group = defaultdict(list), defaultdict(list)
    for q, pair in zip(common, pairs):
        by_task[recs["a"][q]["task"]].append(pair)
        g = recs["a"][q].get("group") or recs["b"][q].get("group")
        if g:
            by_group[g].append(pair)
    return {"a": os.path.abspath(a), "b": os.path.abspath(b), "settings_a": _settings(a), "settings_b": _settings(b),
            "only_in_a": len(recs["a"]) - len(common), "only_in_b": len(recs["b"]) - len(common),
            "overall": _pairs_summary(pairs),
            "per_task": {t: _pairs_summary(p) for t, p in sorted(by_task.items())},
            "per_group": {g: _pairs_summary(p) for g, p in sorted(by_group.items())}}


def format_compare(rep: dict) -> str:
    def label(path: str, st: dict) -> str:
        keys = ("benchmark", "model", "frames", "frames_per_slot", "sampler", "mc_scoring")
        return path + (" (" + ", ".join(f"{k} {st[k]}" for k in keys if k in st) + ")" if st else "")

    lines = [f"A: {label(rep['a'], rep['settings_a'])}", f"B: {label(rep['b'], rep['settings_b'])}"]
    if rep["only_in_a"] or rep["only_in_b"]:
        lines.append(f"(compared on the {rep['overall']['n']} shared questions; {rep['only_in_a']} only in A, "
                     f"{rep['only_in_b']} only in B)")
    lines += ["", "| | n | A | B | gained (A wrong, B right) | lost (A right, B wrong) | p (exact sign test) |",
              "|---|---|---|---|---|---|---|"]

    def row(name: str, s: dict) -> str:
        return (f"| {name} | {s['n']} | {s['accuracy_a']:.4f} | {s['accuracy_b']:.4f} | {s['gained']} | {s['lost']} "
                f"| {s['p_value']:.4g} |")

    lines.append(row("**overall**", rep["overall"]))
    lines += [row(t, s) for t, s in rep["per_task"].items()]
    lines += [row(g, s) for g, s in rep["per_group"].items()]
    return "\n".join(lines)
