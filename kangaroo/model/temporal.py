"""Temporal position embedding (TPE) from each frame's real timestamp, added to every
patch token of the frame before patchify (SPEC: keyed on seconds, not the index).

    sincos   fixed 1-D sin-cos of (seconds * scale), width = vision width, times a learned gain
    index    the same of the frame's index (the ablation baseline)
    learned  a table over whole seconds, linearly interpolated between them
    none     nothing added
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sincos(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """[T] float positions -> [T, dim] sin-cos embedding (transformer style)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=pos.device, dtype=torch.float32) / half)
    ang = pos.float()[:, None] * freqs[None]
    emb = torch.cat([ang.sin(), ang.cos()], dim=-1)
    return emb if dim % 2 == 0 else torch.nn.functional.pad(emb, (0, 1))


class TemporalEmbedding(nn.Module):
    def __init__(self, kind: str, width: int, scale: float = 1.0, max_seconds: int = 3600):
        super().__init__()
        self.kind, self.width, self.scale, self.max_seconds = kind, width, scale, max_seconds
        if kind in ("sincos", "index"):
            self.gain = nn.Parameter(torch.ones(width))
        elif kind == "learned":
            self.table = nn.Embedding(max_seconds + 1, width)
            nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, timestamps: torch.Tensor) -> torch.Tensor | None:
        """timestamps [T] seconds -> [T, width] (or None for 'none')."""
        if self.kind == "none":
            return None
        if self.kind == "sincos":
            return sincos(timestamps * self.scale, self.width) * self.gain
        if self.kind == "index":
            return sincos(torch.arange(len(timestamps), device=timestamps.device), self.width) * self.gain
        t = timestamps.float().clamp(0, self.max_seconds)
        lo = t.floor().long().clamp(max=self.max_seconds - 1)
        w = (t - lo.float())[:, None]
        return self.table(lo) * (1 - w) + self.table(lo + 1) * w
