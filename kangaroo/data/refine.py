"""Caption refinement (stage 9) and category balance (stage 10).

Refinement: split into sentences, strip boilerplate openers ("The video shows ..."),
drop a sentence whose word-set IoU with an earlier kept sentence reaches a threshold
(the paper's overlap test), and reject empty or degenerate (looping) captions.

Balance: each row gets a category (a given label, else the vocabulary category whose
words its caption mentions most), then rows are down-sampled to a target distribution.
Which rows survive depends only on a hash of the row id and the seed, never on the order
rows finished in, so a resumed run balances exactly like an uninterrupted one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re

from .config import CategoryConfig, RefineConfig

_SENT = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])\s*|\n+")
_CJK = "\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af"
_WORD = re.compile(f"[{_CJK}]|[^\\W{_CJK}]+(?:'[^\\W{_CJK}]+)?")  # a CJK character counts as a word


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.split(text or "") if s.strip()]


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def iou(a: str, b: str) -> float:
    sa, sb = set(words(a)), set(words(b))
    if not sa or not sb:
        return 0.0
    return len(sa & sb) / len(sa | sb)


def strip_boilerplate(s: str, openers: list[str]) -> str:
    low = s.lower()
    for o in sorted(openers, key=len, reverse=True):
        if low.startswith(o.lower()):
            rest = s[len(o):].lstrip(" ,:;-")
            rest = re.sub(r"^(that|how)\s+", "", rest)
            return rest[:1].upper() + rest[1:] if rest else ""
    return s


def refine_caption(text: str, cfg: RefineConfig) -> tuple[str, dict]:
    """(refined caption, stats). The caption is "" when it is rejected (stats["reason"] says why)."""
    kept: list[str] = []
    dropped = 0
    for s in sentences(text):
        s = strip_boilerplate(s, cfg.boilerplate)
        if not words(s):
            continue
        if any(iou(s, k) >= cfg.sentence_iou for k in kept):
            dropped += 1
            continue
        kept.append(s if s.endswith((".", "!", "?", "。", "！", "？")) else s + ".")
    out = "".join(k if i == 0 or kept[i - 1].endswith(("。", "！", "？")) else " " + k for i, k in enumerate(kept))
    w = words(out)
    stats = {"sentences_in": len(sentences(text)), "sentences_kept": len(kept), "repeats_dropped": dropped,
             "words": len(w)}
    if len(w) < cfg.min_words:
        return "", {**stats, "reason": "empty_caption" if not w else "short_caption"}
    if len(set(w)) / len(w) < cfg.min_unique_ratio:
        return "", {**stats, "reason": "degenerate_caption"}
    return out, stats


# ---- categories ------------------------------------------------------------------------------

def load_labels(path: str) -> dict[str, str]:
    """A JSON object / JSONL / CSV (source,category) mapping a source path or file name to a category."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".csv"):
        rows = list(csv.reader(text.splitlines()))
        if rows and [c.strip().lower() for c in rows[0][:2]] in (["source", "category"], ["path", "category"]):
            rows = rows[1:]
        return {r[0].strip(): r[1].strip() for r in rows if len(r) >= 2}
    text = text.strip()
    if text.startswith("{"):
        return {str(k): str(v) for k, v in json.loads(text).items()}
    out = {}
    for line in text.splitlines():
        if line.strip():
            r = json.loads(line)
            out[str(r.get("source") or r.get("path"))] = str(r["category"])
    return out


def categorize(row: dict, cfg: CategoryConfig, labels: dict[str, str]) -> tuple[str, str]:
    """(category, where it came from: "label" | "caption" | "default")."""
    src = row.get("source", "")
    for key in (src, os.path.basename(src)):
        if key in labels:
            return labels[key], "label"
    if row.get("label"):
        return str(row["label"]), "label"
    w = words(row.get("caption") or "")
    counts = {cat: sum(w.count(k) for k in kws) for cat, kws in cfg.vocabulary.items()}
    best = max(counts.items(), key=lambda kv: (kv[1], kv[0] == cfg.other), default=(cfg.other, 0))
    return (best[0], "caption") if best[1] > 0 else (cfg.other, "default")


def _rank(row_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest()


def balance(rows: list[dict], cfg: CategoryConfig) -> tuple[list[dict], list[dict], dict]:
    """(kept, dropped, per-category counts before/after) after down-sampling to ``cfg.target``.

    ``uniform``: every category is cut to the size of the smallest, unless ``max_share`` is
    set, in which case only categories above that share of the output are cut. A mapping
    gives each category its share; the largest output that respects every share is kept."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["category"], []).append(r)
    counts = {c: len(v) for c, v in by.items()}
    if not rows:
        return [], [], {"before": {}, "after": {}}
    if isinstance(cfg.target, dict):
        shares = {c: float(cfg.target.get(c, 0.0)) for c in by}
        total = sum(shares.values())
        if total <= 0:
            raise ValueError(f"category.target gives no share to any category present ({sorted(by)})")
        shares = {c: s / total for c, s in shares.items()}
        n_out = min((counts[c] / s for c, s in shares.items() if s > 0), default=0)
        quota = {c: int(n_out * s + 1e-9) for c, s in shares.items()}
    elif cfg.max_share is not None:
        quota = _cap_shares(counts, cfg.max_share)
    else:
        m = min(counts.values())
        quota = {c: m for c in counts}
    kept, dropped = [], []
    for c, rs in by.items():
        order = sorted(rs, key=lambda r: _rank(r["id"], cfg.seed))
        kept += order[:quota[c]]
        dropped += order[quota[c]:]
    return kept, dropped, {"before": counts, "after": {c: min(quota[c], counts[c]) for c in counts}}


def _cap_shares(counts: dict[str, int], max_share: float) -> dict[str, int]:
    """The largest quotas with no category above ``max_share`` of the total (water-filling)."""
    if max_share >= 1.0 or len(counts) * max_share < 1.0:
        return dict(counts)  # no cap, or a cap no distribution can meet: keep everything
    quota = dict(counts)
    for _ in range(len(counts) + 1):
        total = sum(quota.values())
        over = {c for c, q in quota.items() if q > max_share * total + 1e-9}
        if not over:
            break
        rest = sum(q for c, q in quota.items() if c not in over)
        # each capped category gets s*T where T = rest + |over|*s*T  =>  T = rest / (1 - |over|*s)
        t = rest / max(1e-9, 1.0 - len(over) * max_share)
        for c in over:
            quota[c] = min(counts[c], int(max_share * t))
    return quota
