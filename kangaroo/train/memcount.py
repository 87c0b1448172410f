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
