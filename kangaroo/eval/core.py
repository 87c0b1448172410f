"""The one evaluation core: how a question about an encoded video is answered and read.

The harness (every benchmark), the needle suite, the demo and the lmms-eval backend all
call these, so a score means the same thing wherever it is printed:

- ``generate``: unconstrained greedy decoding of the benchmark's own prompt (no masking of
  the vocabulary to letters), the option read from the text by ``extract_choice``; an answer
  with no readable option is counted as unparsed (``pred`` None), not guessed; ``reply`` says
  what the reply consists of (``extract.REPLY_KINDS``: the letter alone, an option's text that
  agrees or disagrees with its letter, a text that is no option).
- ``likelihood``: each option's text scored as the whole reply (lmms-eval's
  ``multiple_choice``); the video's prefix is prefilled once for all questions about it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.chat import GenerationConfig, KangarooChat
from ..prompts import likelihood_prompt, mc_prompt, open_prompt
from .extract import extract_choice, reply_kind

SCORINGS = ("generate", "likelihood")
# A multiple-choice reply may give the option's text before its letter ("a yellow diamond flashes
# briefly (D)"): room for that, while a model that answers "B" stops at its end token anyway.
MC_MAX_NEW_TOKENS = 32


@dataclass
class Question:
    question: str
    candidates: list[str] | None = None  # None: open-ended
    subtitles: str | None = None

    def prompt(self, benchmark: str = "") -> str:
        """The prompt that asks for a generated answer (the benchmark's own MC template)."""
        if self.candidates is None:
            return open_prompt(self.question)
        return mc_prompt(self.question, self.candidates, benchmark, self.subtitles)


def generate_answers(kc: KangarooChat, rows, prompts: list[str], max_new_tokens: int = MC_MAX_NEW_TOKENS,
                     batch_size: int = 8) -> list[str]:
    """Greedy answers to single-round prompts about one encoded video (``rows``; None: no video)."""
    gen = GenerationConfig.greedy(max_new_tokens)
    out: list[str] = []
    for b in range(0, len(prompts), batch_size):
        out += kc.ask_batch(rows, prompts[b: b + batch_size], gen)
    return out


def likeliest(kc: KangarooChat, rows, questions: list[Question]) -> list[dict]:
    """The likeliest option of each question about one video: {"pred", "scores"}."""
    scores = kc.score_options_many(rows, [likelihood_prompt(q.question, q.subtitles) for q in questions],
                                   [q.candidates for q in questions])
    return [{"pred": max(range(len(sc)), key=sc.__getitem__), "scores": [round(x, 4) for x in sc]} for sc in scores]


def answer(kc: KangarooChat, rows, questions: list[Question], scoring: str = "generate", benchmark: str = "",
           max_new_tokens: int = MC_MAX_NEW_TOKENS, batch_size: int = 8) -> list[dict]:
    """Answer questions about one encoded video: per question {"output", "pred"} (+ "scores" by
    likelihood). ``pred`` is the chosen option's index (None when a generated answer names none);
    open-ended questions get their generated ``output`` only."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    results: list[dict | None] = [None] * len(questions)
    mc = [i for i, q in enumerate(questions) if q.candidates is not None]
    if scoring == "likelihood" and mc:
        for i, r in zip(mc, likeliest(kc, rows, [questions[i] for i in mc])):
            results[i] = {"output": questions[i].candidates[r["pred"]], **r}
    todo = [i for i, r in enumerate(results) if r is None]
    if todo:
        opens = [i for i in todo if questions[i].candidates is None]
        for group, n_new in (([i for i in todo if i not in opens], max_new_tokens), (opens, 128)):
            if not group:
                continue
            texts = generate_answers(kc, rows, [questions[i].prompt(benchmark) for i in group], n_new, batch_size)
            for i, text in zip(group, texts):
                q = questions[i]
                if q.candidates is None:
                    results[i] = {"output": text, "pred": None}
                else:
                    pred = extract_choice(text, q.candidates)
                    results[i] = {"output": text, "pred": pred, "reply": reply_kind(text, q.candidates, pred)}
    return results
