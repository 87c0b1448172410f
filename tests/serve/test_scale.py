"""Issue #26, our server at scale, over a real socket: many clients on different videos batched
at the decode step, decode and encode outside the model lock, a bounded store that deletes
what refused requests wrote."""

import base64
import concurrent.futures as cf
import os
import threading
import time

import httpx
import pytest

from kangaroo.serve.testserver import LoopbackServer


def _body(url, question, max_tokens=6, **extra):
    return {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                      {"type": "text", "text": question}]}],
            "max_tokens": max_tokens, "temperature": 0, "frames": 2, **extra}


@pytest.fixture(scope="module")
def tiny_videos(tmp_path_factory):
    """16 different short videos (64x48, 1 s)."""
    from kangaroo.synth import SynthConfig, make_timeline, write_video

    out = tmp_path_factory.mktemp("tiny_videos")
    return [write_video(make_timeline(SynthConfig(duration=1.0, fps=4.0, width=64, height=48, num_objects=1), 500 + i),
                        out / f"v{i}.mp4") for i in range(16)]


def _server(chat, store, roots, **kw):
    from kangaroo.serve import ServeConfig, build_app

    cfg = ServeConfig(model="kangaroo-test", store=str(store), allowed_roots=[str(r) for r in roots],
                      max_frames=8, default_frames=2, **{"max_new_tokens": 16, **kw})
    return LoopbackServer(build_app(cfg, chat=chat))


def test_sixteen_clients_on_different_videos(serve_chat, tiny_videos, tmp_path):
    """16 concurrent clients, each on its own video: no errors, p95 latency reported, answers batched
    across clients at the decode step and equal to the one-at-a-time greedy answers."""
    urls = ["file://" + str(v) for v in tiny_videos]
    with _server(serve_chat, tmp_path / "store", [os.path.dirname(tiny_videos[0])]) as srv:
        def one(i):
            t0 = time.perf_counter()
            r = httpx.post(srv.url + "/v1/chat/completions", json=_body(urls[i], f"What is shown? ({i})"), timeout=300)
            return r, time.perf_counter() - t0

        engine = srv.server.config.app.state.engine
        with cf.ThreadPoolExecutor(16) as ex:
            with engine.model_lock:  # the model busy (as with a long answer) while the 16 arrive and are encoded
                futs = [ex.submit(one, i) for i in range(16)]
                for _ in range(1200):  # all 16 encoded and waiting for the model (one taken by the scheduler)
                    if engine.stats["visual_cache_misses"] >= 16 and engine.batcher.inbox.qsize() >= 15:
                        break
                    time.sleep(0.05)
            results = [f.result() for f in futs]
        errors = [r.status_code for r, _ in results if r.status_code != 200]
        lat = sorted(t for _, t in results)
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        print(f"16 clients: 0 errors expected, got {len(errors)}; latency p50 {lat[8]:.2f} s, p95 {p95:.2f} s")
        assert errors == []
        body = [r.json() for r, _ in results]
        assert max(b["kangaroo"]["batch"] for b in body) >= 15  # 16 different videos decoded in one batch
        health = httpx.get(srv.url + "/health").json()
        print(f"largest decode batch: {health['largest_batch']}")
        assert health["queued"] == 0 and health["largest_batch"] >= 15
    # the same questions one at a time, through the chat API: batching changes no greedy answer
    from kangaroo.model.chat import GenerationConfig
    from kangaroo.video import SamplingConfig

    for i in (0, 5, 15):
        conv = serve_chat.start(str(tiny_videos[i]), SamplingConfig(num_frames=2))
        solo = serve_chat.ask(conv, f"What is shown? ({i})", GenerationConfig.greedy(6))
        assert body[i]["choices"][0]["message"]["content"] == solo
        assert body[i]["usage"]["completion_tokens"] == conv.stats[-1]["completion_tokens"]


def test_a_short_answer_is_not_held_up_by_a_long_one(serve_chat, tiny_videos, tmp_path):
    """A long streamed answer on one video and, while it streams, a short question on another: the short
    one joins the running batch and finishes while the long one is still streaming."""
    with _server(serve_chat, tmp_path / "store", [os.path.dirname(tiny_videos[0])], max_new_tokens=400) as srv:
        events, lock = [], threading.Lock()
        started = threading.Event()

        def long():
            body = _body("file://" + str(tiny_videos[1]), "Describe everything.", max_tokens=400, stream=True)
            with httpx.stream("POST", srv.url + "/v1/chat/completions", json=body, timeout=300) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {") and '"content"' in line:
                        started.set()
            with lock:
                events.append("long done")

        t = threading.Thread(target=long)
        t.start()
        assert started.wait(120)
        r = httpx.post(srv.url + "/v1/chat/completions", json=_body("file://" + str(tiny_videos[2]), "Colour?",
                                                                       max_tokens=2), timeout=300)
        with lock:
            events.append("short done")
        t.join()
    assert r.status_code == 200
    if r.json()["choices"][0]["finish_reason"] == "length":  # it ran its two tokens beside the long answer
        assert r.json()["kangaroo"]["batch"] >= 2
    assert events[0] == "short done", events


def test_decode_and_encode_do_not_wait_for_the_model(serve_chat, tiny_videos, tmp_path):
    """With the LLM's lock held (another request generating), a new video is still decoded and encoded
    (the visual cache fills); its answer comes once the lock is free."""
    with _server(serve_chat, tmp_path / "store", [os.path.dirname(tiny_videos[0])]) as srv:
        engine = srv.server.config.app.state.engine
        before = httpx.get(srv.url + "/health").json()["visual_cache_misses"]
        box = {}
        with engine.model_lock:
            t = threading.Thread(target=lambda: box.setdefault("r", httpx.post(
                srv.url + "/v1/chat/completions", json=_body("file://" + str(tiny_videos[3]), "What?"), timeout=300)))
            t.start()
            for _ in range(600):  # the encode finishes while we hold the model
                if httpx.get(srv.url + "/health").json()["visual_cache_misses"] > before:
                    break
                time.sleep(0.05)
            assert httpx.get(srv.url + "/health").json()["visual_cache_misses"] == before + 1
            assert "r" not in box  # no answer while the model is held
        t.join()
        assert box["r"].status_code == 200


def test_refused_data_and_uploads_leave_nothing_in_the_store(serve_chat, tiny_videos, tmp_path):
    store = tmp_path / "store"
    with _server(serve_chat, store, [os.path.dirname(tiny_videos[0])]) as srv:
        junk = "data:video/mp4;base64," + base64.b64encode(b"not a video at all" * 50).decode()
        r = httpx.post(srv.url + "/v1/chat/completions", json=_body(junk, "What?"), timeout=60)
        assert r.status_code == 400 and "error" in r.json()
        assert [n for n in os.listdir(store) if n.startswith("file-")] == []
        r = httpx.post(srv.url + "/v1/files", files={"file": ("x.mp4", b"\x00\x01garbage" * 100, "video/mp4")})
        assert r.status_code == 400 and "error" in r.json()
        assert [n for n in os.listdir(store) if n.startswith("file-")] == []
        # a good video's data: URL refused for its context length: deleted too
        good = "data:video/mp4;base64," + base64.b64encode(open(tiny_videos[4], "rb").read()).decode()
        r = httpx.post(srv.url + "/v1/chat/completions", json=_body(good, "x " * 9000), timeout=60)
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        assert [n for n in os.listdir(store) if n.startswith("file-")] == []
        # an accepted upload stays
        r = httpx.post(srv.url + "/v1/files", files={"file": ("v.mp4", open(tiny_videos[4], "rb").read(), "video/mp4")})
        assert r.status_code == 200
        assert len([n for n in os.listdir(store) if n.startswith("file-")]) == 1


def test_the_store_is_bounded_least_recently_used_first(serve_chat, tiny_videos, tmp_path):
    sizes = [os.path.getsize(v) for v in tiny_videos[:4]]
    budget = (sizes[0] + sizes[1] + sizes[2] + max(sizes) // 2) / 2**20  # room for three of them
    store = tmp_path / "store"
    with _server(serve_chat, store, [], store_max_mb=budget) as srv:
        ids = []
        for v in tiny_videos[:3]:
            ids.append(httpx.post(srv.url + "/v1/files", files={"file": ("v.mp4", open(v, "rb").read())}).json()["id"])
        assert httpx.get(f"{srv.url}/v1/files/{ids[0]}/content").status_code == 200  # file 0 used: 1 is now oldest
        ids.append(httpx.post(srv.url + "/v1/files", files={"file": ("v.mp4", open(tiny_videos[3], "rb").read())}).json()["id"])
        kept = {i: httpx.get(f"{srv.url}/v1/files/{i}/content").status_code for i in ids}
        assert kept == {ids[0]: 200, ids[1]: 404, ids[2]: 200, ids[3]: 200}
        health = httpx.get(srv.url + "/health").json()
        assert health["store_evicted"] == 1 and health["store_bytes"] <= budget * 2**20
        r = httpx.post(srv.url + "/v1/chat/completions", json=_body(f"kangaroo-file://{ids[1]}", "What?"))
        assert r.status_code == 404 and "upload it" in r.json()["error"]["message"]


def test_seeded_sampling_is_reproducible_in_a_batch(server, synth_video):
    body = _body("file://" + synth_video, "Say something.", max_tokens=8, temperature=1.0, seed=1234, frames=3)
    with cf.ThreadPoolExecutor(3) as ex:
        answers = [r.json()["choices"][0]["message"]["content"]
                   for r in ex.map(lambda _: httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120),
                                   range(3))]
    assert len(set(answers)) == 1


def test_a_quantised_model_serves(tiny_chat_model, smol_tokenizer, tiny_videos, tmp_path):
    """int8 LLM behind the server: the answer over the socket is the quantised model's own greedy answer."""
    pytest.importorskip("torchao", reason="the optional quant extra")
    import copy

    from kangaroo.model.chat import GenerationConfig, KangarooChat
    from kangaroo.model.quantize import quantize_llm
    from kangaroo.video import SamplingConfig

    model = copy.deepcopy(tiny_chat_model)
    assert quantize_llm(model, "int8")["layers"] > 0
    chat = KangarooChat(model, smol_tokenizer)
    with _server(chat, tmp_path / "store", [os.path.dirname(tiny_videos[0])]) as srv:
        r = httpx.post(srv.url + "/v1/chat/completions", json=_body("file://" + str(tiny_videos[6]), "What?"), timeout=120)
    assert r.status_code == 200
    conv = chat.start(str(tiny_videos[6]), SamplingConfig(num_frames=2))
    assert r.json()["choices"][0]["message"]["content"] == chat.ask(conv, "What?", GenerationConfig.greedy(6))


def test_the_scale_bench_runs_both_designs(serve_chat, tiny_videos):
    """``kangaroo bench serve_scale``'s runner on the tiny model: both designs answer every client, timed."""
    from kangaroo.serve.bench_scale import _run

    paths = [str(v) for v in tiny_videos[:5]]
    before = _run(serve_chat, paths, True, 4, 2, 3)
    after = _run(serve_chat, paths, False, 4, 2, 3)
    assert before["errors"] == after["errors"] == 0
    assert before["latency_p95_s"] > 0 and after["latency_p95_s"] > 0 and after["tokens_per_s"] > 0
    assert before["largest_batch"] <= 1  # the old design never batches streams
