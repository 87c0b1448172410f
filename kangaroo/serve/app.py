"""FastAPI app: OpenAI-compatible chat completions over videos, uploads, and the web page.

    GET  /health                 liveness + model name + cache/queue figures
    GET  /v1/models              the served model
    POST /v1/chat/completions    OpenAI chat format; content parts {"type": "text"} and
                                 {"type": "video_url", "video_url": {"url": ...}} or
                                 {"type": "image_url", ...} (a one-frame video); extra fields
                                 frames / fps / start / end / sampler ("uniform" or
                                 "events"); "stream": true for SSE
    POST /v1/files               multipart upload -> {"id": "file-..."}; use it as
                                 "kangaroo-file://file-..." in a video_url
    GET  /v1/files/{id}/content  the uploaded video (the web page plays it)
    GET  /                       the web chat page
    /v1/sessions ...             streaming video sessions over a growing file (sessions.py)

Every error is a 4xx JSON body {"error": {"message", "type", "code"}} saying what to
change; malformed JSON and wrong types never reach a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from typing import Literal, Union

from fastapi import FastAPI, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware

from ..model.chat import ContextLengthError, GenerationConfig
from ..video import COUNT_SAMPLERS, VideoError
from .engine import Engine
from .media import MediaError, store_bytes, upload_path
from .sessions import mount_sessions

STATIC = os.path.join(os.path.dirname(__file__), "static")


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class VideoURL(BaseModel):
    url: str


class VideoPart(BaseModel):
    type: Literal["video_url"]
    video_url: VideoURL


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: VideoURL  # an image is served as a one-frame video


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: Union[str, list[Union[TextPart, VideoPart, ImagePart]]]


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    min_tokens: int = Field(default=0, ge=0)  # vLLM's extra parameter: no stop token before this many
    temperature: float = Field(default=0.6, ge=0, le=2)
    top_p: float = Field(default=0.9, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, lt=2**63)  # torch's generator seed range
    stream_options: dict | None = None  # {"include_usage": true}: a last chunk with the usage
    frames: int | None = None
    fps: float | None = None
    sampler: Literal[COUNT_SAMPLERS] = "uniform"  # uniform | events (ours: part of `frames` on brief events)
    start: float | None = Field(default=None, ge=0)
    end: float | None = Field(default=None, gt=0)


def _error(status: int, message: str, code: str = "invalid_request") -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    headers = {"Retry-After": "2"} if status == 429 else None
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status,
                        headers=headers)


class BodyLimit(BaseHTTPMiddleware):
    """413 for bodies over the limit, by Content-Length before reading anything."""

    def __init__(self, app, json_limit: int, upload_limit: int):
        super().__init__(app)
        self.json_limit, self.upload_limit = json_limit, upload_limit

    async def dispatch(self, request: Request, call_next):
        limit = self.upload_limit if request.url.path == "/v1/files" else self.json_limit
        length = request.headers.get("content-length")
        if request.method == "POST" and length is None and request.url.path != "/v1/files":
            return _error(411, "send a Content-Length header", "length_required")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return _error(400, "malformed Content-Length")
            if n > limit:
                return _error(413, f"request body is {n} bytes; the limit is {limit}. "
                                   "Upload large videos to /v1/files and refer to them by id.", "too_large")
        return await call_next(request)


def split_messages(req: ChatRequest) -> tuple[str | None, list[dict]]:
    """(the video URL, plain-text messages). One video per conversation, in a user turn."""
    video, out = None, []
    for m in req.messages:
        if isinstance(m.content, str):
            out.append({"role": m.role, "content": m.content})
            continue
        texts = []
        for part in m.content:
            if isinstance(part, (VideoPart, ImagePart)):
                url = part.video_url.url if isinstance(part, VideoPart) else part.image_url.url
                if not url or not url.strip():
                    raise MediaError(400, "a video_url / image_url part has an empty url")
                if m.role != "user":
                    raise MediaError(400, "videos and images go in user messages")
                if video is not None and url != video:
                    raise MediaError(400, "one video or image per conversation is supported")
                video = url
            else:
                texts.append(part.text)
        out.append({"role": m.role, "content": "\n".join(texts)})
    if out[-1]["role"] != "user":
        raise MediaError(400, "the last message must be from the user")
    return video, out


def create_app(engine: Engine, model_name: str) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        # a request waits in a worker thread for its encode and its tokens; asyncio's default pool
        # (cores + 4 threads) would cap the requests in flight, and so the decode batch, far below
        # --max-queue
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(cfg.max_queue + 8, thread_name_prefix="kangaroo-request")
        asyncio.get_running_loop().set_default_executor(pool)
        app.state.sessions.start()  # the one thread that expires idle sessions
        yield
        app.state.sessions.close()
        engine.close()  # the batcher's thread and the decode pool
        pool.shutdown(wait=False)

    app = FastAPI(title="kangaroo", version="0.1.0", lifespan=lifespan)
    app.state.engine = engine
    cfg = engine.cfg
    app.add_middleware(BodyLimit, json_limit=cfg.max_request_bytes, upload_limit=cfg.max_upload_bytes)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", []) if x != "body")
        return _error(400, f"invalid request: {where}: {first.get('msg', 'malformed')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):  # FastAPI's own errors in the OpenAI shape too
        return _error(exc.status_code, str(exc.detail), "invalid_request" if exc.status_code < 500 else "server_error")

    @app.exception_handler(ContextLengthError)
    async def _context(request, exc: ContextLengthError):
        return _error(400, str(exc), "context_length_exceeded")

    @app.exception_handler(MediaError)
    async def _media(request, exc: MediaError):
        return _error(exc.status, exc.message)

    @app.exception_handler(VideoError)
    async def _video(request, exc: VideoError):
        return _error(400, f"the video could not be used: {exc.detail}", exc.reason)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "queued": engine.pending, **engine.stats,
                "store_bytes": engine.store.used_bytes, "store_evicted": engine.store.evicted,
                "decode_steps": engine.batcher.stats["steps"] if engine.batcher else None,
                "sessions": len(app.state.sessions.live), "sessions_expired": app.state.sessions.expired}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "kangaroo",
                                            "created": 0}]}

    @app.post("/v1/files")
    async def upload(file: UploadFile):
        data = await file.read(cfg.max_upload_bytes + 1)
        if len(data) > cfg.max_upload_bytes:
            return _error(413, f"upload exceeds {cfg.max_upload_bytes} bytes", "too_large")
        if not data:
            return _error(400, "empty upload")
        suffix = os.path.splitext(file.filename or "")[1].lower()
        suffix = suffix if suffix in (".mp4", ".mkv", ".webm", ".mov", ".avi") else ".mp4"
        fid, path, created = await asyncio.to_thread(store_bytes, engine.policy, data, suffix, engine.store)
        try:  # a refused upload (not a video or an image, too long) is deleted before the answer
            await asyncio.to_thread(engine.check_media, path)
        except BaseException:
            if created:
                engine.store.remove(path)
            raise
        return {"id": fid, "object": "file", "bytes": len(data), "filename": os.path.basename(file.filename or ""),
                "url": f"kangaroo-file://{fid}"}

    @app.get("/v1/files/{fid}/content")
    async def file_content(fid: str):
        path = upload_path(engine.policy, fid)
        engine.store.touch(path)
        return FileResponse(path, media_type="video/mp4")

    @app.get("/", response_class=HTMLResponse)
    async def page():
        with open(os.path.join(STATIC, "index.html"), encoding="utf-8") as f:
            return f.read()

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        if req.model not in (None, model_name):
            return _error(404, f"model {req.model!r} is not served here; use {model_name!r}", "model_not_found")
        t_arrival = time.perf_counter()
        video, messages = split_messages(req)
        sampling = engine.sampling(req.frames, req.fps, req.start, req.end, req.sampler)
        max_new = min(req.max_completion_tokens or req.max_tokens or 512, cfg.max_new_tokens)
        if req.min_tokens > max_new:
            return _error(400, f"min_tokens ({req.min_tokens}) exceeds the tokens this request may write ({max_new})")
        gen = GenerationConfig(max_new_tokens=max_new, temperature=req.temperature, top_p=req.top_p,
                               do_sample=req.temperature > 0, seed=req.seed, min_new_tokens=req.min_tokens)
        engine.admit()
        try:  # decoded and encoded outside the model; what cannot fit the context is refused before generation
            enc, cached = await asyncio.to_thread(engine.prepare, video, sampling, messages, gen)
        except BaseException:
            engine.release()
            raise
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        extra = {"cached_video": cached, "visual_tokens": enc.info["visual_tokens"] if enc else 0,
                 "frames": enc.frames if enc else []}
        if not req.stream and len(messages) == 1:  # single round: batched with same-video questions
            try:
                res = await asyncio.to_thread(engine.generate_batched, enc, messages[0]["content"], gen)
            finally:
                engine.release()
            return {"id": rid, "object": "chat.completion", "created": created, "model": model_name,
                    "choices": [{"index": 0, "finish_reason": res["finish_reason"],
                                 "message": {"role": "assistant", "content": res["answer"]}}],
                    "usage": _usage(res), "kangaroo": {**extra, "batch": res["batch"]}}
        if not req.stream:
            try:
                result = await asyncio.to_thread(engine.generate, enc, messages, gen, lambda d: None, t_arrival)
            finally:
                engine.release()
            return {"id": rid, "object": "chat.completion", "created": created, "model": model_name,
                    "choices": [{"index": 0, "finish_reason": result["finish_reason"],
                                 "message": {"role": "assistant", "content": result["answer"]}}],
                    "usage": _usage(result),
                    "kangaroo": {**extra, "ttft_s": result["ttft_s"], "reused_tokens": result["reused_tokens"]}}
        usage = bool((req.stream_options or {}).get("include_usage"))
        return StreamingResponse(_stream(engine, enc, messages, gen, rid, created, model_name, extra, t_arrival, usage),
                                 media_type="text/event-stream")

    mount_sessions(app, engine)  # /v1/sessions: streaming video sessions (sessions.py)
    return app


def _usage(res: dict) -> dict:
    """OpenAI's usage: real tokens (the prompt's visual positions included), not text chunks."""
    return {"prompt_tokens": res["prompt_tokens"], "completion_tokens": res["completion_tokens"],
            "total_tokens": res["prompt_tokens"] + res["completion_tokens"]}


async def _stream(engine: Engine, enc, messages, gen, rid, created, model_name, extra, t_arrival,
                  include_usage: bool = False):
    import threading

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()  # set when the client goes away: generation stops within a token

    def work():
        try:
            res = engine.generate(enc, messages, gen, lambda d: loop.call_soon_threadsafe(queue.put_nowait, ("d", d)),
                                  t_arrival, stop)
            loop.call_soon_threadsafe(queue.put_nowait, ("end", res))
        except Exception as e:  # reported in the stream: the status line is already sent
            loop.call_soon_threadsafe(queue.put_nowait, ("err", str(e)))

    def chunk(delta: dict, finish=None, **more) -> str:
        body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    task = loop.run_in_executor(None, work)
    try:
        yield chunk({"role": "assistant", "content": ""}, kangaroo=extra)
        while True:
            kind, val = await queue.get()
            if kind == "d":
                yield chunk({"content": val})
            elif kind == "err":
                yield f"data: {json.dumps({'error': {'message': val, 'type': 'server_error'}})}\n\n"
                break
            else:
                yield chunk({}, val["finish_reason"], kangaroo={"ttft_s": val["ttft_s"], "reused_tokens": val["reused_tokens"]})
                if include_usage:  # OpenAI's form: a last chunk with no choices and the usage
                    body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model_name,
                            "choices": [], "usage": _usage(val)}
                    yield f"data: {json.dumps(body)}\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:  # also when the client disconnects (the generator is closed or cancelled)
        stop.set()
        try:
            await asyncio.shield(task)
        finally:
            engine.release()
