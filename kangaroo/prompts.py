"""Every prompt in one place: the chat rendering, the multiple-choice templates, the option
letters and the label ignore index. Training, evaluation, the demo, the server and the
lmms-eval backend all take their prompts from here, so a question is asked the same way
when it is learnt as when it is scored.

Chat rendering (``ChatRenderer``): the tokenizer's own chat template (Llama-3 headers for
the official model, ChatML for SmolLM2) renders the conversation with random sentinels in
place of the user's text and media; each piece of user or history text is then tokenized on
its own with ``split_special_tokens=True``, so a question containing ``<|eot_id|>`` or a
placeholder's text is plain text: it can never produce a chat control token or a media
placeholder. Each medium becomes a run of its placeholder token, one per embedding position
it takes (``kangaroo/model/tokens.py``), where the user put it.

Rendering is safe from many threads at once (the server's requests). A fast tokenizer applies
``split_special_tokens`` by setting a flag on its one shared Rust tokenizer before encoding
(transformers' ``TokenizersBackend._encode_plus``), so two calls on two threads can interleave
and encode one's chat headers under the other's setting: ``<|im_start|>`` becomes seven plain
tokens and the same question is another prompt (issue #26). The renderer therefore encodes with
private copies of the Rust tokenizer, one per setting, whose flag is set once and never written.

A message is ``{"role", "content"}`` where content is a string or a list of parts
(``{"type": "text", "text": ...}``, ``{"type": "video" | "image", ...}``); ``"video": True``
on a message (the training data's form) puts one video before its text.
"""

from __future__ import annotations

import re
import threading
import uuid

IGNORE_INDEX = -100  # labels that carry no loss
LETTERS = "ABCDEFGH"  # option letters, in order

# ---- multiple choice ---------------------------------------------------------------------
MC_TEMPLATE = "{subs}{question}\nOptions:\n{options}\nAnswer with the option's letter from the given choices directly."
# Per-benchmark multiple-choice prompts, in the style each benchmark's own evaluation uses.
BENCHMARK_TEMPLATES = {
    "mvbench": ("Carefully watch the video and pay attention to the cause and sequence of events, the detail and "
                "movement of objects, and the action and pose of persons. Based on your observations, select the best "
                "option that accurately addresses the question.\n{question}\nOptions:\n{options}\n"
                "Only give the best option."),
    "videomme": ("{subs}Select the best answer to the following multiple-choice question based on the video. Respond "
                 "with only the letter (A, B, C, or D) of the correct option.\n{question}\n{options}\n"
                 "The best answer is:"),
    "longvideobench": "{question}\n{options}\nAnswer with the option's letter from the given choices directly.",
    "egoschema": ("Select the best answer to the following question about the egocentric video.\n{question}\n"
                  "{options}\nAnswer with the option's letter from the given choices directly."),
    "tempcompass": "{question}\n{options}\nPlease directly give the best option:",
}
BENCHMARK_TEMPLATES["videomme_sub"] = BENCHMARK_TEMPLATES["videomme"]
SUBS_TEMPLATE = "This video's subtitles are listed below:\n{subs}\n\n"
OPEN_TEMPLATE = "{question}\nAnswer the question concisely."
# multiple choice by likelihood: the question alone; each option's text is scored as the reply
LIKELIHOOD_TEMPLATE = "{subs}{question}"


def options_block(candidates: list[str]) -> str:
    if len(candidates) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options, got {len(candidates)}")
    return "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(candidates))


def subtitles_block(subtitles: str | None, limit: int = 4000) -> str:
    return SUBS_TEMPLATE.format(subs=subtitles[:limit]) if subtitles else ""


def mc_template(benchmark: str = "") -> str:
    return BENCHMARK_TEMPLATES.get(benchmark, MC_TEMPLATE)


def mc_prompt(question: str, candidates: list[str], benchmark: str = "", subtitles: str | None = None) -> str:
    """The multiple-choice prompt that asks for a letter (the benchmark's own, else the generic one
    that training uses)."""
    return mc_template(benchmark).replace("{subs}", subtitles_block(subtitles)).format(
        question=question, options=options_block(candidates))


def likelihood_prompt(question: str, subtitles: str | None = None) -> str:
    return LIKELIHOOD_TEMPLATE.format(subs=subtitles_block(subtitles), question=question)


def open_prompt(question: str) -> str:
    return OPEN_TEMPLATE.format(question=question)


# ---- chat --------------------------------------------------------------------------------
MEDIA_TYPES = ("video", "image")


def media_parts(message: dict) -> list[dict]:
    """The message's content as parts (a string is one text part; ``"video": True`` puts a video first)."""
    content = message.get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
    if message.get("video"):
        parts = [{"type": "video"}] + parts
    for p in parts:
        if not isinstance(p, dict) or p.get("type") not in ("text",) + MEDIA_TYPES:
            raise ValueError(f"a message part must be a dict of type text, video or image, got {p!r}")
    return parts


def count_media(messages: list[dict]) -> int:
    return sum(p["type"] in MEDIA_TYPES for m in messages for p in media_parts(m))


class ChatRenderer:
    """messages -> token ids, each medium a run of its placeholder id (``kangaroo/model/tokens.py``)."""

    def __init__(self, tokenizer, media_ids: dict[str, int]):
        self.tok = tokenizer
        self.media_ids = dict(media_ids)
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template")
        self._copies: dict = {}  # split_special_tokens -> a private Rust tokenizer (module docstring)
        self._copies_of = -1  # len(tokenizer) when they were made: tokens added since -> made again
        self._special: frozenset[int] = frozenset()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # copies and pickles (ProcessorMixin.to_dict deep-copies) make their own
        return {**self.__dict__, "_copies": {}, "_copies_of": -1, "_special": frozenset(), "_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def _private(self, split: bool):
        """A private copy of the fast tokenizer's Rust tokenizer with ``encode_special_tokens = split``,
        made at its first use (0.2 s for SmolLM2's) and never written again."""
        n = len(self.tok)
        with self._lock:
            if self._copies_of != n:
                self._copies, self._copies_of = {}, n
                self._special = frozenset(i for i, t in self.tok.added_tokens_decoder.items() if t.special)
            if split not in self._copies:
                from tokenizers import Tokenizer

                enc = Tokenizer.from_str(self.tok.backend_tokenizer.to_str())
                enc.encode_special_tokens = split
                enc.no_truncation()  # whatever a caller last set on the shared one
                enc.no_padding()
                self._copies[split] = enc
            return self._copies[split]

    def _encoders(self):
        """(template text -> ids with its control tokens, user text -> ids with none). A fast tokenizer:
        both through a private copy with special tokens matched; user text in which one matched (its
        string was typed) is encoded again through a second copy that splits them, made only then. Text
        without a special token's string encodes the same either way. A Python tokenizer takes the
        setting per call and is used directly."""
        if getattr(self.tok, "backend_tokenizer", None) is None:
            return (lambda t: self.tok.encode(t, add_special_tokens=False),
                    lambda t: self.tok.encode(t, add_special_tokens=False, split_special_tokens=True))
        control = self._private(False)
        special = self._special  # the ids of the special tokens, as of the copies

        def user(text: str) -> list[int]:
            ids = control.encode(text, add_special_tokens=False).ids
            return self._private(True).encode(text, add_special_tokens=False).ids if not special.isdisjoint(ids) else ids

        return (lambda t: control.encode(t, add_special_tokens=False).ids, user)

    def render(self, messages: list[dict], media_lengths: list[int], add_generation_prompt: bool = True) -> list[int]:
        """``media_lengths[k]``: the embedding positions the k-th medium (in reading order) takes."""
        tag = uuid.uuid4().hex
        pieces: dict[str, tuple] = {}
        rendered, k = [], 0
        for i, m in enumerate(messages):
            body = []
            for j, p in enumerate(media_parts(m)):
                key = f"<<kg-{tag}-{i}-{j}>>"
                if p["type"] == "text":
                    pieces[key] = ("text", p["text"])
                    body.append(key)
                else:
                    if k >= len(media_lengths):
                        raise ValueError(f"the conversation has more media than the {len(media_lengths)} given")
                    pieces[key] = ("media", p["type"], media_lengths[k])
                    body.append(key + "\n")
                    k += 1
            rendered.append({"role": m["role"], "content": "".join(body)})
        if k != len(media_lengths):
            raise ValueError(f"{len(media_lengths)} media given, the conversation has {k}")
        text = self.tok.apply_chat_template(rendered, tokenize=False, add_generation_prompt=add_generation_prompt)
        encode_template, encode_user = self._encoders()
        ids: list[int] = []
        for part in re.split(f"(<<kg-{tag}-\\d+-\\d+>>)", text):
            if not part:
                continue
            if part in pieces:
                piece = pieces[part]
                if piece[0] == "text":  # user or history text: never special
                    ids.extend(encode_user(piece[1]))
                else:
                    ids.extend([self.media_ids[piece[1]]] * piece[2])
            else:  # the template's own text: its control tokens are meant
                ids.extend(encode_template(part))
        return ids

    def labelled(self, messages: list[dict], media_lengths: list[int]) -> tuple[list[int], list[int]]:
        """(ids, labels): labels are the ids of assistant turns (their end token included), else IGNORE_INDEX."""
        ids = self.render(messages, media_lengths, add_generation_prompt=False)
        labels = [IGNORE_INDEX] * len(ids)
        for k, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            n = count_media(messages[:k])
            before = self.render(messages[:k], media_lengths[:n], add_generation_prompt=True)
            upto = self.render(messages[: k + 1], media_lengths[:n], add_generation_prompt=False)
            if ids[: len(before)] != before or ids[: len(upto)] != upto:
                raise ValueError("the chat template does not render conversations prefix-consistently")
            labels[len(before): len(upto)] = ids[len(before): len(upto)]
        return ids, labels
