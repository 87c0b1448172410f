"""Continuous batching across clients at the decode step (the scheme of vLLM and TGI, on a
``DynamicCache``).

One scheduler thread owns the LLM. Each request is a ``Sequence`` (its prompt token ids and
visual rows). Between decode steps the scheduler

1. prefills the sequences that arrived (one at a time, batch 1, reusing a KV prefix the
   caller hands over: a follow-up round does not recompute the video) and samples their
   first token;
2. merges them into the running batch: every layer's keys and values [B, H, L, D] are
   left-padded to the longest row and concatenated, and a padding mask [B, L] marks the
   real positions; each row keeps its own position ids, so padding changes nothing;
3. runs one decode step for the whole batch ([B, 1] tokens through the model with the
   batched cache) and samples every row with its own settings (greedy, or temperature /
   top-p with its own seeded generator);
4. retires finished rows (a stop token, ``max_new_tokens``, or a client that left):
   their KV rows are cut out of the batch (and handed back for the prefix cache), and
   columns that are padding in every remaining row are dropped.

Requests therefore join and leave the batch at any step; a long answer never holds up a
short one, and the per-step cost of the model is shared by everyone in the batch.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from ..compat import CACHE_ARG
from ..model.chat import GenerationConfig, IncrementalDetokenizer, common_prefix


@dataclass
class Prefix:
    """A KV cache of one row and the token ids it holds (for follow-up rounds)."""

    cache: DynamicCache
    ids: list[int]


@dataclass
class Sequence:
    prompt: list[int]
    visual: torch.Tensor | None  # [N, d] rows for the prompt's placeholders
    gen: GenerationConfig
    on_delta: Callable[[str], None] = lambda d: None
    stop_event: threading.Event = field(default_factory=threading.Event)
    t0: float = field(default_factory=time.perf_counter)  # ttft is measured from here
    prefix: Prefix | None = None  # a cache to reuse the longest common prefix of
    future: Future = field(default_factory=Future)
    # state while it runs
    out: list[int] = field(default_factory=list)
    fed: int = 0  # tokens in its KV (prompt + generated tokens fed back)
    last: int = -1
    reused: int = 0
    ttft: float | None = None
    peak_batch: int = 1
    generator: torch.Generator | None = None
    detok: IncrementalDetokenizer | None = None
    cache: DynamicCache | None = None  # its own cache between prefill and joining the batch


def _pad_left(x: torch.Tensor, n: int) -> torch.Tensor:
    """[B, H, L, D] -> [B, H, n + L, D] with n zero columns in front."""
    return F.pad(x, (0, 0, n, 0)) if n else x


class Batcher:
    """``submit(seq)`` -> a Future of the result dict; one scheduler thread runs everything.

    ``start=False``: no thread; the caller drives ``_prefill`` / ``_join`` / ``_step`` itself, which
    fixes who joins whom at which step (the deterministic tests in tests/serve/test_batcher.py)."""

    def __init__(self, chat, max_batch: int = 32, model_lock: threading.Lock | None = None, start: bool = True):
        self.chat, self.model = chat, chat.model
        self.max_batch = max(1, max_batch)
        self.model_lock = model_lock or threading.Lock()  # held for each prefill and decode step
        self.inbox: queue.Queue = queue.Queue()
        self.active: list[Sequence] = []
        self.cache: DynamicCache | None = None  # the batch's: [B, H, L, D] per layer
        self.mask: torch.Tensor | None = None  # [B, L] 1 = a real position
        self.stats = {"steps": 0, "largest_batch": 0, "batched_tokens": 0}
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="kangaroo-batcher", daemon=True)
        if start:
            self.thread.start()

    def submit(self, seq: Sequence) -> Future:
        if self.closed:
            raise RuntimeError("the batcher is closed")
        self.inbox.put(seq)
        return seq.future

    def close(self) -> None:
        self.closed = True
        self.inbox.put(None)
        if self.thread.is_alive():
            self.thread.join(timeout=10)

    # ---- the loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self.closed:
            new = []
            if not self.active:  # nothing runs: wait for work
                new.append(self.inbox.get())
            while len(self.active) + len(new) < self.max_batch:  # the rest wait for a free row
                try:
                    new.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            if any(s is None for s in new):  # closed
                for s in new + self.active:
                    if s is not None and not s.future.done():
                        s.future.set_exception(RuntimeError("the server is shutting down"))
                break
            joined = []
            for s in new:
                try:
                    with self.model_lock:
                        if self._prefill(s):
                            joined.append(s)
                except Exception as e:
                    s.future.set_exception(e)
            if joined:
                self._join(joined)
            if self.active:
                try:
                    with self.model_lock:
                        self._step()
                except Exception as e:  # every running sequence learns of it
                    for s in self.active:
                        s.future.set_exception(e)
                    self.active, self.cache, self.mask = [], None, None

    @torch.inference_mode()
    def _prefill(self, s: Sequence) -> bool:
        """Prefill ``s`` alone and sample its first token; False when it is already finished."""
        if s.stop_event.is_set():
            self._finish(s, "cancelled", None)
            return False
        dev = self.chat.device
        reuse = 0
        if s.prefix is not None:
            reuse = min(common_prefix(s.prefix.ids, s.prompt), len(s.prompt) - 1)
        cache = s.prefix.cache if reuse else DynamicCache(config=self.model.config.text_config)
        if reuse:
            cache.crop(reuse - cache.get_seq_length())  # transformers 5: a negative count to drop
        s.reused = reuse
        ids = torch.tensor([s.prompt[reuse:]], device=dev)  # [1, L - reuse]
        pos = torch.arange(reuse, len(s.prompt), device=dev)[None]
        out = self.model(ids, media_embeds=s.visual if s.visual is not None else None, position_ids=pos,
                         **{CACHE_ARG: cache}, use_cache=True, logits_to_keep=1)
        s.cache, s.fed = cache, len(s.prompt)
        s.detok = IncrementalDetokenizer(self.chat.tok)
        if s.gen.sampling:
            s.generator = torch.Generator(device="cpu")
            s.generator.manual_seed(s.gen.seed if s.gen.seed is not None else int(torch.randint(2**62, ())))
        tok = self._sample(out["logits"][:, -1], [s])[0]
        return self._take(s, tok)

    def _join(self, seqs: list[Sequence]) -> None:
        """Merge freshly prefilled sequences (each its own one-row cache) into the running batch."""
        rows = ([] if self.cache is None else [(self.cache, self.mask)]) + \
            [(s.cache, torch.ones(1, s.fed, dtype=torch.long, device=self.chat.device)) for s in seqs]
        L = max(m.shape[1] for _, m in rows)
        merged = DynamicCache(config=self.model.config.text_config)
        for layer in range(len(rows[0][0].layers)):
            k = torch.cat([_pad_left(c.layers[layer].keys, L - m.shape[1]) for c, m in rows])
            v = torch.cat([_pad_left(c.layers[layer].values, L - m.shape[1]) for c, m in rows])
            merged.update(k, v, layer)
        self.mask = torch.cat([F.pad(m, (L - m.shape[1], 0)) for _, m in rows])
        self.cache = merged
        for s in seqs:
            s.cache = None
        self.active += seqs
        B = len(self.active)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], B)
        for s in self.active:
            s.peak_batch = max(s.peak_batch, B)

    @torch.inference_mode()
    def _step(self) -> None:
        dev = self.chat.device
        B = len(self.active)
        ids = torch.tensor([[s.last] for s in self.active], device=dev)  # [B, 1]
        pos = torch.tensor([[s.fed] for s in self.active], device=dev)  # each row's own next position
        self.mask = torch.cat([self.mask, torch.ones(B, 1, dtype=self.mask.dtype, device=dev)], 1)  # [B, L + 1]
        out = self.model(ids, attention_mask=self.mask, position_ids=pos, **{CACHE_ARG: self.cache},
                         use_cache=True, logits_to_keep=1)
        self.stats["steps"] += 1
        self.stats["batched_tokens"] += B
        for s in self.active:
            s.fed += 1
        toks = self._sample(out["logits"][:, -1], self.active)
        keep = [i for i, (s, t) in enumerate(zip(self.active, toks)) if self._take(s, t, row=i)]
        if len(keep) < B:
            self._retire(keep)

    def _retire(self, keep: list[int]) -> None:
        """Cut the finished rows out of the batch and drop all-padding columns in front."""
        if not keep:
            self.active, self.cache, self.mask = [], None, None
            return
        self.active = [self.active[i] for i in keep]
        idx = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(idx)
        self.mask = self.mask[idx]
        lead = int((self.mask.sum(0) == 0).long().cumprod(0).sum())  # columns that are padding in every row
        if lead:
            self.mask = self.mask[:, lead:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, lead:], layer.values[:, :, lead:]

    # ---- tokens -----------------------------------------------------------------------------
    def _sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        """logits [B, V] -> one token per row, each with its sequence's settings."""
        early = [i for i, s in enumerate(seqs) if len(s.out) < s.gen.min_new_tokens]
        if early:  # min_tokens: no stop token before the row has written that many
            logits = logits.clone()
            rows, stops = torch.tensor(early, device=logits.device), torch.tensor(sorted(self.chat.stops), device=logits.device)
            logits[rows[:, None], stops[None, :]] = float("-inf")
        greedy = logits.argmax(-1).tolist()
        out = []
        for i, s in enumerate(seqs):
            if not s.gen.sampling:
                out.append(greedy[i])
                continue
            probs = torch.softmax(logits[i].float() / s.gen.temperature, -1)
            if s.gen.top_p < 1:  # nucleus: the smallest set of tokens whose mass reaches top_p
                p, order = probs.sort(descending=True)
                drop = p.cumsum(0) - p > s.gen.top_p
                p[drop] = 0
                probs = torch.zeros_like(probs).scatter_(0, order, p)
            out.append(int(torch.multinomial(probs.cpu(), 1, generator=s.generator)))
        return out

    def _take(self, s: Sequence, tok: int, row: int | None = None) -> bool:
        """Record a sampled token; False (and the result is delivered) when ``s`` is finished."""
        if s.ttft is None:
            s.ttft = time.perf_counter() - s.t0
        if tok in self.chat.stops:
            return self._finish(s, "stop", row)
        s.out.append(tok)
        s.last = tok
        delta = s.detok.push(tok)
        if delta:
            try:
                s.on_delta(delta)
            except Exception:  # a reader that went away: the stop event says so
                s.stop_event.set()
        if len(s.out) >= s.gen.max_new_tokens:
            return self._finish(s, "length", row)
        if s.stop_event.is_set():
            return self._finish(s, "cancelled", row)
        return True

    def _finish(self, s: Sequence, reason: str, row: int | None) -> bool:
        prefix = None
        if reason != "cancelled" or s.fed:
            if row is None and s.cache is not None:  # finished at its prefill: its own cache
                prefix = Prefix(s.cache, s.prompt[: s.fed])
            elif row is not None:  # its row of the batch, without the padding
                pad = int((self.mask[row] == 0).sum())
                one = DynamicCache(config=self.model.config.text_config)
                for layer, lc in enumerate(self.cache.layers):
                    one.update(lc.keys[row: row + 1, :, pad:].clone(), lc.values[row: row + 1, :, pad:].clone(), layer)
                prefix = Prefix(one, (s.prompt + s.out)[: s.fed])
        s.cache = None
        text = self.chat.tok.decode(s.out, skip_special_tokens=True).strip()
        s.future.set_result({"answer": text, "ttft_s": s.ttft, "prompt_tokens": len(s.prompt),
                             "reused_tokens": s.reused, "completion_tokens": len(s.out), "finish_reason": reason,
                             "batch": s.peak_batch, "prefix": prefix})
        return False
