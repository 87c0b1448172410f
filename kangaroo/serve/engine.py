"""The serving engine: one model, a bounded queue, and two caches.

- Visual cache: (video content hash, sampling settings) -> visual rows + frame thumbnails,
  LRU within a byte budget. Another user asking about the same video pays nothing.
- Prefix cache: per video, the last conversation's KV cache; a follow-up request (which,
  OpenAI style, re-sends the history) reuses the longest cached prefix.
- Concurrent requests for the same uncached video wait for one encode (single flight).

The model runs in one worker thread at a time (``model_lock``); requests beyond
``max_queue`` waiting are refused with 429 and a Retry-After.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from ..model.chat import Conversation, GenerationConfig, KangarooChat
from ..video import DecodeOptions, SamplingConfig, load_video, probe
from ..video.image import is_image_file, jpeg_data_url, load_image
from ..lru import LRUBytes
from ..video.identity import video_identity
from .media import MediaError, MediaPolicy, resolve_video, sha256_file


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
        self.model_lock = threading.Lock()
        self.visual = LRUBytes(cfg.visual_cache_mb * 1024 * 1024)
        self.prefix: OrderedDict[str, Conversation] = OrderedDict()
        self.pending = 0
        self.pending_lock = threading.Lock()
        self.stats = {"requests": 0, "visual_cache_hits": 0, "visual_cache_misses": 0, "largest_batch": 0}
        self.waiting: dict[tuple, list] = {}  # (video key, generation settings) -> [(question, future)]
        self.waiting_lock = threading.Lock()
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

    def encode(self, url: str, sampling: SamplingConfig) -> tuple[Encoded, bool]:
        """Visual rows for ``url`` under ``sampling``; (encoded, was it cached)."""
        path = resolve_video(self.policy, url)
        name = os.path.basename(path)
        # files in the store are named by their content hash already; anything else is hashed once per
        # version of the file (its identity, size and mtime), not on every request
        digest = name.split(".")[0] if os.path.dirname(path) == os.path.abspath(self.policy.store) and \
            name.startswith("file-") else self.content_key(path)
        key = digest + ":" + json.dumps(sampling.to_dict(), sort_keys=True)
        hit = self.visual.get(key)
        if hit is not None:
            self.stats["visual_cache_hits"] += 1
            return hit, True
        with self.model_lock:
            hit = self.visual.get(key)  # single flight: someone may have encoded it while we waited
            if hit is not None:
                self.stats["visual_cache_hits"] += 1
                return hit, True
            max_side = max(448, self.chat.preprocess.size * 2)
            if is_image_file(path):  # image_url parts, or an image sent as a video: a one-frame video
                frames = load_image(path, max_side)
            else:
                info = probe(path)
                if info.duration > self.cfg.max_duration_s:
                    raise MediaError(413, f"video is {info.duration:.0f}s long; the limit is {self.cfg.max_duration_s:.0f}s")
                if sampling.start is not None and sampling.start >= info.duration:
                    raise MediaError(400, f"start {sampling.start:g} s is past the end of the video ({info.duration:.1f} s)")
                frames = load_video(path, sampling, DecodeOptions(max_side=max_side))
            rows, meta = self.chat.encode(frames)
            enc = Encoded(key, rows, meta, [{"t": round(float(t), 3), "thumb": jpeg_data_url(f, 96, 70)}
                                            for f, t in zip(frames.frames, frames.timestamps)])
            self.visual.put(key, enc, rows.numel() * rows.element_size() + 8192 * len(enc.frames))
            self.stats["visual_cache_misses"] += 1
            return enc, False

    # ---- generation -------------------------------------------------------------------------
    def generate_batched(self, enc: Encoded | None, question: str, gen: GenerationConfig) -> dict:
        """A single-round, non-streaming question: joins the others waiting for the model with
        the same video and settings, and whoever gets the model answers them all in one batch."""
        from concurrent.futures import Future

        key = (enc.key if enc is not None else "text", tuple(vars(gen).items()))
        fut: Future = Future()
        with self.waiting_lock:
            self.waiting.setdefault(key, []).append((question, fut))
        with self.model_lock:
            with self.waiting_lock:
                batch = self.waiting.pop(key, [])
            if len(batch) == 1:  # alone: the ordinary path, which also keeps the KV prefix for follow-ups
                try:
                    res = self._generate_locked(enc, [{"role": "user", "content": question}], gen, lambda d: None, None)
                    batch[0][1].set_result({**res, "batch": 1})
                except Exception as e:
                    batch[0][1].set_exception(e)
            elif batch:  # else another thread already answered ours
                try:
                    answers = self.chat.ask_batch(enc.rows if enc is not None else None, [q for q, _ in batch], gen,
                                                  details=True)
                    self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
                    for (_, f), a in zip(batch, answers):
                        f.set_result({**a, "batch": len(batch)})
                except Exception as e:  # every waiting request learns of it
                    for _, f in batch:
                        f.set_exception(e)
        return fut.result()

    def check_fits(self, enc: Encoded | None, messages: list[dict], gen: GenerationConfig) -> None:
        """ContextLengthError unless the rendered prompt plus ``gen.max_new_tokens`` fits the LLM's context."""
        msgs = [dict(m) for m in messages]
        if self.chat.system_prompt:
            msgs.insert(0, {"role": "system", "content": self.chat.system_prompt})
        users = [m for m in msgs if m["role"] == "user"]
        users[0]["video"] = enc is not None
        self.chat.check_fits(len(self.chat.render(msgs, enc.rows if enc is not None else None)), gen.max_new_tokens)

    def generate(self, enc: Encoded | None, messages: list[dict], gen: GenerationConfig, on_delta,
                 t_arrival: float | None = None, stop_event: threading.Event | None = None) -> dict:
        """Run one completion under the model lock, calling ``on_delta(text)`` as text arrives.
        ``ttft_s`` is from ``t_arrival`` (the request's arrival; default now) to the first token."""
        with self.model_lock:
            if stop_event is not None and stop_event.is_set():  # the client left while it waited
                return {"answer": "", "ttft_s": None, "prompt_tokens": 0, "reused_tokens": 0, "completion_tokens": 0,
                        "finish_reason": "cancelled"}
            return self._generate_locked(enc, messages, gen, on_delta, t_arrival, stop_event)

    def _generate_locked(self, enc, messages, gen, on_delta, t_arrival, stop_event=None) -> dict:
        """The body of ``generate``; the caller holds ``model_lock``."""
        key = enc.key if enc is not None else "text"
        conv = self.prefix.pop(key, None) or Conversation(visual=enc.rows if enc else None,
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
