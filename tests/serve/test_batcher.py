"""The continuous batcher and the store, below the socket: rows joining a running batch at any
step and leaving it change no greedy answer; the store never evicts a file being decoded."""

import threading


from kangaroo.model.chat import GenerationConfig
from kangaroo.serve.batcher import Batcher, Sequence
from kangaroo.serve.store import Store


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
