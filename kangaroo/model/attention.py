"""Variable-length attention for packed rows, plugged into transformers' Llama.

A packed row holds several samples; each must attend only to itself, causally. A dense
block-diagonal mask does that, but it forces PyTorch's SDPA onto its unfused path and
computes every cross-sample score only to throw it away. Here each sample's span runs
through SDPA on its own with ``is_causal=True`` (the fused kernels, grouped-query heads
without copies), so the cost is sum(len_i^2) instead of L^2 and no mask is built
(``kangaroo bench pack`` times one layer both ways; figures in BENCHMARKS.md).

It is registered with transformers' ``AttentionInterface`` as ``kangaroo_packed_sdpa``:
calls that carry ``kangaroo_segments`` (a list of (row, start, end) spans) take the
variable-length path; every other call (generation, KV cache, padding masks) is handed
to transformers' own SDPA function unchanged. Padding positions (in no span) get zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "kangaroo_packed_sdpa"


def packed_sdpa_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """query [B, H, L, D], key/value [B, H_kv, L, D] -> ([B, L, H, D], None), like transformers' SDPA."""
    segments = kwargs.pop("kangaroo_segments", None)
    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    B, H, L, D = query.shape
    gqa = key.shape[1] != H
    p = dropout if module.training else 0.0
    rows = []
    for b in range(B):
        pieces, pos = [], 0
        for row, s, e in segments:
            if row != b:
                continue
            if s > pos:  # padding before this span
                pieces.append(query.new_zeros(1, H, s - pos, D))
            pieces.append(F.scaled_dot_product_attention(query[b:b + 1, :, s:e], key[b:b + 1, :, s:e],
                                                         value[b:b + 1, :, s:e], dropout_p=p, is_causal=True,
                                                         scale=scaling, enable_gqa=gqa))
            pos = e
        if pos < L:
            pieces.append(query.new_zeros(1, H, L - pos, D))
        rows.append(torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0])
    out = torch.cat(rows, dim=0) if B > 1 else rows[0]
    return out.transpose(1, 2).contiguous(), None


def segments_of(segment_ids: torch.Tensor) -> list[tuple[int, int, int]]:
    """segment_ids [B, L] (0 = padding, k > 0 = sample k, contiguous) -> [(row, start, end)]."""
    out = []
    for b, row in enumerate(segment_ids.tolist()):
        start = 0
        for i in range(1, len(row) + 1):
            if i == len(row) or row[i] != row[start]:
                if row[start] > 0:
                    out.append((b, start, i))
                start = i
    return out


AttentionInterface.register(NAME, packed_sdpa_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)  # masks for the calls that are not packed
