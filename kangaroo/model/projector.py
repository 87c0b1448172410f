"""LLaVA-style ``mlp2x_gelu`` projector: Linear(vision -> d), GELU, Linear(d -> d).

Kept as an ``nn.Sequential`` so parameters are named ``mm_projector.0`` / ``mm_projector.2``
as in the official checkpoint.
"""

from torch import nn


def build_projector(kind: str, vision_width: int, hidden: int) -> nn.Sequential:
    if kind != "mlp2x_gelu":
        raise ValueError(f"unknown projector {kind!r}")
    return nn.Sequential(nn.Linear(vision_width, hidden), nn.GELU(), nn.Linear(hidden, hidden))
