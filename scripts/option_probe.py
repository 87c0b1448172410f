"""Why multiple choice by generation trails likelihood (issue #27): each question four ways, one video encoding.

    python scripts/option_probe.py MODEL [--data data/smol/heldout_gen_short] [--frames 16] [--limit 200]
                                   [--tasks needle] [--out probe.jsonl]

question_rank  each option's text scored as the reply to the question alone (the harness's likelihood
               scoring, lmms-eval's multiple_choice): what the model knows, ranked over the options
listed_rank    each "text (letter)" reply scored under the multiple-choice prompt with the options listed
               (the reply format kangaroo-smol is trained on): the same ranking with the options in view
generated      the greedy reply to the multiple-choice prompt, read by the harness's extractor
open           the greedy reply to the question alone, counted right when it is the right option's text

Per family, the accuracy of each. question_rank above listed_rank means that listing the options
moves the model off what it knows; listed_rank above generated, that greedy decoding loses what the
ranking has. Rows go to ``--out`` (one JSON line per question) for a closer look.
"""

import argparse
import collections
import json

from tqdm import tqdm

from kangaroo.eval.benchmarks import BENCHMARKS
from kangaroo.eval.extract import extract_choice
from kangaroo.model.chat import GenerationConfig, KangarooChat
from kangaroo.prompts import LETTERS, likelihood_prompt, mc_prompt
from kangaroo.video.sampling import SamplingConfig

WAYS = ("question_rank", "listed_rank", "generated", "open")


def argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=xs.__getitem__)


def probe(kc: KangarooChat, items, frames: int, out: str | None) -> dict:
    by_video = collections.defaultdict(list)
    for it in items:
        by_video[it.video].append(it)
    right = collections.defaultdict(collections.Counter)
    f = open(out, "w") if out else None
    for video, its in tqdm(by_video.items(), desc="option probe", unit="video"):
        rows, _ = kc.encode(video, SamplingConfig(num_frames=frames))
        mc = [mc_prompt(i.question, i.candidates) for i in its]
        alone = [likelihood_prompt(i.question) for i in its]
        q_rank = kc.score_options_many(rows, alone, [i.candidates for i in its])
        l_rank = kc.score_options_many(rows, mc, [[f"{c} ({LETTERS[k]})" for k, c in enumerate(i.candidates)]
                                                  for i in its])
        gen = kc.ask_batch(rows, mc, GenerationConfig.greedy(32))
        opn = kc.ask_batch(rows, alone, GenerationConfig.greedy(32))
        for it, a, b, g, o in zip(its, q_rank, l_rank, gen, opn):
            ok = {"question_rank": argmax(a) == it.answer, "listed_rank": argmax(b) == it.answer,
                  "generated": extract_choice(g, it.candidates) == it.answer,
                  "open": o.strip().rstrip(".").lower() == it.candidates[it.answer].lower()}
            for fam in (it.task, "all"):
                right[fam]["n"] += 1
                right[fam].update(k for k, v in ok.items() if v)
            if f:
                f.write(json.dumps({"qid": it.qid, "task": it.task, "answer": it.answer, "candidates": it.candidates,
                                    "question_rank_scores": [round(x, 3) for x in a],
                                    "listed_rank_scores": [round(x, 3) for x in b], "generated_reply": g,
                                    "open_reply": o, "right": ok}) + "\n")
    if f:
        f.close()
    return {fam: {"n": c["n"], **{w: round(c[w] / c["n"], 3) for w in WAYS}} for fam, c in sorted(right.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--data", default="data/smol/heldout_gen_short")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--tasks", default=None, help="comma-separated families to keep (before --limit), as kangaroo eval's")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    kc = KangarooChat.load(a.model)
    items = BENCHMARKS.get("synthetic")(a.data)
    if a.tasks:
        items = [it for it in items if it.task in a.tasks.split(",")]
    items = items[: a.limit]
    table = probe(kc, items, a.frames, a.out)
    print("| family | n | " + " | ".join(WAYS) + " |")
    print("|---|---|" + "---|" * len(WAYS))
    for fam, r in table.items():
        print(f"| {fam} | {r['n']} | " + " | ".join(f"{r[w]:.3f}" for w in WAYS) + " |")


if __name__ == "__main__":
    main()
