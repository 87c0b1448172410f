"""The continuous batcher and the store, below the socket: rows joining a running batch at any
step and leaving it change no greedy answer; the store never evicts a file being decoded.

The deterministic tests drive the batcher by hand (``start=False``): which sequences join
together and at which step, rows of different lengths (left padding), a reused KV prefix,
retirement with the drop of all-padding lead columns. Every row's logits at every step are
checked against one forward pass of the whole sequence without any cache."""

import threading

import pytest
import torch

from kangaroo.model.chat import GenerationConfig
from kangaroo.serve.batcher import Batcher, Prefix, Sequence
from kangaroo.serve.store import Store
from kangaroo.video import SamplingConfig


class Recording(Batcher):
    """A batcher without its thread that keeps each row's logits [V] of every step."""

    def __init__(self, chat):
        super().__init__(chat, max_batch=8, start=False)
        self.logits: dict[int, list[torch.Tensor]] = {}
        self.widths: list[int] = []  # the batch's KV length after each step

    def _sample(self, logits, seqs):
        for row, s in zip(logits, seqs):
            self.logits.setdefault(id(s), []).append(row.double().clone())
        return super()._sample(logits, seqs)

    def drive(self, plan: dict[int, list[Sequence]]) -> None:
        """``plan[t]``: sequences prefilled (batch 1) and joined into the running batch before step t."""
        t = 0
        while self.active or any(k >= t for k in plan):
            joined = [s for s in plan.get(t, []) if self._prefill(s)]
            if joined:
                self._join(joined)
            if self.active:
                self._step()
                self.widths.append(0 if self.mask is None else self.mask.shape[1])
            t += 1


@torch.inference_mode()
def _reference(chat, s: Sequence, steps: int) -> torch.Tensor:
    """[steps, V]: the logits of each of the sequence's sampling steps, from one forward pass over its
    prompt and answer with no KV cache, no padding and no batch."""
    ids = (s.prompt + s.out)[: len(s.prompt) + steps - 1]
    out = chat.model(torch.tensor([ids]), media_embeds=s.visual, use_cache=False)
    return out["logits"][0, len(s.prompt) - 1:].double()


@pytest.fixture(scope="module")
def video_rows(serve_chat64, synth_video):
    return serve_chat64.encode(synth_video, SamplingConfig(num_frames=5))[0]


def _seq(chat, rows, question, n, prefix=None):
    return Sequence(chat.render([{"role": "user", "content": question, "video": rows is not None}], rows), rows,
                    GenerationConfig.greedy(n), prefix=prefix)


# logits leave the model in float32 (modeling.py): a float64 model's are float64 values rounded to float32,
# so two equal-to-1e-15 computations can still land one float32 ulp (~1e-7 here) apart
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-6), (torch.float32, 1e-5)])
def test_batched_logits_equal_unbatched_logits_at_every_step(serve_chat, serve_chat64, video_rows, dtype, tol):
    """Joins into a running batch at different steps, prompts of different lengths (left padding), a KV
    prefix reused from an earlier answer's batch row (cropped to the common prefix), rows retiring and
    the lead columns they leave dropped. float64: logits within 1e-6, every greedy token equal, and the
    answers those of transformers' ``generate`` alone. float32: logits within 1e-5 (the float noise of
    batching is ~3e-7) and the token equal wherever the top two are 10 tol apart."""
    chat = serve_chat64 if dtype == torch.float64 else serve_chat
    rows = video_rows.to(dtype)
    # an earlier answer on the video, decoded in a batch beside a shorter text-only row: its kept prefix
    # is a row of a padded batch
    first = Recording(chat)
    earlier = _seq(chat, rows, "What happens in the video first?", 6)
    first.drive({0: [_seq(chat, None, "Hi", 6)], 2: [earlier]})
    kept = earlier.future.result()["prefix"]
    assert kept.cache.get_seq_length() == len(kept.ids)

    b = Recording(chat)
    long_ = _seq(chat, rows, "Describe every object on screen, its colour and where it moves, in detail.", 5)
    text = _seq(chat, None, "Hi there", 10)
    reuse = _seq(chat, rows, "What happens in the video next?", 8, Prefix(kept.cache, kept.ids))
    late = _seq(chat, rows, "Which shape is largest?", 6)
    plan = {0: [long_], 2: [text, reuse], 6: [late]}
    b.drive(plan)
    seqs = [s for group in plan.values() for s in group]
    results = [s.future.result() for s in seqs]
    assert reuse.reused > len(kept.ids) // 2  # the video came from the earlier answer's KV
    assert max(r["batch"] for r in results) == 3 and b.active == [] and b.cache is None
    retire = len(b.logits[id(long_)]) - 2  # the step at which the long prompt left (its first token: its prefill)
    assert b.widths[retire] < b.widths[retire - 1]  # the columns only it used were dropped
    for s, r in zip(seqs, results):
        got = torch.stack(b.logits[id(s)])  # [steps, V]
        ref = _reference(chat, s, len(got))
        assert (got - ref).abs().max() < tol
        top = ref.topk(2).values
        sure = (top[:, 0] - top[:, 1]) > 10 * tol
        assert got.argmax(-1)[sure].tolist() == ref.argmax(-1)[sure].tolist()
        if dtype == torch.float64:
            assert bool(sure.all())
            solo = chat.generate_ids([s.prompt], s.visual, s.gen)[0][0]  # transformers' generate, alone
            assert s.out == solo and r["completion_tokens"] == len(solo)


def test_rows_that_join_mid_answer_get_their_solo_answers(serve_chat):
    chat = serve_chat
    prompts = [chat.render([{"role": "user", "content": q}], None) for q in
               ("Tell me a long story about a kangaroo and a shape.", "Hi", "What colour is the circle, and why?")]
    solo = [chat.generate_ids([p], None, GenerationConfig.greedy(n))[0][0] for p, n in zip(prompts, (40, 5, 12))]
    b = Batcher(chat, max_batch=8)
    try:
        first = Sequence(prompts[0], None, GenerationConfig.greedy(40))
        seen = threading.Event()
        first.on_delta = lambda d: seen.set()
        f0 = b.submit(first)
        assert seen.wait(60)  # the long one is decoding; the others join its batch mid-answer
        rest = [b.submit(Sequence(p, None, GenerationConfig.greedy(n))) for p, n in zip(prompts[1:], (5, 12))]
        results = [f0.result(60)] + [f.result(60) for f in rest]
    finally:
        b.close()
    texts = [chat.tok.decode(s, skip_special_tokens=True).strip() for s in solo]
    assert [r["answer"] for r in results] == texts
    assert [r["completion_tokens"] for r in results] == [len(s) for s in solo]
    assert max(r["batch"] for r in results) >= 2
    # the kept prefix of a finished row is its own KV, without the batch's padding
    p = results[1]["prefix"]
    assert p.cache.get_seq_length() == len(p.ids) and p.ids[: len(prompts[1])] == prompts[1]


def test_a_cancelled_row_leaves_the_batch(serve_chat):
    chat = serve_chat
    b = Batcher(chat, max_batch=4)
    try:
        stop = threading.Event()
        seq = Sequence(chat.render([{"role": "user", "content": "Go on forever."}], None), None,
                       GenerationConfig.greedy(4000), stop_event=stop)
        seq.on_delta = lambda d: stop.set()  # the reader goes away at its first text
        res = b.submit(seq).result(60)
        assert res["finish_reason"] == "cancelled" and res["completion_tokens"] < 10
        assert b.active == [] and b.cache is None
    finally:
        b.close()


def test_the_store_never_evicts_a_pinned_file(tmp_path):
    store = Store(str(tmp_path), max_bytes=250)
    _, a, created = store.put(b"a" * 100)
    assert created and store.put(b"a" * 100)[2] is False  # the same bytes: stored once
    with store.pinned(a):
        _, b_, _ = store.put(b"b" * 100)
        _, c, _ = store.put(b"c" * 100)  # over the budget: b goes, not the pinned a
        assert (tmp_path / a.split("/")[-1]).exists() and not (tmp_path / b_.split("/")[-1]).exists()
        store.remove(a)  # held by a request: not removed
        assert (tmp_path / a.split("/")[-1]).exists()
    assert store.used_bytes <= 250
    reopened = Store(str(tmp_path), max_bytes=150)  # a restarted server with a smaller bound: oldest first
    assert reopened.used_bytes <= 150 and (tmp_path / c.split("/")[-1]).exists()


def test_min_tokens_masks_stop_tokens_until_that_many_are_written(serve_chat):
    """``min_new_tokens``: a stop token that would win is passed over (the next best is taken) while a
    row has written fewer; after that it stops as usual. The same rule as transformers' min_new_tokens."""
    chat = serve_chat
    b = Batcher(chat, start=False)
    stop = min(chat.stops)
    logits = torch.zeros(2, chat.model.config.text_config.vocab_size)
    logits[:, stop], logits[:, 7] = 5.0, 4.0
    early = Sequence([1], None, GenerationConfig(max_new_tokens=4, do_sample=False, min_new_tokens=2))
    plain = Sequence([1], None, GenerationConfig.greedy(4))
    assert b._sample(logits, [early, plain]) == [7, stop]
    early.out = [7, 7]  # two written: the stop token may win again
    assert b._sample(logits, [early, plain]) == [stop, stop]
    with pytest.raises(ValueError, match="min_new_tokens"):
        GenerationConfig(max_new_tokens=3, min_new_tokens=4)
    # end to end, batched against model.generate's own min_new_tokens (the tiny random model seldom
    # writes a stop token: the masking itself is checked above)
    prompt = chat.render([{"role": "user", "content": "Hi"}], None)
    free = chat.generate_ids([prompt], None, GenerationConfig.greedy(12))[0][0]
    n = len(free) + 3
    gen = GenerationConfig(max_new_tokens=n, do_sample=False, min_new_tokens=n)
    want = chat.generate_ids([prompt], None, gen)[0][0]
    b = Batcher(chat, max_batch=4)
    try:
        res = b.submit(Sequence(prompt, None, gen)).result(60)
    finally:
        b.close()
    assert res["completion_tokens"] == n == len(want) and res["finish_reason"] == "length"
    assert res["answer"] == chat.tok.decode(want, skip_special_tokens=True).strip()
