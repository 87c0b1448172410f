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


class Clock:
    """The sessions' clock, moved by the test: expiry never depends on how fast the machine is."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def idle_srv(serve_chat, live_dir, tmp_path_factory):
    from kangaroo.serve import ServeConfig, build_app

    cfg = ServeConfig(model="kangaroo-test", store=str(tmp_path_factory.mktemp("store")), allowed_roots=[str(live_dir)],
                      max_new_tokens=8, max_sessions=1, session_idle_s=0.2)
    app = build_app(cfg, chat=serve_chat)
    clock = app.state.sessions.clock = Clock()
    with LoopbackServer(app) as s:
        yield s, app.state.sessions, clock


def test_idle_sessions_expire_and_free_their_cache_and_the_limit_is_429(idle_srv, live_dir):
    srv, sessions, clock = idle_srv
    path = live_dir / "short.ts"
    w = BackgroundWriter(path, seconds=2, fps=4, delay=0.0)
    w.start()
    w.join()
    src = "file://" + str(path)
    r = post(srv, "/v1/sessions", source=src, idle_timeout_s=0.5)
    assert r.status_code == 200, r.text
    sid = r.json()["id"]
    full = post(srv, "/v1/sessions", source=src)  # --max-sessions 1
    assert full.status_code == 429 and full.headers["retry-after"]
    err = full.json()["error"]
    assert err["type"] == "invalid_request_error" and "--max-sessions" in err["message"]
    held = sessions.live[sid].session
    _until(lambda: httpx.get(f"{srv.url}/v1/sessions/{sid}").json()["ended"])
    assert held.memory_bytes() > 0  # the source's slots are in its KV cache

    clock.now = 0.15  # unused for less than the idle time: still there
    a = post(srv, f"/v1/sessions/{sid}/ask", question="What happens?", temperature=0, max_tokens=2)
    assert a.status_code == 200, a.text
    with sessions.using(sid):  # an ask running on it: never expired under it
        clock.now = 100.0
        assert sessions.expire() == []
    clock.now = 100.15  # its end counts as use
    assert sessions.expire() == []

    clock.now = 100.5  # idle: the reaper closes it
    _until(lambda: httpx.get(srv.url + "/health").json()["sessions"] == 0)
    assert httpx.get(srv.url + "/health").json()["sessions_expired"] == 1
    gone = httpx.get(f"{srv.url}/v1/sessions/{sid}")
    assert gone.status_code == 404 and "expired" in gone.json()["error"]["message"]
    assert post(srv, f"/v1/sessions/{sid}/ask", question="Still there?").status_code == 404
    assert held.cache is None and held.memory_bytes() == 0 and not held._thread.is_alive()  # freed

    sessions._stop.set()  # without the reaper: a create makes room itself
    sessions._reaper.join(10)
    r = post(srv, "/v1/sessions", source=src, idle_timeout_s=0.5)
    assert r.status_code == 200, r.text
    clock.now = 200.0
    r2 = post(srv, "/v1/sessions", source=src, idle_timeout_s=0.5)
    assert r2.status_code == 200, r2.text
    assert httpx.get(f"{srv.url}/v1/sessions/{r.json()['id']}").status_code == 404
    assert httpx.delete(f"{srv.url}/v1/sessions/{r2.json()['id']}").status_code == 200
