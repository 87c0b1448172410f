"""Questions with ground truth, built from a ``Timeline``.

Families (``FAMILIES``): caption (what happens), appear_at (what is on screen at time
t), order (which came first), count (how many times), needle (what brief event
happened) and when (at what time X first appeared). Each yields multiple-choice
items in the shape of the multiple-choice video benchmarks (question, candidates,
answer, answer_index, video, evidence timestamps) and open-ended items; both derive
from the same facts so the two never disagree.
"""

from __future__ import annotations

import numpy as np

from ..prompts import LETTERS, mc_prompt  # noqa: F401  (the one multiple-choice prompt, re-exported)
from ..registry import Registry
from .timeline import COLORS, NEEDLE_SHAPES, SHAPES, Appearance, Timeline

FAMILIES: Registry = Registry("question family")


def article(name: str) -> str:
    """'a red circle', 'an orange square'."""
    return ("an " if name[:1] in "aeiou" else "a ") + name


def fmt_t(t: float) -> str:
    return f"{t:.1f}"


def _item(family, question, answer, candidates=None, evidence=(), **extra) -> dict:
    d = {"family": family, "question": question, "answer": answer, "evidence": [round(float(x), 3) for x in evidence]}
    if candidates is not None:
        d["candidates"] = candidates
        d["answer_index"] = candidates.index(answer)
    d.update(extra)
    return d


def _mc(rng, answer: str, pool: list[str], k: int = 4) -> list[str]:
    distractors = [p for p in dict.fromkeys(pool) if p != answer]
    rng.shuffle(distractors)
    cands = [answer] + distractors[: k - 1]
    rng.shuffle(cands)
    return cands


def _all_names() -> list[str]:
    return [f"{c} {s}" for s in SHAPES for c in COLORS]


def _regular(tl: Timeline):
    return [o for o in tl.objects if not o.needle]


@FAMILIES.register("caption")
def caption_items(tl: Timeline, rng) -> list[dict]:
    return [_item("caption", "Describe what happens in the video.", caption(tl), evidence=[e["t"] for e in tl.events])]


def caption(tl: Timeline) -> str:
    if tl.config.static:
        names = " and ".join(article(o.name) for o in tl.objects)
        return f"A still scene: {names} stay in place and nothing moves."
    parts = []
    for e in tl.events:
        if e["type"] == "appear":
            parts.append(f"{article(e['name']).capitalize()} appears.")
        elif e["type"] == "change":
            parts.append(f"The {e['name']} turns {e['to']}.")
        elif e["type"] == "leave":
            o = tl.objects[e["object"]]
            parts.append(f"The {o.color_at(o.t_out - 1e-6)} {o.shape} leaves.")
        elif e["type"] == "needle":
            parts.append(f"{article(e['name']).capitalize()} flashes briefly.")
        elif e["type"] == "cut":
            parts.append("The scene cuts.")
    return " ".join(parts) if parts else "Nothing happens."


@FAMILIES.register("appear_at")
def appear_at_items(tl: Timeline, rng) -> list[dict]:
    """At a time when exactly one regular object is on screen, which one is it?"""
    items = []
    for o in _regular(tl):
        if tl.config.static:
            break
        # The middle of the part of o's interval where it is alone and keeps one colour.
        lo, hi = o.t_in, o.t_out
        if o.change_t is not None:
            lo, hi = (lo, o.change_t) if o.change_t - lo >= hi - o.change_t else (o.change_t, hi)
        t = (lo + hi) / 2
        others = [x for x in tl.visible_at(t) if x is not o]
        if others or hi - lo < 4.0 / tl.config.fps:
            continue
        seen = f"{o.color_at(t)} {o.shape}"
        visible_names = {f"{x.color_at(t)} {x.shape}" for x in tl.visible_at(t)}
        pool = [n for n in _all_names() if n not in visible_names]
        q = f"Which object is on screen at {fmt_t(t)} seconds?"
        items.append(_item("appear_at", q, seen, _mc(rng, seen, pool), evidence=[lo, hi], time=round(t, 3)))
    return items


def near_names(objects: list[dict], t: float, exclude: set[str], k: int = 3) -> list[str]:
    """Up to ``k`` object names shown nearest in time to ``t`` in a timeline's ``objects`` (dicts, as
    in timelines.json), nearest first, none of ``exclude``: a regular object in each colour it takes
    (before and after a colour change), by the time from ``t`` to when it shows that colour. The
    hardest distractors for "which object is on screen at t?": what is on screen just before or after."""
    best: dict[str, float] = {}
    for d in objects:
        o = Appearance(**d)
        if o.needle:
            continue
        parts = [(o.t_in, o.t_out, o.color)] if o.change_t is None else \
            [(o.t_in, o.change_t, o.color), (o.change_t, o.t_out, o.change_color)]
        for a, b, color in parts:
            name = f"{color} {o.shape}"
            gap = 0.0 if a <= t < b else min(abs(t - a), abs(t - b))
            if name not in exclude and gap < best.get(name, float("inf")):
                best[name] = gap
    return sorted(best, key=lambda n: (best[n], n))[:k]


@FAMILIES.register("order")
def order_items(tl: Timeline, rng) -> list[dict]:
    firsts: dict[str, float] = {}
    for o in sorted(_regular(tl), key=lambda o: o.t_in):
        firsts.setdefault(o.name, o.t_in)
    if tl.config.static or len(firsts) < 2:
        return []
    names = list(firsts)
    pick = sorted(rng.choice(len(names), size=min(4, len(names)), replace=False))
    chosen = [names[i] for i in pick]
    answer = min(chosen, key=lambda n: firsts[n])
    cands = list(chosen)
    rng.shuffle(cands)
    q = "Which of these objects appears first in the video?"
    return [_item("order", q, answer, cands, evidence=[firsts[n] for n in chosen])]


@FAMILIES.register("count")
def count_items(tl: Timeline, rng) -> list[dict]:
    if tl.config.static:
        return []
    times: dict[str, list[float]] = {}
    for o in _regular(tl):
        times.setdefault(o.name, []).append(o.t_in)
    name = max(times, key=lambda n: (len(times[n]), -min(times[n])))
    n = len(times[name])
    answer = str(n)
    cands = [str(k) for k in range(1, 5)] if n <= 4 else [str(k) for k in range(n - 2, n + 2)]
    q = f"How many times does {article(name)} appear in the video?"
    return [_item("count", q, answer, cands, evidence=times[name], count=n)]


@FAMILIES.register("needle")
def needle_items(tl: Timeline, rng) -> list[dict]:
    needles = [o for o in tl.objects if o.needle]
    if not needles:
        return []
    o = needles[0]
    answer = f"{article(o.name)} flashes briefly"
    pool = [f"{article(c + ' ' + s)} flashes briefly" for s in NEEDLE_SHAPES for c in COLORS]
    q = "Something appears only briefly in the video. What is it?"
    return [_item("needle", q, answer, _mc(rng, answer, pool), evidence=[o.t_in, o.t_out], depth=round(
        (o.t_in + o.t_out) / 2 / tl.config.duration, 3))]


@FAMILIES.register("when")
def when_items(tl: Timeline, rng) -> list[dict]:
    """When does X first appear? Open answer in seconds; multiple choice over spread-out times."""
    if tl.config.static:
        return []
    D = tl.config.duration
    firsts: dict[str, float] = {}
    for o in sorted(_regular(tl), key=lambda o: o.t_in):
        firsts.setdefault(o.name, o.t_in)
    items = []
    for name, t in firsts.items():
        gap = D / 5
        grid = [g for g in np.arange(0.0, D, gap / 2) if abs(g - t) >= gap]
        if len(grid) < 3:
            continue
        answer = f"{fmt_t(t)} seconds"
        picks = rng.choice(len(grid), size=3, replace=False)
        cands = [answer] + [f"{fmt_t(grid[i])} seconds" for i in picks]
        rng.shuffle(cands)
        q = f"When does the {name} first appear?"
        items.append(_item("when", q, answer, cands, evidence=[t], answer_seconds=round(t, 3), tolerance_s=round(gap / 2, 3)))
    return items


def questions(tl: Timeline, seed: int, families: list[str] | None = None) -> list[dict]:
    """All items for one timeline; each has both ``candidates`` (MC) and a free-form answer."""
    rng = np.random.default_rng(seed)
    out = []
    for fam in families or FAMILIES.names():
        out.extend(FAMILIES.get(fam)(tl, rng))
    return out
