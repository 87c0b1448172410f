"""Streaming video sessions over HTTP (``kangaroo watch`` as a server resource).

    POST   /v1/sessions              {"source": url, "fps": 1, "max_frames": N, "policy": ..., "conversation": false,
                                      "idle_timeout_s": 10} -> {"id": "sess-...", "max_frames", ...}
    GET    /v1/sessions/{id}         frames held, seconds seen, whether the source ended, thinning counts
    POST   /v1/sessions/{id}/ask     {"question", "max_tokens", "temperature", "top_p", "seed"}
                                     -> {"answer", "seen_until", "frames", "ttft_s", "usage"}
    DELETE /v1/sessions/{id}         stops following the source and frees the session

The chat endpoint's rules hold: the source goes through the same ``MediaPolicy`` (file:// only
under the allowed roots, uploads by id, remote URLs only when allowed), answers are capped at
``max_new_tokens``, asks are admitted through the same bounded queue, and every model call (the
sessions' background encoding included) holds the engine's ``model_lock``. At most
``ServeConfig.max_sessions`` sessions live at once (429 beyond); errors are the OpenAI-shaped 4xx
bodies.

A session nobody uses for ``ServeConfig.session_idle_s`` (no create, GET or ask naming it, and no
ask running on it) expires: it stops following its source and its KV cache is freed; it is 404
afterwards. Expiry needs no thread per session: ``Sessions.expire`` runs before every create
(so a full server makes room first) and in one reaper thread for all sessions, which wakes every
quarter of the idle time (at most every 30 s) and is stopped with the app. (``idle_timeout_s`` of
a request is another thing: how long the *source* may bring no new data before it counts as ended.)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ..model.chat import ContextLengthError, GenerationConfig
from ..model.session import THINNING, WatchConfig, WatchSession
from .media import MediaError, resolve_video


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    fps: float = Field(default=1.0, gt=0, le=30)
    max_frames: int | None = Field(default=None, ge=1)
    policy: str = "every_other"
    conversation: bool = False
    idle_timeout_s: float = Field(default=10.0, gt=0, le=600)


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    question: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.6, ge=0, le=2)
    top_p: float = Field(default=0.9, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, lt=2**63)


@dataclass
class _Held:
    session: WatchSession | None  # None while it opens
    used: float  # the clock when a request last named it
    busy: int = 0  # asks running on it: never expired under them


class Sessions:
    """The live sessions of one engine, at most ``max_sessions``, each closed after ``idle_s`` unused."""

    def __init__(self, engine, max_sessions: int = 4, idle_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic):
        if max_sessions < 1 or not idle_s > 0:
            raise ValueError(f"need max_sessions >= 1 and idle_s > 0, got {max_sessions} and {idle_s}")
        self.engine, self.max_sessions, self.idle_s, self.clock = engine, max_sessions, idle_s, clock
        self.live: dict[str, _Held] = {}
        self.lock = threading.Lock()
        self.expired = 0  # sessions closed for idleness so far
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    def create(self, req: SessionRequest) -> tuple[str, WatchSession]:
        if req.policy not in THINNING:
            raise MediaError(400, f"policy must be one of {THINNING.names()}, got {req.policy!r}")
        path = resolve_video(self.engine.policy, req.source)
        self.expire()
        with self.lock:
            if len(self.live) >= self.max_sessions:
                raise MediaError(429, f"{len(self.live)} sessions are open (the limit, --max-sessions); DELETE one, "
                                      f"or retry once one has been idle for {self.idle_s:g} s")
            sid = f"sess-{uuid.uuid4().hex[:24]}"
            self.live[sid] = _Held(None, self.clock(), busy=1)  # reserved while it opens
        try:
            cfg = WatchConfig(fps=req.fps, max_frames=req.max_frames, policy=req.policy,
                              conversation=req.conversation, idle_timeout_s=req.idle_timeout_s)
            s = WatchSession(self.engine.chat, cfg, lock=self.engine.model_lock).open(path)
        except ValueError as e:
            with self.lock:
                self.live.pop(sid, None)
            raise MediaError(400, str(e)) from None
        except BaseException:
            with self.lock:
                self.live.pop(sid, None)
            raise
        with self.lock:
            self.live[sid] = _Held(s, self.clock())
        return sid, s

    def _held(self, sid: str) -> _Held:
        """The entry of a live, opened session, marked as used now (the caller holds the lock)."""
        h = self.live.get(sid)
        if h is None or h.session is None:
            raise MediaError(404, f"no session {sid!r} (it may have expired after {self.idle_s:g} s unused): "
                                  "create one with POST /v1/sessions")
        h.used = self.clock()
        return h

    def get(self, sid: str) -> WatchSession:
        with self.lock:
            return self._held(sid).session

    @contextlib.contextmanager
    def using(self, sid: str):
        """The session, not expired while the block runs (an ask), and used at its end too."""
        with self.lock:
            h = self._held(sid)
            h.busy += 1
        try:
            yield h.session
        finally:
            with self.lock:
                h.busy -= 1
                h.used = self.clock()

    def delete(self, sid: str) -> None:
        with self.lock:
            h = self.live.get(sid)
            if h is None or h.session is None:
                raise MediaError(404, f"no session {sid!r}")
            del self.live[sid]
        h.session.close()

    def expire(self) -> list[str]:
        """Close the sessions unused for ``idle_s`` (none with an ask running); their ids."""
        now = self.clock()
        with self.lock:
            old = [sid for sid, h in self.live.items() if not h.busy and now - h.used >= self.idle_s]
            gone = [self.live.pop(sid).session for sid in old]
            self.expired += len(old)
        for s in gone:
            s.close()  # stops following the source, frees the KV cache
        return old

    def start(self) -> None:
        """The one reaper thread (the app's startup)."""
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="kangaroo-session-reaper", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        while not self._stop.wait(min(self.idle_s / 4, 30.0)):
            self.expire()

    def close(self) -> None:
        """Stop the reaper and close every session (the app's shutdown)."""
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
        with self.lock:
            gone = [h.session for h in self.live.values() if h.session is not None]
            self.live.clear()
        for s in gone:
            s.close()


def mount_sessions(app, engine) -> Sessions:
    """Add the /v1/sessions routes to ``app`` (kangaroo/serve/app.py calls this; its lifespan starts and
    closes ``app.state.sessions``)."""
    cfg = engine.cfg
    sessions = Sessions(engine, cfg.max_sessions, cfg.session_idle_s)
    router = APIRouter()

    @router.post("/v1/sessions")
    async def create(req: SessionRequest):
        sid, s = await asyncio.to_thread(sessions.create, req)
        return {"id": sid, "object": "session", **s.state()}

    @router.get("/v1/sessions/{sid}")
    async def state(sid: str):
        return {"id": sid, "object": "session", **sessions.get(sid).state()}

    @router.post("/v1/sessions/{sid}/ask")
    async def ask(sid: str, req: AskRequest):
        gen = GenerationConfig(max_new_tokens=min(req.max_tokens or 512, cfg.max_new_tokens), temperature=req.temperature,
                               top_p=req.top_p, do_sample=req.temperature > 0, seed=req.seed)
        with sessions.using(sid) as s:
            engine.admit()
            try:
                r = await asyncio.to_thread(s.ask, req.question, gen)
            except ContextLengthError:
                raise
            except ValueError as e:
                raise MediaError(400, str(e)) from None
            finally:
                engine.release()
        return {"id": sid, "answer": r["answer"], "seen_until": r["seen_until"], "frames": r["frames"],
                "ttft_s": r["ttft_s"], "finish_reason": r["finish_reason"],
                "usage": {"prompt_tokens": r["prompt_tokens"], "completion_tokens": r["completion_tokens"],
                          "reused_tokens": r["reused_tokens"]},
                "source_error": str(s.error) if s.error else None}

    @router.delete("/v1/sessions/{sid}")
    async def delete(sid: str):
        await asyncio.to_thread(sessions.delete, sid)
        return {"id": sid, "object": "session", "deleted": True}

    app.include_router(router)
    app.state.sessions = sessions
    return sessions
