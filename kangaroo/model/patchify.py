"""Spatial-temporal patchify: a 3-D depthwise convolution with stride = kernel (t, h, w).

Any frame count works: an odd count is padded by repeating the last frame (which
carries its own timestamp embedding), so there is never an IndexError; spatial grids
that are not multiples of the kernel are padded the same way. Initialised as an
average pool, so before training it merges neighbours without distorting features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpatialTemporalPatchify(nn.Module):
    def __init__(self, width: int, kernel: tuple[int, int, int] = (2, 2, 2)):
        super().__init__()
        self.kernel = tuple(int(k) for k in kernel)
        self.conv = nn.Conv3d(width, width, kernel_size=self.kernel, stride=self.kernel, groups=width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        kt, kh, kw = self.kernel
        nn.init.constant_(self.conv.weight, 1.0 / (kt * kh * kw))
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, gh, gw, C] -> [ceil(T/kt), ceil(gh/kh), ceil(gw/kw), C]."""
        kt, kh, kw = self.kernel
        T, gh, gw, C = x.shape
        pt, ph, pw = (-T) % kt, (-gh) % kh, (-gw) % kw
        x = x.permute(3, 0, 1, 2).unsqueeze(0)  # [1, C, T, gh, gw]
        if pt or ph or pw:
            x = F.pad(x, (0, pw, 0, ph, 0, pt), mode="replicate")
        y = self.conv(x)[0]  # [C, T', h', w']
        return y.permute(1, 2, 3, 0)
