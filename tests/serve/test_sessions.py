"""/v1/sessions over a real socket: a growing file, questions as it grows, the chat endpoint's rules."""

import threading
import time

import httpx
import pytest

from kangaroo.serve.testserver import LoopbackServer
from tests.video.growing_media import BackgroundWriter


@pytest.fixture(scope="module")
def live_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("live")


@pytest.fixture(scope="module")
def srv(serve_chat, live_dir, tmp_path_factory):
    from kangaroo.serve import ServeConfig, build_app

    cfg = ServeConfig(model="kangaroo-test", store=str(tmp_path_factory.mktemp("store")), allowed_roots=[str(live_dir)],
                      max_frames=32, default_frames=8, max_new_tokens=8)
    with LoopbackServer(build_app(cfg, chat=serve_chat)) as s:
        yield s


def post(srv, path, **body):
    return httpx.post(srv.url + path, json=body, timeout=120)


def _until(cond, timeout=120):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def test_a_session_follows_a_growing_file_and_matches_the_chat_endpoint_when_done(srv, live_dir):
    path = live_dir / "cam.ts"
    resume = threading.Event()
    w = BackgroundWriter(path, seconds=8, fps=4, delay=0.0, gate=(14, resume))  # waits after 3.25 s
    w.start()
    r = post(srv, "/v1/sessions", source="file://" + str(path), fps=1.0, idle_timeout_s=1.5)
    assert r.status_code == 200, r.text
    sid = r.json()["id"]
    try:
        _until(lambda: httpx.get(f"{srv.url}/v1/sessions/{sid}").json()["frames"] == 3)  # 0.5, 1.5, 2.5
        a = post(srv, f"/v1/sessions/{sid}/ask", question="What happens?", temperature=0, max_tokens=4)
        assert a.status_code == 200, a.text
        j = a.json()
        assert j["frames"] == 3 and j["seen_until"] == 2.5 and j["ttft_s"] > 0 and isinstance(j["answer"], str)
        assert j["usage"]["reused_tokens"] > 0
        resume.set()
        w.join()
        _until(lambda: httpx.get(f"{srv.url}/v1/sessions/{sid}").json()["ended"])
        st = httpx.get(f"{srv.url}/v1/sessions/{sid}").json()
        assert st["frames"] == 8 and st["end_reason"] == "no new data for 1.5s" and st["error"] is None
        done = post(srv, f"/v1/sessions/{sid}/ask", question="What happens?", temperature=0, max_tokens=4).json()
        assert done["frames"] == 8 and done["seen_until"] == 7.5
        msgs = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "file://" + str(path)}},
                                             {"type": "text", "text": "What happens?"}]}]
        chat = post(srv, "/v1/chat/completions", messages=msgs, fps=1.0, temperature=0, max_tokens=4).json()
        assert [f["t"] for f in chat["kangaroo"]["frames"]] == [i + 0.5 for i in range(8)]
        assert chat["choices"][0]["message"]["content"] == done["answer"]
    finally:
        resume.set()
        d = httpx.delete(f"{srv.url}/v1/sessions/{sid}")
    assert d.status_code == 200 and d.json()["deleted"] is True
    gone = post(srv, f"/v1/sessions/{sid}/ask", question="still there?")
    assert gone.status_code == 404 and "no session" in gone.json()["error"]["message"]


def test_session_requests_follow_the_chat_endpoint_rules(srv, live_dir, tmp_path):
    outside = tmp_path / "x.ts"
    outside.write_bytes(b"")
    r = post(srv, "/v1/sessions", source="file://" + str(outside))
    assert r.status_code == 403 and "allowed roots" in r.json()["error"]["message"]
    r = post(srv, "/v1/sessions", source="http://127.0.0.1/x.ts")
    assert r.status_code == 403 or r.status_code == 400
    ok = live_dir / "idle.ts"
    ok.write_bytes(b"")
    assert post(srv, "/v1/sessions", source="file://" + str(ok), policy="nope").status_code == 400
    big = post(srv, "/v1/sessions", source="file://" + str(ok), max_frames=10**6)
    assert big.status_code == 400 and "does not fit" in big.json()["error"]["message"]
    assert post(srv, "/v1/sessions", source="file://" + str(ok), fps=0).status_code == 400
    ids = []
    try:
        for _ in range(4):
            r = post(srv, "/v1/sessions", source="file://" + str(ok), idle_timeout_s=60)
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
        full = post(srv, "/v1/sessions", source="file://" + str(ok))
        assert full.status_code == 429
        blank = post(srv, f"/v1/sessions/{ids[0]}/ask", question="   ")
        assert blank.status_code == 400 and "empty" in blank.json()["error"]["message"]
        empty = post(srv, f"/v1/sessions/{ids[0]}/ask", question="Anything yet?", temperature=0, max_tokens=3)
        assert empty.status_code == 200 and empty.json()["frames"] == 0
    finally:
        for i in ids:
            httpx.delete(f"{srv.url}/v1/sessions/{i}")
    assert httpx.delete(f"{srv.url}/v1/sessions/sess-nope").status_code == 404
