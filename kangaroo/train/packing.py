"""Pack several samples (different frame counts and sizes) into one row.

Each sample keeps its own video block (a run of placeholder ids; the model fills the runs
with the row's videos in order); ``segment_ids`` number the samples so the model's
mask keeps them apart and restarts position ids. ``pad_batch`` is the classic
alternative (one sample per row, padded to the longest) that the benchmark compares.
"""

from __future__ import annotations

import torch

from .data import IGNORE, Encoded


def pack_row(samples: list[Encoded]) -> dict:
    ids, labels, seg, videos = [], [], [], []
    for k, s in enumerate(samples):
        ids.extend(s.ids)
        labels.extend(s.labels)
        seg.extend([k + 1] * len(s.ids))
        videos.extend(s.media())  # every medium of the sample, in reading order
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
        "segment_ids": torch.tensor([seg], dtype=torch.long),
        "videos": videos,
    }


def pad_batch(samples: list[Encoded], pad_id: int = 0) -> dict:
    """One sample per row, right-padded to the longest (segment 0 = padding)."""
    L = max(len(s) for s in samples)
    ids, labels, seg, videos = [], [], [], []
    for s in samples:
        pad = L - len(s)
        ids.append(list(s.ids) + [pad_id] * pad)
        labels.append(list(s.labels) + [IGNORE] * pad)
        seg.append([1] * len(s) + [0] * pad)
        videos.extend(s.media())
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "segment_ids": torch.tensor(seg, dtype=torch.long),
        "videos": videos,
    }


def to_device(batch: dict, device: torch.device) -> dict:
    """A packed row or padded batch with its tensors (the videos' frames and timestamps too) on ``device``."""
    b = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    b["videos"] = [(p.to(device), t.to(device)) for p, t in b["videos"]]
    return b


def greedy_rows(lengths: list[int], max_len: int) -> list[list[int]]:
    """Group sample indices into rows of at most ``max_len`` tokens, in order (first fit
    on the open row); a sample longer than ``max_len`` gets a row of its own."""
    rows, cur, used = [], [], 0
    for i, n in enumerate(lengths):
        if cur and used + n > max_len:
            rows.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        rows.append(cur)
    return rows
