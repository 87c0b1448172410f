"""Two probes of how a model names the letter of a multiple-choice option (issue #27), text only.

    python scripts/letter_probes.py MODEL [--data data/smol/val_short] [-n 60]

fact: the question with its answer stated first ("Fact: red circle.\\n..."), answered by greedy
generation through the evaluation core: can the model find the letter of an answer it is told?
copy: the reply forced to start with the answer's text and " (", the next letter read from the
logits among the options' letters: can it copy the letter that stands before that text?
"""

import argparse
import collections
import json
import os

import torch

from kangaroo.eval import core
from kangaroo.model.chat import KangarooChat
from kangaroo.prompts import LETTERS, mc_prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--data", default="data/smol/val_short")
    ap.add_argument("-n", type=int, default=60)
    a = ap.parse_args()
    kc = KangarooChat.load(a.model)
    recs = json.load(open(os.path.join(a.data, "mcqa.json")))[: a.n]
    qs = [core.Question(f"Fact: {r['answer']}.\n{r['question']}", r["candidates"]) for r in recs]
    out = core.answer(kc, None, qs, "generate")
    fact = sum(o["pred"] == r["answer_index"] for o, r in zip(out, recs))
    copy = 0
    for r in recs:
        ids = kc.render([{"role": "user", "content": mc_prompt(r["question"], r["candidates"])}], None)
        ids += kc.tok.encode(f"{r['answer']} (", add_special_tokens=False)
        with torch.inference_mode():
            logits = kc.model(torch.tensor([ids], device=kc.device), logits_to_keep=1).logits[0, -1]
        cand = [kc.tok.encode(x, add_special_tokens=False)[0] for x in LETTERS[: len(r["candidates"])]]
        copy += int(torch.stack([logits[c] for c in cand]).argmax()) == r["answer_index"]
    print(json.dumps({"model": a.model, "questions": len(recs), "fact_right": fact, "copy_right": copy,
                      "fact_outputs": collections.Counter(o["output"] for o in out).most_common(4)}))


if __name__ == "__main__":
    main()
