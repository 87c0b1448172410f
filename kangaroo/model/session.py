"""``WatchSession``: ask about a video while it is still being recorded.

Frames arrive (from ``kangaroo.video.growing.StreamReader`` or ``add_frames``); each temporal
slot is encoded once when its frames are in, and its tokens are appended to a KV cache. A
question prefills only itself; its answer is dropped from the cache afterwards, so the next
question sees the video and not old answers (``conversation=True`` keeps the rounds, as text
prefilled after the video: the video in front of them may have grown).

Exact appending. The one-shot block of S slots is (kangaroo/model/modeling.py)

    <vi_start> [l_1] G_1 <eof> [l_2] G_2 <eof> ... [l_S] G_S <eov> <vi_end>

Only its last two markers depend on where the video ends, so the cache holds

    prefix <vi_start> [l_1] G_1 | <eof> [l_2] G_2 | ... | <eof> [l_S] G_S        (one unit per slot)

and a question prefills ``<eov> <vi_end>`` + its text (with several frames per slot, an
incomplete last slot goes in the same uncached tail, its frames padded as the patchify pads
them). The tokens and positions are then exactly those of a one-shot prefill of the same frames:
the TPE and time labels are keyed on each frame's own timestamp, not its index or the count
(the ``index`` TPE is refused for that reason).

Bounded memory. At most ``max_frames`` frames (default: as many as fit the LLM's context with
``reserve_tokens`` left for a question and its answer; about 310 for kangaroo-smol's 8,192
tokens). Past that, a thinning policy (``THINNING``) picks the slots to keep: ``every_other``
drops every other slot of the older half, ``events`` drops the older half's slots that changed
least from the slot before (so slots around events stay). Kept timestamps are always a subset
of the ones seen. The cache is cropped before the first dropped slot and only the kept slots
after it are prefilled again, one forward pass; the result equals a fresh prefill of the kept
slots (tested).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import DynamicCache
from transformers.generation.streamers import BaseStreamer

from ..compat import CACHE_ARG
from ..dataclass_io import strict_from_dict
from ..registry import Registry
from ..video.preprocess import preprocess_frames
from .chat import GenerationConfig, KangarooChat
from .config import time_label
from .modeling import EOF, EOV, VI_END, VI_START

THINNING: Registry = Registry("thinning policy")
LABEL_BUDGET_SECONDS = 9999.9  # the budget counts time labels as long as this one ("9999.9s")


@dataclass
class WatchConfig:
    fps: float = 1.0  # frames sampled per second of video
    max_frames: int | None = None  # frame budget (None: as many as fit the context)
    reserve_tokens: int = 1024  # context kept free for the question and the answer
    policy: str = "every_other"  # thinning policy, a name in THINNING
    conversation: bool = False  # keep earlier questions and answers in the prompt
    idle_timeout_s: float = 10.0  # a growing source that stops growing this long has ended

    def __post_init__(self) -> None:
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.reserve_tokens < 1:
            raise ValueError("reserve_tokens must be >= 1")
        THINNING.get(self.policy)  # raises with the known names

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "WatchConfig":
        return strict_from_dict(cls, d, "watch options")


@dataclass
class Slot:
    timestamps: list[float]  # its frames' times (seconds)
    rows: torch.Tensor  # [n, d] its time label (if any) and visual tokens, without separators
    summary: torch.Tensor = field(repr=False, default=None)  # [d] mean visual token (for ``events``)


# ---- thinning policies: (slots, budget in slots) -> indices kept, sorted -------------------------
def _thin(slots: list[Slot], budget: int, drop_order) -> list[int]:
    kept = list(range(len(slots)))
    while len(kept) > budget:
        old = kept[: len(kept) // 2]
        drop = set(drop_order(old, slots)[: max(1, len(old) // 2)]) if len(old) >= 2 else {kept[0]}
        kept = [i for i in kept if i not in drop]
    return kept


@THINNING.register("every_other")
def every_other(slots: list[Slot], budget: int) -> list[int]:
    """Drop every other slot of the older half (the first one stays) until within the budget."""
    return _thin(slots, budget, lambda old, s: old[1::2])


@THINNING.register("events")
def events(slots: list[Slot], budget: int) -> list[int]:
    """Drop the older half's slots that differ least from the slot before them (the first stays)."""

    def order(old, s):
        change = {i: float((s[i].summary - s[j].summary).norm()) for j, i in zip(old, old[1:])}
        return sorted(change, key=change.get)

    return _thin(slots, budget, order)


class _FirstToken(BaseStreamer):
    """Records when the first generated token came (the first ``put`` is the prompt)."""

    def __init__(self):
        self.calls, self.at = 0, None

    def put(self, value):
        self.calls += 1
        if self.calls == 2 and self.at is None:
            self.at = time.perf_counter()

    def end(self):
        pass


class WatchSession:
    """A growing video's slots in a KV cache, and questions over everything seen so far."""

    def __init__(self, chat: KangarooChat, config: WatchConfig | None = None, lock=None):
        """``lock``: held for every model call (a server passes the one its other requests hold)."""
        self.chat, self.model, self.config = chat, chat.model, config or WatchConfig()
        mc = self.model.config
        if mc.tpe == "index":
            raise ValueError("streaming needs a temporal embedding keyed on timestamps, not the frame index")
        self.processor = chat.processor
        self.processor.sync(mc)
        self.slot_frames = mc.slot_frames
        self.vid = mc.video_token_id
        self.lock = lock if lock is not None else threading.Lock()
        self.slots: list[Slot] = []  # kept, in order
        self.pending: list[tuple[float, np.ndarray]] = []  # frames of an incomplete slot
        self.history: list[dict] = []  # conversation=True: earlier rounds
        self.cache: DynamicCache | None = None
        self.cached_slots: list[Slot] = []  # the slots the cache holds, in order
        self.starts: list[int] = []  # cache position where each cached slot's unit starts
        self.prefix = self._prefix()
        self.stats = {"frames_seen": 0, "frames_dropped": 0, "rebuilds": 0, "rebuilt_tokens": 0, "appended_tokens": 0}
        self.max_frames = self._frame_budget()
        self.reader = None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # ---- layout ------------------------------------------------------------------------------
    def _messages(self, question: str) -> list[dict]:
        msgs = self.chat._system()
        for i, m in enumerate(self.history + [{"role": "user", "content": question}]):
            msgs.append(dict(m, video=True) if i == 0 else dict(m))
        return msgs

    def _render(self, question: str, n: int) -> tuple[list[int], list[int]]:
        """(ids before the video, ids after it) of the prompt for ``question`` with a video of n positions."""
        ids = self.chat.renderer.render(self._messages(question), [n])
        i = ids.index(self.vid)
        if ids[i: i + n] != [self.vid] * n:
            raise RuntimeError("the chat template split the video's placeholder run")
        return ids[:i], ids[i + n:]

    def _prefix(self) -> list[int]:
        return self._render("?", 3)[0]

    def _frame_budget(self) -> int:
        size = self.processor.image_size
        per_slot = self.processor.layout.tokens_per_slot(size, size) + 1  # its tokens and separator
        if self.processor.layout.time_labels:
            per_slot += len(time_label(LABEL_BUDGET_SECONDS))
        room = self.chat.context_length - self.config.reserve_tokens - len(self.prefix) - 2
        most = max(0, room // per_slot) * self.slot_frames
        if most < self.slot_frames:
            raise ValueError(f"no frame fits the context of {self.chat.context_length} tokens with "
                             f"reserve_tokens={self.config.reserve_tokens}")
        if self.config.max_frames is None:
            return most
        if self.config.max_frames > most:
            raise ValueError(f"max_frames={self.config.max_frames} does not fit the model's context of "
                             f"{self.chat.context_length} tokens with {self.config.reserve_tokens} reserved: at most {most}")
        return max(self.config.max_frames, self.slot_frames)

    def _marker(self, k: int) -> torch.Tensor:
        return self.model.markers[k][None]

    def _unit(self, slot: Slot, first: bool) -> torch.Tensor:
        return slot.rows if first else torch.cat([self._marker(EOF).to(slot.rows.dtype), slot.rows])

    # ---- frames -> slots ------------------------------------------------------------------------
    @torch.inference_mode()
    def _encode(self, frames: list[tuple[float, np.ndarray]]) -> list[Slot]:
        """Whole slots of frames (a multiple of slot_frames, or an incomplete last slot) -> Slots."""
        dev = self.chat.device
        pixels = preprocess_frames(np.stack([f for _, f in frames]), self.processor.preprocess).to(dev)
        ts = torch.tensor([t for t, _ in frames], dtype=torch.float32, device=dev)
        enc = self.model.encode_video(pixels, ts)  # [S, P, d]
        out = []
        for s in range(enc.shape[0]):
            t = ts[s * self.slot_frames: (s + 1) * self.slot_frames]
            rows = self.model.video_block(enc[s: s + 1], t)[1:-2]  # without <vi_start>, <eov>, <vi_end>
            out.append(Slot([float(x) for x in t.tolist()], rows, enc[s].float().mean(0)))
        return out

    def add_frames(self, frames: list[tuple[float, np.ndarray]]) -> None:
        """Frames (timestamp s, uint8 RGB [H, W, 3]) in time order: complete slots are encoded and
        appended to the cache; past the frame budget, older slots are thinned."""
        with self.lock:
            for t, f in frames:
                last = self.pending[-1][0] if self.pending else self.slots[-1].timestamps[-1] if self.slots else None
                if last is not None and t <= last:
                    raise ValueError(f"frames must come in time order: {t:.3f}s after {last:.3f}s")
                self.pending.append((float(t), f))
            self.stats["frames_seen"] += len(frames)
            n = len(self.pending) // self.slot_frames * self.slot_frames
            if not n:
                return
            new, self.pending = self.pending[:n], self.pending[n:]
            self.slots.extend(self._encode(new))
            budget = self.max_frames // self.slot_frames
            if len(self.slots) > budget:
                kept = THINNING.get(self.config.policy)(self.slots, budget)
                self.stats["frames_dropped"] += (len(self.slots) - len(kept)) * self.slot_frames
                self.slots = [self.slots[i] for i in kept]
            self._sync()

    @torch.inference_mode()
    def _forward(self, ids: list[int], rows: torch.Tensor | None) -> None:
        dev = self.chat.device
        past = self.cache.get_seq_length()
        self.model(torch.tensor([ids], device=dev), media_embeds=rows,
                   position_ids=torch.arange(past, past + len(ids), device=dev)[None],
                   **{CACHE_ARG: self.cache}, use_cache=True, logits_to_keep=1)

    def _crop(self, n: int) -> None:
        drop = self.cache.get_seq_length() - n
        if drop > 0:  # transformers 5: a negative count drops that many (crop(0) would drop everything)
            self.cache.crop(-drop)

    def _sync(self) -> None:
        """Make the cache hold ``self.slots``: keep the longest run of cached slots that is still
        in place, crop there, prefill the rest in one pass."""
        if self.cache is None:
            self.cache = DynamicCache(config=self.model.config.text_config)
            self._forward(self.prefix + [self.vid], self._marker(VI_START))
        j = 0
        while j < min(len(self.cached_slots), len(self.slots)) and self.cached_slots[j] is self.slots[j]:
            j += 1
        if j < len(self.cached_slots):  # slots dropped from j on: rebuild from there
            self._crop(self.starts[j])
            self.stats["rebuilds"] += 1
            self.stats["rebuilt_tokens"] += sum(self._unit(s, i == 0).shape[0] for i, s in
                                                enumerate(self.slots[j:len(self.cached_slots)], j))
        self.cached_slots, self.starts = self.cached_slots[:j], self.starts[:j]
        units, pos = [], self.cache.get_seq_length()
        for i in range(j, len(self.slots)):
            u = self._unit(self.slots[i], i == 0)
            units.append(u)
            self.starts.append(pos)
            pos += u.shape[0]
        self.cached_slots = list(self.slots)
        if units:
            rows = torch.cat(units)
            self.stats["appended_tokens"] += rows.shape[0]
            self._forward([self.vid] * rows.shape[0], rows)

    # ---- questions ----------------------------------------------------------------------------
    @property
    def timestamps(self) -> list[float]:
        """The times of every frame in the model's view (kept slots, then an incomplete one)."""
        return [t for s in self.slots for t in s.timestamps] + [t for t, _ in self.pending]

    def seen_until(self) -> float:
        ts = self.timestamps
        return round(ts[-1], 3) if ts else 0.0

    def _tail(self) -> torch.Tensor:
        """Rows of the uncached end of the block: an incomplete slot's unit, <eov>, <vi_end>."""
        parts = []
        if self.pending:
            parts.append(self._unit(self._encode(self.pending)[0], not self.slots))
        parts += [self._marker(EOV), self._marker(VI_END)]
        return torch.cat([p.to(parts[0].dtype) for p in parts])

    @torch.inference_mode()
    def ask(self, question: str, gen: GenerationConfig | None = None) -> dict:
        """Answer over everything seen so far: {answer, seen_until, frames, ttft_s, prompt_tokens,
        reused_tokens, finish_reason}. Only the question (and the video's closing markers) is prefilled."""
        gen = gen or GenerationConfig()
        if not isinstance(question, str) or not question.strip():
            raise ValueError("the question is empty")
        t0 = time.perf_counter()
        streamer = _FirstToken()
        with self.lock:
            if not self.slots and not self.pending:  # nothing seen yet: a text-only prompt
                ids = self.chat.render(self.chat._system() + self.history + [{"role": "user", "content": question}], None)
                (out, finish), = self.chat.generate_ids([ids], None, gen, None, streamer)
                reused = 0
            else:
                tail = self._tail()
                cached = self.cache.get_seq_length()
                n_video = cached - len(self.prefix) + tail.shape[0]
                prefix, suffix = self._render(question, n_video)
                if prefix != self.prefix:
                    raise RuntimeError("the prompt's start changed under the cache")
                ids = prefix + [self.vid] * n_video + suffix
                try:
                    (out, finish), = self.chat.generate_ids([ids], tail, gen, self.cache, streamer)
                finally:
                    self._crop(cached)  # the question and answer are not kept
                reused = cached
            frames, seen = len(self.timestamps), self.seen_until()
        answer = self.chat.tok.decode(out, skip_special_tokens=True).strip()
        if self.config.conversation:
            self.history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        ttft = (streamer.at or time.perf_counter()) - t0
        return {"answer": answer, "seen_until": seen, "frames": frames, "ttft_s": round(ttft, 4),
                "prompt_tokens": len(ids), "reused_tokens": reused, "completion_tokens": len(out),
                "finish_reason": finish}

    # ---- a live source ------------------------------------------------------------------------
    def open(self, source: str, **reader_kw) -> "WatchSession":
        """Follow ``source`` (a growing file or a stream PyAV opens) in a background thread."""
        from ..video.growing import GrowingConfig, StreamReader

        cfg = GrowingConfig(fps=self.config.fps, idle_timeout_s=self.config.idle_timeout_s,
                            max_side=max(self.processor.image_size * 2, 448), **reader_kw)
        self.reader = StreamReader(source, cfg)
        self._thread = threading.Thread(target=self._follow, name="kangaroo-watch", daemon=True)
        self._thread.start()
        return self

    def _follow(self) -> None:
        try:
            for t, f in self.reader.frames():
                self.add_frames([(t, f)])
        except BaseException as e:  # reported by ``state`` and the callers
            self.error = e

    @property
    def ended(self) -> bool:
        return self.reader is not None and self.reader.ended and not (self._thread and self._thread.is_alive())

    def state(self) -> dict:
        with self.lock:
            return {"frames": len(self.timestamps), "seen_until": self.seen_until(), "max_frames": self.max_frames,
                    "ended": self.ended, "end_reason": self.reader.end_reason if self.reader else None,
                    "error": str(self.error) if self.error else None, **self.stats}

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the source to end; True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.ended

    def memory_bytes(self) -> int:
        """Bytes held by the KV cache and the kept slots' rows."""
        n = sum(s.rows.nbytes for s in self.slots)
        if self.cache is not None:
            for layer in self.cache.layers:
                for x in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                    n += x.nbytes if isinstance(x, torch.Tensor) else 0
        return n

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
        if self._thread is not None:
            self._thread.join(5)
        self.cache, self.slots, self.cached_slots, self.pending = None, [], [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def watch_lines(chat: KangarooChat, config: WatchConfig, source: str, lines, gen: GenerationConfig, write) -> None:
    """``kangaroo watch``: open ``source``, ``write('{"ready": true}')``, then answer ``lines`` (see answer_lines)."""
    import json

    with WatchSession(chat, config) as session:
        session.open(source, open_timeout_s=config.idle_timeout_s)
        write(json.dumps({"ready": True}))
        answer_lines(session, lines, gen, write)


def answer_lines(session: WatchSession, lines, gen: GenerationConfig, write) -> None:
    """``kangaroo watch``'s loop: one question per line in, one JSON line per answer out
    (``answer``, ``seen_until``, ``frames``, ``ttft_s``); a question that cannot be answered gives
    ``{"error": ...}`` and the loop goes on."""
    import json

    for line in lines:
        q = line.strip()
        if not q:
            continue
        try:
            r = session.ask(q, gen)
            out = {k: r[k] for k in ("answer", "seen_until", "frames", "ttft_s")}
        except ValueError as e:  # ContextLengthError included
            out = {"error": str(e)}
        if session.error is not None:
            out["source_error"] = str(session.error)
        write(json.dumps(out, ensure_ascii=False))
