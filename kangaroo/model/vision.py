"""EVA02 vision tower (EVA02-CLIP-L/14 layout), written here because timm drags in torchvision.

Parameter names follow EVA-CLIP (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.N.attn.q_proj`` with ``q_bias``/``v_bias`` and no k bias, ``attn.inner_attn_ln``,
``mlp.w1/w2/w3``, ``mlp.ffn_ln``, ``norm1``, ``norm2``) so official weights map by name.

The absolute position embedding is interpolated (bicubic) and the 2-D RoPE is
evaluated on a grid rescaled to the pre-training grid, so one set of weights runs at
224 and 448 px and at non-square sizes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import VisionConfig


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """EVA's interleaved rotation: pairs (x0, x1) -> (-x1, x0)."""
    x = x.unflatten(-1, (-1, 2))
    x1, x2 = x.unbind(-1)
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def rope_2d(grid_h: int, grid_w: int, head_dim: int, pretrain_grid: int, theta: float, device=None):
    """cos, sin of shape [grid_h * grid_w, head_dim] for EVA02's 2-D rotary embedding.

    Half of the head dim encodes rows, half columns; positions are rescaled so that the
    whole grid spans ``pretrain_grid`` positions, whatever its size (interpolation).
    """
    dim = head_dim // 2
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32)[: dim // 2] / dim))
    th = torch.arange(grid_h, device=device, dtype=torch.float32) / grid_h * pretrain_grid
    tw = torch.arange(grid_w, device=device, dtype=torch.float32) / grid_w * pretrain_grid
    fh = torch.outer(th, freqs).repeat_interleave(2, dim=-1)  # [gh, dim]
    fw = torch.outer(tw, freqs).repeat_interleave(2, dim=-1)  # [gw, dim]
    f = torch.cat([fh[:, None, :].expand(grid_h, grid_w, dim), fw[None, :, :].expand(grid_h, grid_w, dim)], dim=-1)
    f = f.reshape(grid_h * grid_w, head_dim)
    return f.cos(), f.sin()


class Attention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        w = cfg.width
        self.heads = cfg.heads
        self.q_proj = nn.Linear(w, w, bias=False)
        self.k_proj = nn.Linear(w, w, bias=False)
        self.v_proj = nn.Linear(w, w, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(w))
        self.v_bias = nn.Parameter(torch.zeros(w))
        self.inner_attn_ln = nn.LayerNorm(w, eps=cfg.layer_norm_eps)  # sub-LN
        self.proj = nn.Linear(w, w)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_prefix: int) -> torch.Tensor:
        B, N, C = x.shape  # [frames, 1 + patches, width]
        q = F.linear(x, self.q_proj.weight, self.q_bias).view(B, N, self.heads, -1).transpose(1, 2)
        k = self.k_proj(x).view(B, N, self.heads, -1).transpose(1, 2)
        v = F.linear(x, self.v_proj.weight, self.v_bias).view(B, N, self.heads, -1).transpose(1, 2)
        # RoPE on patch tokens only (the cls token has no position on the grid)
        q = torch.cat([q[:, :, :n_prefix], q[:, :, n_prefix:] * cos + rotate_half(q[:, :, n_prefix:]) * sin], dim=2)
        k = torch.cat([k[:, :, :n_prefix], k[:, :, n_prefix:] * cos + rotate_half(k[:, :, n_prefix:]) * sin], dim=2)
        out = F.scaled_dot_product_attention(q, k, v)  # fused kernels on GPU
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj(self.inner_attn_ln(out))


class SwiGLU(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.width, cfg.mlp_hidden)
        self.w2 = nn.Linear(cfg.width, cfg.mlp_hidden)
        self.ffn_ln = nn.LayerNorm(cfg.mlp_hidden, eps=cfg.layer_norm_eps)  # sub-LN
        self.w3 = nn.Linear(cfg.mlp_hidden, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


class Block(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x, cos, sin, n_prefix):
        x = x + self.attn(self.norm1(x), cos, sin, n_prefix)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # [B, width, gh, gw]


class EVAVisionTower(nn.Module):
    """Frames [T, 3, H, W] -> patch features [T, H/14, W/14, width] (cls token dropped)."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width)) if cfg.use_cls else None
        self.pos_embed = nn.Parameter(torch.zeros(1, int(cfg.use_cls) + cfg.grid * cfg.grid, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.gradient_checkpointing = False
        self._rope_cache: dict = {}

    def pos_embed_for(self, gh: int, gw: int) -> torch.Tensor:
        n_prefix = int(self.cfg.use_cls)
        prefix, grid = self.pos_embed[:, :n_prefix], self.pos_embed[:, n_prefix:]
        g = self.cfg.grid
        if (gh, gw) != (g, g):
            grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid.float(), size=(gh, gw), mode="bicubic", align_corners=False).to(prefix.dtype)
            grid = grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
        return torch.cat([prefix, grid], dim=1)

    def rope(self, gh: int, gw: int, device, dtype):
        key = (gh, gw, str(device), dtype)
        if key not in self._rope_cache:  # a pure function of the grid: memoised, never mutated
            cfg = self.cfg
            cos, sin = rope_2d(gh, gw, cfg.width // cfg.heads, cfg.rope_pretrain_grid, cfg.rope_theta, device)
            self._rope_cache[key] = (cos.to(dtype), sin.to(dtype))
        return self._rope_cache[key]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels)  # [T, C, gh, gw]
        T, C, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)  # [T, gh*gw, C]
        n_prefix = int(self.cfg.use_cls)
        if n_prefix:
            x = torch.cat([self.cls_token.expand(T, -1, -1).to(x.dtype), x], dim=1)
        x = x + self.pos_embed_for(gh, gw).to(x.dtype)
        cos, sin = self.rope(gh, gw, x.device, x.dtype)
        for blk in self.blocks:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(blk, x, cos, sin, n_prefix, use_reentrant=False)
            else:
                x = blk(x, cos, sin, n_prefix)
        return x[:, n_prefix:].reshape(T, gh, gw, C)

    def init_weights(self, std: float = 0.02) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=std)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=std)
        fan_in = 3 * self.cfg.patch_size**2
        nn.init.uniform_(self.patch_embed.proj.weight, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        nn.init.zeros_(self.patch_embed.proj.bias)
