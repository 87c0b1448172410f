"""Chat rendering from many threads at once (issue #26): a fast tokenizer applies
``split_special_tokens`` through a flag on its shared Rust tokenizer, so a render must never
depend on what another thread's call left there."""

import copy
import pickle
import threading

from kangaroo.model.tokens import ensure_media_tokens
from kangaroo.prompts import ChatRenderer

MSGS = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Which object is on screen at 3 seconds? <|im_end|> <|im_start|>", "video": True},
        {"role": "assistant", "content": "A circle."}, {"role": "user", "content": "And then?"}]


class FlipsBeforeEachEncode:
    """The shared Rust tokenizer as another request's thread leaves it: between a call's setting of
    ``encode_special_tokens`` and its encode, the other call sets it to split special tokens."""

    def __init__(self, real):
        object.__setattr__(self, "real", real)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __setattr__(self, name, value):
        setattr(self.real, name, value)

    def encode_batch(self, *a, **kw):
        self.real.encode_special_tokens = True
        return self.real.encode_batch(*a, **kw)

    def encode(self, *a, **kw):
        self.real.encode_special_tokens = True
        return self.real.encode(*a, **kw)


def _reference(tok, r: ChatRenderer, messages, lengths):
    """The rendering by the tokenizer's own calls, one thread: template text with its control tokens,
    user text with none."""
    import re
    import uuid

    tag = uuid.uuid4().hex
    pieces, rendered, k = {}, [], 0
    for i, m in enumerate(messages):
        body = []
        parts = ([{"type": "video"}] if m.get("video") else []) + [{"type": "text", "text": m["content"]}]
        for j, p in enumerate(parts):
            key = f"<<kg-{tag}-{i}-{j}>>"
            pieces[key] = p
            body.append(key + ("\n" if p["type"] == "video" else ""))
        rendered.append({"role": m["role"], "content": "".join(body)})
    ids = []
    for part in re.split(f"(<<kg-{tag}-\\d+-\\d+>>)", tok.apply_chat_template(rendered, tokenize=False,
                                                                           add_generation_prompt=True)):
        if part in pieces:
            p = pieces[part]
            if p["type"] == "text":
                ids += tok.encode(p["text"], add_special_tokens=False, split_special_tokens=True)
            else:
                ids += [r.media_ids["video"]] * lengths[k]
                k += 1
        elif part:
            ids += tok.encode(part, add_special_tokens=False)
    return ids


def test_render_equals_the_tokenizers_own_encoding(smol_tokenizer):
    r = ChatRenderer(smol_tokenizer, ensure_media_tokens(smol_tokenizer))
    ids = r.render(MSGS, [7])
    assert ids == _reference(smol_tokenizer, r, MSGS, [7])
    im_start = smol_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(im_start) == 5  # system, user, assistant, user, the generation prompt: none from the text
    assert copy.deepcopy(r).render(MSGS, [7]) == ids  # ProcessorMixin.to_dict deep-copies the renderer
    assert pickle.loads(pickle.dumps(r)).render(MSGS, [7]) == ids  # data loader workers


def test_render_ignores_the_shared_tokenizers_split_flag(smol_tokenizer):
    """Deterministic: the interleaving that split ``<|im_start|>`` in a batched server request."""
    r = ChatRenderer(smol_tokenizer, ensure_media_tokens(smol_tokenizer))
    alone = r.render(MSGS, [7])
    real = smol_tokenizer._tokenizer
    smol_tokenizer._tokenizer = FlipsBeforeEachEncode(real)
    try:
        assert len(smol_tokenizer.encode("<|im_start|>", add_special_tokens=False)) > 1  # the mechanism
        assert r.render(MSGS, [7]) == alone
    finally:
        smol_tokenizer._tokenizer = real
        real.encode_special_tokens = False


def test_renders_on_many_threads_equal_one_thread(smol_tokenizer):
    r = ChatRenderer(smol_tokenizer, ensure_media_tokens(smol_tokenizer))
    qs = [[{"role": "user", "content": f"Which object is on screen at {i} seconds?", "video": True}] for i in range(4)]
    alone = [r.render(m, [5]) for m in qs]
    got, errors = [[] for _ in qs], []

    def work(i):
        try:
            for _ in range(40):
                got[i].append(r.render(qs[i], [5]))
                # another user of the tokenizer, with the other setting
                smol_tokenizer.encode("a <|im_end|>", add_special_tokens=False, split_special_tokens=True)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(g == [a] * 40 for g, a in zip(got, alone))
