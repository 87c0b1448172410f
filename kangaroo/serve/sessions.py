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
``max_sessions`` sessions live at once (429 beyond); errors are the OpenAI-shaped 4xx bodies.
"""

from __future__ import annotations

import asyncio
import threading
import uuid

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ..model.chat import ContextLengthError, GenerationConfig
from ..model.session import THINNING, WatchConfig, WatchSession
from .media import MediaError, resolve_video

MAX_SESSIONS = 4


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


class Sessions:
    """The live sessions of one engine."""

    def __init__(self, engine, max_sessions: int = MAX_SESSIONS):
        self.engine, self.max_sessions = engine, max_sessions
        self.live: dict[str, WatchSession] = {}
        self.lock = threading.Lock()

    def create(self, req: SessionRequest) -> tuple[str, WatchSession]:
        if req.policy not in THINNING:
            raise MediaError(400, f"policy must be one of {THINNING.names()}, got {req.policy!r}")
        path = resolve_video(self.engine.policy, req.source)
        with self.lock:
            if len(self.live) >= self.max_sessions:
                raise MediaError(429, f"{len(self.live)} sessions are open (the limit); DELETE one or retry later")
            sid = f"sess-{uuid.uuid4().hex[:24]}"
            self.live[sid] = None  # reserved while it opens
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
            self.live[sid] = s
        return sid, s

    def get(self, sid: str) -> WatchSession:
        s = self.live.get(sid)
        if s is None:
            raise MediaError(404, f"no session {sid!r}: create one with POST /v1/sessions")
        return s

    def delete(self, sid: str) -> None:
        with self.lock:
            s = self.live.pop(sid, None)
        if s is None:
            raise MediaError(404, f"no session {sid!r}")
        s.close()


def mount_sessions(app, engine, max_sessions: int = MAX_SESSIONS) -> Sessions:
    """Add the /v1/sessions routes to ``app`` (kangaroo/serve/app.py calls this)."""
    sessions = Sessions(engine, max_sessions)
    router = APIRouter()
    cfg = engine.cfg

    @router.post("/v1/sessions")
    async def create(req: SessionRequest):
        sid, s = await asyncio.to_thread(sessions.create, req)
        return {"id": sid, "object": "session", **s.state()}

    @router.get("/v1/sessions/{sid}")
    async def state(sid: str):
        return {"id": sid, "object": "session", **sessions.get(sid).state()}

    @router.post("/v1/sessions/{sid}/ask")
    async def ask(sid: str, req: AskRequest):
        s = sessions.get(sid)
        gen = GenerationConfig(max_new_tokens=min(req.max_tokens or 512, cfg.max_new_tokens), temperature=req.temperature,
                               top_p=req.top_p, do_sample=req.temperature > 0, seed=req.seed)
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
