"""The serving engine: one model, a bounded queue, a bounded store and two caches.

- Video decode runs in a worker pool (``decode_workers``) and the vision encode under its own
  lock (``vision_lock``): neither holds the LLM, so other requests keep generating tokens
  while a new video is decoded and encoded (docs/serving.md, "Concurrency").
- Token generation is continuously batched across clients (batcher.py): a request joins the
  running decode batch after its prefill and leaves it when it ends.
- Visual cache: (video content hash, sampling settings) -> visual rows + frame thumbnails,
  LRU within a byte budget. Another user asking about the same video pays nothing.
  Concurrent requests for the same uncached video wait for one encode (single flight).
- Prefix cache: per video, the last conversation's KV cache; a follow-up request (which,
  OpenAI style, re-sends the history) reuses the longest cached prefix.
- The store (store.py): uploads and data: URL videos, bounded (``store_max_mb``, least
  recently used deleted first); what a refused request wrote there is deleted before the
  error goes out.

Requests beyond ``max_queue`` waiting are refused with 429 and a Retry-After.
``legacy_lock=True`` is the design before issue #26 (decode, encode and generation of one
request at a time under one lock), kept as the baseline of ``kangaroo bench serve``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ..model.chat import Conversation, GenerationConfig, KangarooChat
from ..video import DecodeOptions, SamplingConfig, load_video, probe
from ..video.image import is_image_file, jpeg_data_url, load_image
from ..lru import LRUBytes
from ..video.identity import video_identity
from .batcher import Batcher, Sequence
from .media import MediaError, MediaPolicy, resolve, sha256_file
from .store import Store


@dataclass
class ServeConfig:
    model: str = "kangaroo-smol"
    host: str = "127.0.0.1"
    port: int = 8000
    store: str = ".kangaroo_serve"  # uploads and data: URL videos
    allowed_roots: list[str] = field(default_factory=list)
    allow_remote: bool = False
    remote_hosts: list[str] = field(default_factory=list)
    max_request_bytes: int = 64 * 1024 * 1024  # JSON bodies (data: URLs included)
    max_upload_bytes: int = 512 * 1024 * 1024
    max_frames: int = 160
    default_frames: int = 16
    max_duration_s: float = 3 * 3600.0
    max_new_tokens: int = 1024
    max_queue: int = 64
    visual_cache_mb: int = 1024
    prefix_cache_videos: int = 8
    store_max_mb: float | None = 4096  # uploads + data: URLs on disk; None: unbounded
    decode_workers: int = 4  # video decodes at once (outside the model)
    max_batch: int = 32  # sequences decoded together (continuous batching)
    max_sessions: int = 4  # streaming sessions (/v1/sessions) open at once; 429 beyond
    session_idle_s: float = 600.0  # a session unused this long is closed and its KV cache freed
    quantize: str | None = None  # "int8" / "int4": torchao weight-only quantisation of the LLM
    legacy_lock: bool = False  # the pre-#26 design: everything of one request under one lock (bench baseline)

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions (--max-sessions) must be at least 1, got {self.max_sessions}")
        if not self.session_idle_s > 0:
            raise ValueError(f"session_idle_s (--session-idle-s) must be above 0 seconds, got {self.session_idle_s}")


@dataclass
class Encoded:
    key: str
    rows: object  # torch.Tensor [V, d]
    info: dict
    frames: list[dict]  # [{"t": seconds, "thumb": data URL}]


class Engine:
    def __init__(self, cfg: ServeConfig, chat: KangarooChat):
        self.cfg, self.chat = cfg, chat
        self.policy = MediaPolicy(cfg.store, tuple(cfg.allowed_roots), cfg.allow_remote, tuple(cfg.remote_hosts),
                                  cfg.max_upload_bytes)
        self.store = Store(cfg.store, None if cfg.store_max_mb is None else int(cfg.store_max_mb * 1024 * 1024))
        self.model_lock = threading.Lock()  # the LLM: held by the batcher for each prefill and decode step
        self.vision_lock = threading.Lock()  # the vision tower: one encode at a time, beside generation
        self.decode_pool = ThreadPoolExecutor(max(1, cfg.decode_workers), thread_name_prefix="kangaroo-decode")
        self.batcher = None if cfg.legacy_lock else Batcher(chat, cfg.max_batch, self.model_lock)
        self.inflight: dict[str, Future] = {}  # video key -> its encode in progress (single flight)
        self.visual = LRUBytes(cfg.visual_cache_mb * 1024 * 1024)
        self.prefix: OrderedDict[str, object] = OrderedDict()  # video key -> Conversation (legacy) or Prefix
        self.prefix_lock = threading.Lock()
        self.pending = 0
        self.pending_lock = threading.Lock()
        self.stats = {"requests": 0, "visual_cache_hits": 0, "visual_cache_misses": 0, "largest_batch": 0}
        self.waiting_lock = threading.Lock()  # inflight and content_keys
        self.content_keys: OrderedDict[tuple, str] = OrderedDict()  # (identity, size, mtime) -> content hash key

    # ---- admission ------------------------------------------------------------------------
    def admit(self) -> None:
        with self.pending_lock:
            if self.pending >= self.cfg.max_queue:
                raise MediaError(429, f"the server is busy ({self.pending} requests queued); retry in a few seconds or raise --max-queue")
            self.pending += 1
            self.stats["requests"] += 1

    def release(self) -> None:
        with self.pending_lock:
            self.pending -= 1

    def close(self) -> None:
        """Stop the batcher and the decode pool (the app's shutdown)."""
        if self.batcher is not None:
            self.batcher.close()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)

    # ---- video ----------------------------------------------------------------------------
    def sampling(self, frames: int | None, fps: float | None, start: float | None, end: float | None,
                 sampler: str = "uniform") -> SamplingConfig:
        if frames is not None and not 1 <= frames <= self.cfg.max_frames:
            raise MediaError(400, f"frames must be between 1 and {self.cfg.max_frames}, got {frames}")
        if fps is not None and not 0 < fps <= 30:
            raise MediaError(400, f"fps must be in (0, 30], got {fps}")
        if fps is not None and sampler != "uniform":
            raise MediaError(400, f"fps and sampler={sampler!r} do not go together: give frames with that sampler")
        try:
            if fps is not None:
                return SamplingConfig(sampler="fps", fps=fps, min_frames=1, max_frames=self.cfg.max_frames,
                                      start=start, end=end)
            return SamplingConfig(sampler=sampler, num_frames=frames or self.cfg.default_frames, start=start, end=end)
        except ValueError as e:
            raise MediaError(400, str(e)) from None

    def content_key(self, path: str) -> str:
        """"file-" + the SHA-256 of the file's content (the key an upload of the same bytes gets), remembered
        per (video identity, size, mtime): a file asked about again is not read again; one that grew is."""
        st = os.stat(path)
        version = (video_identity(path), st.st_size, st.st_mtime_ns)
        with self.waiting_lock:
            key = self.content_keys.get(version)
        if key is None:
            key = "file-" + sha256_file(path)[:32]
            with self.waiting_lock:
                self.content_keys[version] = key
                while len(self.content_keys) > 4096:
                    self.content_keys.popitem(last=False)
        return key

    def prepare(self, url: str | None, sampling: SamplingConfig, messages: list[dict],
                gen: GenerationConfig) -> tuple[Encoded | None, bool]:
        """The request's video encoded (or None) once it is known to fit the context: (encoded, was it
        cached). A refused request deletes the file it wrote into the store before the error goes out."""
        if not url:
            self.check_fits(None, messages, gen)
            return None, False
        path, created = resolve(self.policy, url, self.store)
        try:
            with self.store.pinned(path):
                enc, cached = self.encode(path, sampling)
            self.check_fits(enc, messages, gen)
            return enc, cached
        except BaseException:
            if created:
                self.store.remove(path)
            raise

    def check_media(self, path: str) -> None:
        """MediaError / VideoError unless ``path`` is an image or a video within the duration limit."""
        if is_image_file(path):
            return
        info = probe(path)
        if info.duration > self.cfg.max_duration_s:
            raise MediaError(413, f"video is {info.duration:.0f}s long; the limit is {self.cfg.max_duration_s:.0f}s")

    def encode(self, path: str, sampling: SamplingConfig) -> tuple[Encoded, bool]:
        """Visual rows for the video at ``path`` under ``sampling``; (encoded, was it cached)."""
        name = os.path.basename(path)
        # files in the store are named by their content hash already; anything else is hashed once per
        # version of the file (its identity, size and mtime), not on every request
        digest = name.split(".")[0] if self.store.owns(path) else self.content_key(path)
        key = digest + ":" + json.dumps(sampling.to_dict(), sort_keys=True)
        hit = self.visual.get(key)
        if hit is not None:
            self.stats["visual_cache_hits"] += 1
            return hit, True
        with self.waiting_lock:  # single flight: one encode per key, the others wait for it
            fut, owner = self.inflight.get(key), False
            if fut is None:
                fut, owner = self.inflight.setdefault(key, Future()), True
        if not owner:
            enc = fut.result()
            self.stats["visual_cache_hits"] += 1
            return enc, True
        try:
            enc = self._encode(path, sampling, key)
            fut.set_result(enc)
            return enc, False
        except BaseException as e:
            fut.set_exception(e)
            raise
        finally:
            with self.waiting_lock:
                self.inflight.pop(key, None)

    def _decode(self, path: str, sampling: SamplingConfig):
        max_side = max(448, self.chat.preprocess.size * 2)
        if is_image_file(path):  # image_url parts, or an image sent as a video: a one-frame video
            return load_image(path, max_side)
        info = probe(path)
        if info.duration > self.cfg.max_duration_s:
            raise MediaError(413, f"video is {info.duration:.0f}s long; the limit is {self.cfg.max_duration_s:.0f}s")
        if sampling.start is not None and sampling.start >= info.duration:
            raise MediaError(400, f"start {sampling.start:g} s is past the end of the video ({info.duration:.1f} s)")
        return load_video(path, sampling, DecodeOptions(max_side=max_side))

    def _encode(self, path: str, sampling: SamplingConfig, key: str) -> Encoded:
        if self.cfg.legacy_lock:  # the baseline: decode and encode hold the model
            with self.model_lock:
                frames = self._decode(path, sampling)
                rows, meta = self.chat.encode(frames)
        else:  # decode in the pool, encode beside generation (the batcher holds model_lock, not vision_lock)
            frames = self.decode_pool.submit(self._decode, path, sampling).result()
            with self.vision_lock:
                rows, meta = self.chat.encode(frames)
        enc = Encoded(key, rows, meta, [{"t": round(float(t), 3), "thumb": jpeg_data_url(f, 96, 70)}
                                        for f, t in zip(frames.frames, frames.timestamps)])
        self.visual.put(key, enc, rows.numel() * rows.element_size() + 8192 * len(enc.frames))
        self.stats["visual_cache_misses"] += 1
        return enc

    # ---- generation -------------------------------------------------------------------------
    def _messages(self, enc: Encoded | None, messages: list[dict]) -> list[dict]:
        """The messages as rendered: the system prompt first, the video in the first user turn."""
        msgs = [dict(m) for m in messages]
        if self.chat.system_prompt and msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": self.chat.system_prompt})
        users = [m for m in msgs if m["role"] == "user"]
        users[0]["video"] = enc is not None
        return msgs

    def check_fits(self, enc: Encoded | None, messages: list[dict], gen: GenerationConfig) -> None:
        """ContextLengthError unless the rendered prompt plus ``gen.max_new_tokens`` fits the LLM's context."""
        rows = enc.rows if enc is not None else None
        self.chat.check_fits(len(self.chat.render(self._messages(enc, messages), rows)), gen.max_new_tokens)

    def generate_batched(self, enc: Encoded | None, question: str, gen: GenerationConfig) -> dict:
        """A single-round, non-streaming question (``batch``: the most sequences decoded together while
        it ran). Legacy mode: one at a time."""
        res = self.generate(enc, [{"role": "user", "content": question}], gen, lambda d: None)
        return {**res, "batch": res.get("batch", 1)}

    def generate(self, enc: Encoded | None, messages: list[dict], gen: GenerationConfig, on_delta,
                 t_arrival: float | None = None, stop_event: threading.Event | None = None) -> dict:
        """One completion, calling ``on_delta(text)`` (from the batcher's thread) as text arrives.
        ``ttft_s`` is from ``t_arrival`` (the request's arrival; default now) to the first token."""
        if self.batcher is None:
            with self.model_lock:
                if stop_event is not None and stop_event.is_set():  # the client left while it waited
                    return {"answer": "", "ttft_s": None, "prompt_tokens": 0, "reused_tokens": 0,
                            "completion_tokens": 0, "finish_reason": "cancelled"}
                return self._generate_locked(enc, messages, gen, on_delta, t_arrival, stop_event)
        key = enc.key if enc is not None else "text"
        prompt = self.chat.render(self._messages(enc, messages), enc.rows if enc is not None else None)
        with self.prefix_lock:  # the sequence owns the cache while it runs; a concurrent one starts afresh
            prefix = self.prefix.pop(key, None)
        seq = Sequence(prompt, enc.rows if enc is not None else None, gen, on_delta,
                       stop_event if stop_event is not None else threading.Event(),
                       t_arrival if t_arrival is not None else time.perf_counter(), prefix)
        res = self.batcher.submit(seq).result()
        kept = res.pop("prefix")
        if kept is not None:
            with self.prefix_lock:
                self.prefix[key] = kept
                while len(self.prefix) > self.cfg.prefix_cache_videos:
                    self.prefix.popitem(last=False)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], res["batch"])
        return res

    def _generate_locked(self, enc, messages, gen, on_delta, t_arrival, stop_event=None) -> dict:
        """The body of ``generate`` in legacy mode; the caller holds ``model_lock``."""
        key = enc.key if enc is not None else "text"
        conv = self.prefix.pop(key, None)
        conv = conv if isinstance(conv, Conversation) else Conversation(visual=enc.rows if enc else None,
                                                           frames=enc.info if enc else {})
        self.prefix[key] = conv
        while len(self.prefix) > self.cfg.prefix_cache_videos:
            self.prefix.popitem(last=False)
        *history, last = messages
        conv.messages = [dict(m) for m in history]
        users = [m for m in conv.messages if m["role"] == "user"]
        if users:
            users[0]["video"] = enc is not None
        t0 = t_arrival if t_arrival is not None else time.perf_counter()
        first: list[float] = []

        def on_token(_):
            if not first:
                first.append(time.perf_counter() - t0)

        for delta in self.chat.ask_stream(conv, last["content"], gen, on_token=on_token, stop_event=stop_event):
            on_delta(delta)
        st = conv.stats[-1]
        return {"answer": conv.messages[-1]["content"], "ttft_s": first[0] if first else None,
                "prompt_tokens": st["prompt_tokens"], "reused_tokens": st["reused_tokens"],
                "completion_tokens": st["completion_tokens"], "finish_reason": st["finish_reason"]}
