"""Encoded samples of the training stream, prefetched by worker processes.

A sample that cannot be encoded comes back as a ``Skip`` (train/stream.py), from a worker too.
The mixture stream is a pure function of the sample index (``Mixture.draw``), and encoding
a sample (decode its frames, preprocess, tokenize) depends on nothing else, so workers can
encode the next ``depth`` samples while the model trains on the current ones, and the
result is the same sample for the same index whatever the number of workers: exact resume
and determinism are untouched. ``workers=0`` encodes in this process, on demand.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import Future, ProcessPoolExecutor

from ..model.tokens import ensure_media_tokens
from ..prompts import ChatRenderer
from .data import Encoded, Mixture
from .recipe import Recipe
from .stream import Skip, safe_encode


class _Encoder:
    """What one worker process needs to encode a sample by index (set by the pool's initializer)."""

    mixture: Mixture | None = None
    recipe: Recipe | None = None
    builder: ChatRenderer | None = None
    config = None


def _init(recipe: Recipe, tokenizer, config, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _Encoder.recipe, _Encoder.config = recipe, config
    _Encoder.mixture, _Encoder.builder = Mixture(recipe), ChatRenderer(tokenizer, ensure_media_tokens(tokenizer))


def _encode(index: int) -> Encoded | Skip:
    return safe_encode(_Encoder.mixture, index, _Encoder.recipe, _Encoder.builder, _Encoder.config)


def auto_workers(requested: int | None, cuda: bool) -> int:
    """None = automatic: none on CPU (the cores train), up to 4 per GPU process otherwise."""
    if requested is not None:
        return max(0, requested)
    if not cuda:
        return 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(4, (os.cpu_count() or 2) // local - 1))


def _worker_context():
    """Workers fork from a server that has already imported this module (torch, transformers, the
    decoder), so a worker does not import them again. Plain "spawn" re-imported all of that in every
    worker, one after another, while the trainer waited: 12 workers took about 3 minutes to come up
    on a 16-core GPU machine (here, 2 workers: first sample after 8.0 s with spawn, 4.1 s with this).
    The server is a fresh process, so no CUDA state is forked."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


class SampleLoader:
    def __init__(self, recipe: Recipe, mixture: Mixture, tokenizer, config, workers: int = 0, depth: int = 8):
        self.recipe, self.mixture, self.config = recipe, mixture, config
        self.builder = ChatRenderer(tokenizer, ensure_media_tokens(tokenizer))
        self.depth = max(depth, 4 * workers)  # enough in flight to keep every worker busy
        self.pending: dict[int, Future] = {}
        self.pool = None
        if workers > 0:
            self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=_worker_context(),
                                            initializer=_init, initargs=(recipe, tokenizer, config, 1))

    def get(self, index: int, ahead: list[int]) -> Encoded | Skip:
        """The sample at stream ``index`` (a ``Skip`` if it cannot be encoded); ``ahead`` are the
        indices likely needed next (prefetched)."""
        if self.pool is None:
            return safe_encode(self.mixture, index, self.recipe, self.builder, self.config)
        for i in [index] + ahead[: self.depth]:
            if i not in self.pending:
                self.pending[i] = self.pool.submit(_encode, i)
        fut = self.pending.pop(index)
        for i in [i for i in self.pending if i < index]:  # skipped (e.g. after a resume): drop
            self.pending.pop(i).cancel()
        return fut.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
