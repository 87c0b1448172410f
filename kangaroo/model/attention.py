"""Variable-length attention for packed rows, plugged into transformers' Llama.

A packed row holds several samples; each must attend only to itself, causally. A dense
block-diagonal mask does that, but it forces PyTorch's SDPA onto its unfused path and
computes every cross-sample score only to throw it away. Two paths avoid it:

- on a GPU, one FlexAttention kernel per row (``torch.nn.attention.flex_attention``,
  compiled once): a ``BlockMask`` built from the segment spans at the block level
  (``packed_block_mask``: [B, L/128, L/128] block flags, never a dense [L, L] mask) skips
  every block that crosses samples and runs the blocks inside one sample below the diagonal
  without evaluating the mask at all;
- elsewhere (FlexAttention has no CPU backward in torch 2.13), each sample's span runs
  through SDPA on its own with ``is_causal=True`` (the fused kernels, grouped-query heads
  without copies): sum(len_i^2) instead of L^2, many small launches.

``kangaroo bench pack`` times one layer each way (figures in BENCHMARKS.md).

It is registered with transformers' ``AttentionInterface`` as ``kangaroo_packed_sdpa``:
calls that carry ``kangaroo_segments`` (a list of (row, start, end) spans, and on a GPU
``kangaroo_block_mask``) take the variable-length path; every other call (generation, KV
cache, padding masks) is handed to transformers' own SDPA function unchanged. Padding
positions (in no span) get zeros.
"""

from __future__ import annotations

import functools

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
    block_mask = kwargs.pop("kangaroo_block_mask", None)
    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if block_mask is not None and (query.is_cuda or not (torch.is_grad_enabled() and query.requires_grad)):
        return flex_packed_attention(query, key, value, block_mask, scaling), None
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


BLOCK = 128  # FlexAttention's default block size


def packed_block_mask(segment_ids: torch.Tensor, block: int = BLOCK):
    """segment_ids [B, L] (0 = padding, samples contiguous) -> a FlexAttention ``BlockMask``:
    causal attention inside each sample. Built from per-block segment ranges ([B, nb, nb]
    flags, nb = ceil(L / block)), not from an [L, L] mask: a kv block is visited when its
    samples overlap the q block's, and is "full" (no mask evaluated) when both blocks lie in
    one sample and the kv block is strictly below the diagonal."""
    from torch.nn.attention.flex_attention import BlockMask

    B, L = segment_ids.shape
    nb = -(-L // block)
    seg = torch.nn.functional.pad(segment_ids, (0, nb * block - L))  # [B, nb*block], padding = 0
    blocks = seg.view(B, nb, block)
    big = torch.iinfo(seg.dtype).max
    lo = torch.where(blocks > 0, blocks, big).amin(-1)  # [B, nb] smallest sample id in the block
    hi = blocks.amax(-1)  # [B, nb] largest (0: all padding)
    causal = torch.ones(nb, nb, dtype=torch.bool, device=seg.device).tril()
    overlap = (lo[:, :, None] <= hi[:, None, :]) & (lo[:, None, :] <= hi[:, :, None]) & causal  # [B, nb(q), nb(kv)]
    one = (lo == hi) & (blocks > 0).all(-1)  # [B, nb] the block is one sample, no padding
    full = one[:, :, None] & one[:, None, :] & (lo[:, :, None] == lo[:, None, :]) & causal.tril(-1)
    partial = overlap & ~full

    def mask_mod(b, h, q, kv):
        return (seg[b, q] == seg[b, kv]) & (q >= kv) & (seg[b, q] > 0)

    def as_indices(flags):  # [B, nb, nb] bool -> ([B, 1, nb] counts, [B, 1, nb, nb] kv block indices first)
        counts = flags.sum(-1, dtype=torch.int32)
        order = torch.argsort((~flags).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return counts[:, None], order[:, None]

    kv_n, kv_i = as_indices(partial)
    full_n, full_i = as_indices(full)
    return BlockMask.from_kv_blocks(kv_n, kv_i, full_n, full_i, BLOCK_SIZE=block, mask_mod=mask_mod,
                                    seq_lengths=(L, L))


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True)


def flex_packed_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, block_mask,
                          scaling: float | None = None) -> torch.Tensor:
    """One FlexAttention call for packed rows: query [B, H, L, D], key/value [B, H_kv, L, D],
    ``block_mask`` from ``packed_block_mask`` -> [B, L, H, D]; padding positions get zeros.
    Compiled on a GPU; eager (forward only) on the CPU, where the tests check it."""
    from torch.nn.attention.flex_attention import flex_attention

    fn = _compiled_flex() if query.is_cuda else flex_attention
    out = fn(query, key, value, block_mask=block_mask, scale=scaling, enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous()


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
