"""Multiple-choice answer extraction that copes with what models really write.

Handles "B", "(B)", "B)", "B.", "The answer is (B).", "Answer: B", "Option B", "option d", "选项B",
"答案：B", full-width letters and brackets, lower case, and answers that give only the
option's text ("a dog", "The red circle"). Returns the option index or None; never
mistakes the "T" of "The correct answer..." for an option letter.
"""

from __future__ import annotations

import re
import unicodedata

from ..prompts import LETTERS as _LETTERS
# An option letter standing on its own: not part of a word.
_PATTERNS = [
    r"(?i:answer|option|choice|选项|答案)\s*(?i:is|是|为|:|：)?\s*[:：]?\s*[\(\[（【]?\s*([A-H])\s*[\)\]）】]?(?![A-Za-z])",
    # a lower-case letter right after "option"/"choice" ("option d", "choice (b) is right")
    r"(?i:option|choice|选项)\s*[:：]?\s*[\(\[（【]?\s*([a-h])(?![\w])",
    # ... or after "answer/option is", but only as the whole rest ("the answer is d."), never "is a cat"
    r"(?i:answer|option|choice)\s+(?i:is)\s*[:：]?\s*[\(\[（【]?\s*([a-h])\s*[\)\]）】]?\s*(?:$|[\.,;!])",
    r"^[\(\[（【]?\s*([A-H])\s*[\)\]）】\.:：,、]",  # "(B) ...", "B) ...", "B. ..." at the start
    r"^([A-H])$",  # just the letter
    r"[\(\[（【]\s*([A-Ha-h])\s*[\)\]）】]",  # "(B)" or "(b)" anywhere
    r"(?<![A-Za-z])([A-H])(?:\s*[\)\.:：]|\s*$)",  # "... B." / "... B)" / trailing letter
]


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def _simplify(s: str) -> str:
    s = re.sub(r"[^\w\s]", " ", _norm(s).lower())
    s = re.sub(r"\b(the|a|an)\b", " ", s)
    return " ".join(s.split())


def extract_choice(output: str, candidates: list[str]) -> int | None:
    """The index of the chosen option in ``candidates``, or None when no choice is readable."""
    text = _norm(output)
    if not text:
        return None
    n = len(candidates)
    for pat in _PATTERNS:
        for m in re.finditer(pat, text):
            idx = _LETTERS.index(m.group(1).upper())
            if idx < n:
                return idx
    # Only the option's text: the candidate whose text appears (longest match wins).
    named = named_option(text, candidates)
    if named is not None:
        return named
    # A lone lower-case letter ("b") as the whole answer.
    m = re.fullmatch(r"[\(\[]?([a-h])[\)\]\.]?", text)
    if m and _LETTERS.index(m.group(1).upper()) < n:
        return _LETTERS.index(m.group(1).upper())
    return None


# What a generated multiple-choice reply consists of, beside the option it is read as
# (``extract_choice``). A reply that writes an option's text and then a letter can fail in two
# different ways: the text is another option than the letter (a binding error) or no option at all
# (the model answered in its own words). Counting them apart tells a content error from a format one.
REPLY_KINDS = ("letter_only", "text_agrees", "text_disagrees", "text_no_option", "unparsed")
_FILLER = {"answer", "option", "choice", "is", "correct", "best", "选项", "答案", "答案是", "选项是", "是"}


def named_option(output: str, candidates: list[str]) -> int | None:
    """The option whose text the reply writes (the longest one that appears), or None."""
    low = f" {_simplify(output)} "
    hits = [(len(s), i) for i, s in ((i, _simplify(c)) for i, c in enumerate(candidates)) if s and f" {s} " in low]
    return max(hits)[1] if hits else None


def reply_kind(output: str, candidates: list[str], pred: int | None) -> str:
    """One of ``REPLY_KINDS`` for a generated reply read as option ``pred``."""
    if pred is None:
        return "unparsed"
    named = named_option(output, candidates)
    if named is not None:
        return "text_agrees" if named == pred else "text_disagrees"
    words = re.sub(r"(?<=[\u4e00-\u9fff])(?=[a-z0-9])|(?<=[a-z0-9])(?=[\u4e00-\u9fff])", " ", _simplify(output))
    rest = [w for w in words.split() if not (len(w) == 1 and w in "abcdefgh") and w not in _FILLER]
    return "text_no_option" if rest else "letter_only"
