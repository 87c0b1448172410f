"""Counted tensor bytes: the ground truth the memory planner (plan.py) is checked against on CPU.

``ByteCounter`` is a ``TorchDispatchMode`` that sees every tensor an operator returns and keeps
the bytes of the storages alive (a weak reference per storage drops them when the storage is
freed), so ``peak`` is the largest amount of tensor memory allocated at once inside the mode: what
``torch.cuda.max_memory_allocated`` measures on a GPU, without the allocator's rounding, and
unlike the process RSS, independent of the allocator and the interpreter. Storages that exist
before (parameters, optimiser state) are registered with ``hold`` and counted as a constant.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class ByteCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._refs: dict[int, weakref.ref] = {}

    def hold(self, tensors) -> int:
        """Count the storages of ``tensors`` (already allocated) as live; returns the bytes added."""
        added = 0
        for t in tensors:
            if isinstance(t, torch.Tensor) and not t.is_meta:
                added += self._track(t)
        return added

    def _track(self, t: torch.Tensor) -> int:
        st = t.untyped_storage()
        key, n = st.data_ptr(), st.nbytes()
        if n == 0 or key in self._refs:
            return 0

        def gone(_, key=key, n=n):
            self.live -= n
            self._refs.pop(key, None)

        self._refs[key] = weakref.ref(st, gone)
        self.live += n
        self.peak = max(self.peak, self.live)
        return n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and not t.is_meta:
                self._track(t)
        return out


def state_tensors(model, opt=None) -> list[torch.Tensor]:
    """The parameters, buffers and optimiser state of a training setup (what lives between steps)."""
    out = list(model.parameters()) + list(model.buffers())
    if opt is not None:
        out += [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return out


def _row(cfg, frames: int, image_size: int, text_tokens: int, labelled: int, seed: int = 0, videos: int = 1):
    """A packed row of ``videos`` videos of ``frames`` frames and ``text_tokens`` of text, the last
    ``labelled`` labelled."""
    g = torch.Generator().manual_seed(seed)
    videos = videos if frames else 0
    n_vis = cfg.num_visual_tokens(frames, image_size, image_size, [2.0 * i for i in range(frames)]) if frames else 0
    vocab = min(cfg.text_config.vocab_size, cfg.video_token_id or cfg.text_config.vocab_size)
    ids = torch.cat([torch.randint(3, vocab, (8,), generator=g), torch.full((n_vis * videos,), cfg.video_token_id),
                     torch.randint(3, vocab, (text_tokens - 8,), generator=g)])[None]
    labels = ids.clone()
    labels[:, : ids.shape[1] - labelled] = -100
    media = [(torch.randn(frames, 3, image_size, image_size, generator=g), 2.0 * torch.arange(frames).float())
             for _ in range(videos)]
    return {"input_ids": ids, "labels": labels, "segment_ids": torch.ones_like(ids), "videos": media}


def random_model(cfg, device="cpu", dtype=torch.float32):
    """A KangarooForConditionalGeneration of ``cfg`` with random weights made on ``device`` from the
    meta device (no copy anywhere else: the 8B shape is initialised on the GPU itself)."""
    from ..model.modeling import KangarooForConditionalGeneration

    with torch.device("meta"):
        model = KangarooForConditionalGeneration(cfg)
    model.to_empty(device=device)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:  # norms' gains, markers, gates
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    llm = model.llm().model
    llm.rotary_emb = type(llm.rotary_emb)(llm.config).to(device)  # its buffers are computed, not loaded
    return model.to(dtype)


def set_trainable_parts(model, setup) -> list[torch.Tensor]:
    """Freeze all but ``setup.train`` (LoRA adapters added first), as the trainer does; returns the trainable parameters."""
    from .trainer import freeze_except

    model.train()
    freeze_except(model, list(setup.train), (setup.lora_r, 2 * setup.lora_r, 0.0, setup.lora_targets), setup.checkpointing)
    return [p for p in model.parameters() if p.requires_grad]


def train_step(model, params, row: dict, bf16: bool, foreach: bool | None = None, media_pad: int = 0):
    """(optimizer, step function) of one training step as the trainer runs it (in one process, or
    on one rank of a sharded model: ``media_pad`` blank media, train/distributed.py)."""
    opt = torch.optim.AdamW(params, foreach=foreach)
    dev = next(model.parameters()).device

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**row, media_pad=media_pad)["loss_sum"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return opt, step


def count_train_step(cfg, frames: int, setup, text_tokens: int = 256) -> int:
    """Peak counted tensor bytes of one steady-state training step in one process, as the trainer
    runs it (float32 parameters, bf16 autocast, AdamW, clipping), for a plan.Setup."""
    from ..model.modeling import KangarooForConditionalGeneration

    torch.manual_seed(0)
    model = KangarooForConditionalGeneration(cfg)
    params = set_trainable_parts(model, setup)
    row = _row(cfg, frames, setup.image_size, text_tokens, setup.labelled)
    opt, step = train_step(model, params, row, setup.bf16, foreach=setup.foreach)
    step()  # the optimiser's state exists from here on
    counter = ByteCounter()
    counter.hold(state_tensors(model, opt) + [t for v in row.values() if torch.is_tensor(v) for t in [v]]
                 + [t for pair in row["videos"] for t in pair])
    with counter:
        step()
    return counter.peak


def count_inference(cfg, frames: int, image_size: int, text_tokens: int = 256) -> int:
    """Peak counted tensor bytes of a bf16 prefill with a KV cache (the weights included)."""
    from ..model.modeling import KangarooForConditionalGeneration

    torch.manual_seed(0)
    model = KangarooForConditionalGeneration(cfg).eval().to(torch.bfloat16)
    row = _row(cfg, frames, image_size, text_tokens, 1)
    videos = [(p.to(torch.bfloat16), t) for p, t in row["videos"]]
    counter = ByteCounter()
    counter.hold(state_tensors(model) + [row["input_ids"]] + [t for pair in videos for t in pair])
    with counter, torch.no_grad():
        model(row["input_ids"], videos=videos, use_cache=True, logits_to_keep=1)
    return counter.peak
