"""The media placeholder tokens: one token id stands for each position of a video or image.

``input_ids`` are ordinary non-negative token ids. Where a video (or image) goes, the
prompt as written holds one placeholder token; the processor expands it to a run of that
token, one per embedding position the medium takes (its temporal slots, the markers and any
time labels), as vLLM's prompt replacement does, and the model writes the medium's block
(``<vi_start> G1 <eof> ... Gn <eov> <vi_end>``) into that run. The markers themselves stay
learned vectors outside the vocabulary (SPEC: the vocabulary was not enlarged).

Which token (the choice is made here, once, for every tokenizer):

- a tokenizer with reserved special tokens (Llama-3: ``<|reserved_special_token_0|>`` = 128002
  and ``_1|>`` = 128003) uses the first two of them, video then image: the vocabulary and the
  embedding table stay as released;
- otherwise (SmolLM2) two special tokens are added, ``<|kangaroo_video|>`` and
  ``<|kangaroo_image|>``. Their ids lie just past the embedding table; they are never embedded
  (the model replaces every placeholder position before the embedding lookup) and the LM head
  has no row for them, so they can never be generated. No embedding row changes.

User text is tokenized with ``split_special_tokens=True`` (``kangaroo.prompts``), so typing a
placeholder's text can never produce one.
"""

from __future__ import annotations

import re

ADDED = {"video": "<|kangaroo_video|>", "image": "<|kangaroo_image|>"}
_RESERVED = re.compile(r"^<\|reserved_special_token_(\d+)\|>$")


def media_token_strings(tokenizer) -> dict[str, str]:
    """{"video": token, "image": token} for this tokenizer (reserved tokens where it has them)."""
    reserved = sorted((int(m.group(1)), t) for t in tokenizer.get_vocab() if (m := _RESERVED.match(t)))
    if len(reserved) >= 2:
        return {"video": reserved[0][1], "image": reserved[1][1]}
    return dict(ADDED)


def ensure_media_tokens(tokenizer) -> dict[str, int]:
    """Make sure the tokenizer knows both placeholders (adding them if it has no reserved ones);
    returns {"video": id, "image": id}. Idempotent: the same ids every time for a tokenizer."""
    strings = media_token_strings(tokenizer)
    vocab = tokenizer.get_vocab()
    missing = [s for s in (strings["video"], strings["image"]) if s not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    ids = {k: tokenizer.convert_tokens_to_ids(s) for k, s in strings.items()}
    for k, i in ids.items():
        if i is None or i == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer cannot hold the {k} placeholder {strings[k]!r}")
    return ids
