"""Frames -> model input: resize (square, or aspect-preserving with padding), CLIP-normalise.

Output: a float tensor [T, 3, H, W] and the timestamps [T] in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class PreprocessConfig:
    size: int = 448  # square side (or the longer side with mode="pad")
    mode: str = "square"  # square: stretch to size x size, as the official; pad: keep aspect, pad
    patch: int = 14  # pad mode rounds each side up to a multiple of patch * 2 (patchify stride)
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        if self.mode not in ("square", "pad"):
            raise ValueError(f"mode must be 'square' or 'pad', got {self.mode!r}")
        if self.size < self.patch:
            raise ValueError(f"size {self.size} is smaller than one patch ({self.patch})")


def target_hw(height: int, width: int, cfg: PreprocessConfig) -> tuple[int, int, int, int]:
    """(resized_h, resized_w, padded_h, padded_w) for a frame of height x width."""
    if cfg.mode == "square":
        return cfg.size, cfg.size, cfg.size, cfg.size
    scale = cfg.size / max(height, width)
    rh, rw = max(1, round(height * scale)), max(1, round(width * scale))
    m = cfg.patch * 2
    return rh, rw, -(-rh // m) * m, -(-rw // m) * m


def preprocess_frames(frames: np.ndarray, cfg: PreprocessConfig = PreprocessConfig()) -> torch.Tensor:
    """uint8 [T, H, W, 3] RGB -> float32 [T, 3, H', W'], normalised. Padding is zero after
    normalisation (the mean colour), placed bottom/right so patches stay aligned."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape [T, H, W, 3], got {tuple(frames.shape)}")
    if not frames.flags.writeable:  # e.g. np.asarray of a PIL image; torch wants a writable buffer
        frames = frames.copy()
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    rh, rw, ph, pw = target_hw(x.shape[2], x.shape[3], cfg)
    if (rh, rw) != tuple(x.shape[2:]):
        x = F.interpolate(x, size=(rh, rw), mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    x = (x - mean) / std
    if (ph, pw) != (rh, rw):
        x = F.pad(x, (0, pw - rw, 0, ph - rh))
    return x.contiguous()
