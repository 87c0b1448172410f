"""Read a released EVA02 vision checkpoint into our tower's names (``kangaroo/model/vision.py``).

Three layouts are recognised, by their keys (names checked against EVA-CLIP's
``eva_vit_model.py``, open_clip's timm trunk and timm's ``eva.py`` checkpoint filter):

- **EVA-CLIP** (the official ``EVA02_CLIP_L_*.pt`` state dict): ``visual.*`` with our own names
  (``attn.q_proj`` + ``q_bias``/``v_bias``, ``attn.inner_attn_ln``, ``mlp.w1/w2/w3``,
  ``mlp.ffn_ln``). The text tower (``text.*``), ``logit_scale``, the rope tables
  (``rope.freqs_cos/sin``, also per block) and the CLIP head (``norm``, ``head``) are ignored.
- **open_clip** (``visual.trunk.*``): timm's names under the trunk prefix; ``visual.head.*`` ignored.
- **timm** (no prefix): ``attn.qkv`` fused (with ``q_bias``/``v_bias``) or split
  ``attn.q_proj/k_proj/v_proj`` (biases on q and v), ``attn.norm``, ``mlp.fc1_g/fc1_x/fc2``,
  ``mlp.norm``.

Depth, width, patch size, MLP size and the pre-training grid come from the tensors; heads are
width / 64 unless given. Files load with ``torch.load(weights_only=True)`` or safetensors: no
pickled code runs. A checkpoint with any tower tensor missing or of the wrong shape is refused
(``VisionCheckpointError``), naming every such key.
"""

from __future__ import annotations

import math
import os
import re

import torch

from .config import VisionConfig

# ignored: what EVA-CLIP / open_clip / timm keep next to the tower's weights but the tower does not use
_IGNORED = (
    r"(^|\.)rope\.",  # fixed rotary tables (recomputed from the grid)
    r"^(norm|fc_norm|head|head_drop)\.",  # the CLIP head: our features are the last block's tokens
    r"^head$",
    r"^attn_pool\.",
    r"\.attn\.k_bias$",  # timm's fused layout keeps a zero k bias buffer
    r"^mask_token$",  # MIM pre-training only
)
_CONTAINERS = ("state_dict", "model", "module", "model_ema")


class VisionCheckpointError(ValueError):
    """A vision checkpoint that cannot give every tensor of the tower, with the keys at fault."""


def read_state(path: str) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} from a .pt/.pth/.bin (weights only) or .safetensors file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such vision checkpoint file")
    from .tensorfile import read_tensors

    try:
        state = read_tensors(path)  # memory-mapped; .pt/.bin with weights_only=True
    except ValueError as e:  # weights_only refuses code objects: say so, never fall back
        raise VisionCheckpointError(str(e)) from None
    for _ in range(3):
        inner = next((state[c] for c in _CONTAINERS if isinstance(state, dict) and isinstance(state.get(c), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VisionCheckpointError(f"{path}: not a state dict of tensors")
    return state


def detect_layout(state: dict) -> tuple[str, str]:
    """(layout name, key prefix of the tower)."""
    if "visual.trunk.pos_embed" in state or "visual.trunk.patch_embed.proj.weight" in state:
        return "open_clip", "visual.trunk."
    if "visual.patch_embed.proj.weight" in state:
        return "eva_clip", "visual."
    for p in ("vision_tower.", ""):
        if p + "patch_embed.proj.weight" in state:
            return ("timm" if p == "" else "kangaroo"), p
    raise VisionCheckpointError("not an EVA02 vision checkpoint: no patch_embed.proj.weight under visual.trunk., "
                                "visual., vision_tower. or at the top level")


_RENAME = (  # timm -> ours (EVA-CLIP's names), applied inside a block
    (r"\.attn\.norm\.", ".attn.inner_attn_ln."),
    (r"\.mlp\.norm\.", ".mlp.ffn_ln."),
    (r"\.mlp\.fc1_g\.", ".mlp.w1."),
    (r"\.mlp\.fc1_x\.", ".mlp.w2."),
    (r"\.mlp\.fc2\.", ".mlp.w3."),
    (r"\.attn\.q_proj\.bias$", ".attn.q_bias"),
    (r"\.attn\.v_proj\.bias$", ".attn.v_bias"),
)


def to_ours(tower: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Tower tensors (prefix removed) renamed to ours; fused qkv split. Returns (state, ignored keys)."""
    out, ignored = {}, []
    for k, v in tower.items():
        if any(re.search(p, k) for p in _IGNORED):
            ignored.append(k)
            continue
        m = re.match(r"^(blocks\.\d+\.attn)\.qkv\.(weight|bias)$", k)
        if m:
            q, kk, vv = v.chunk(3, dim=0)
            if m.group(2) == "weight":
                out.update({f"{m.group(1)}.q_proj.weight": q, f"{m.group(1)}.k_proj.weight": kk,
                            f"{m.group(1)}.v_proj.weight": vv})
            else:  # a fused bias: the k part must be zero (EVA02 has no k bias)
                if kk.abs().max() > 0:
                    raise VisionCheckpointError(f"{k}: a non-zero k bias, which EVA02 does not have")
                out[f"{m.group(1)}.q_bias"], out[f"{m.group(1)}.v_bias"] = q, vv
            continue
        for pat, rep in _RENAME:
            k = re.sub(pat, rep, k)
        out[k] = v
    return out, ignored


def infer_config(state: dict[str, torch.Tensor], heads: int | None = None) -> VisionConfig:
    """The tower's shape from its tensors (our names)."""
    need = ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.w1.weight")
    absent = [k for k in need if k not in state]
    if absent:
        raise VisionCheckpointError(f"cannot infer the tower's shape: missing {absent}")
    pw = state["patch_embed.proj.weight"]
    width, patch = int(pw.shape[0]), int(pw.shape[-1])
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"^blocks\.(\d+)\.", k)))
    n = int(state["pos_embed"].shape[1])  # 1 + g*g with a cls token (EVA02-CLIP), g*g without
    use_cls = math.isqrt(n - 1) ** 2 == n - 1 if n > 1 else False
    grid = math.isqrt(n - int(use_cls))
    if grid * grid != n - int(use_cls):
        raise VisionCheckpointError(f"pos_embed has {n} positions: neither a square grid nor one plus a square")
    heads = heads or max(1, width // 64)
    if width % heads or (width // heads) % 4:
        raise VisionCheckpointError(f"width {width} does not split into {heads} heads of a 2-D RoPE dim (x4)")
    return VisionConfig(image_size=grid * patch, patch_size=patch, width=width, depth=depth, heads=heads,
                        mlp_hidden=int(state["blocks.0.mlp.w1.weight"].shape[0]), rope_pretrain_grid=grid,
                        use_cls=use_cls)


def expected_shapes(cfg: VisionConfig) -> dict[str, tuple]:
    """Every tensor of our tower for ``cfg``, with its shape (built on the meta device)."""
    from .vision import EVAVisionTower

    with torch.device("meta"):
        tower = EVAVisionTower(cfg)
    return {k: tuple(v.shape) for k, v in tower.state_dict().items()}


def check_complete(state: dict, cfg: VisionConfig, source: str = "vision checkpoint") -> list[str]:
    """Raise naming every missing or mis-shaped tensor; return the checkpoint's unrecognised keys."""
    want = expected_shapes(cfg)
    missing = sorted(k for k in want if k not in state)
    wrong = sorted(f"{k} {tuple(state[k].shape)} (want {want[k]})" for k in want
                   if k in state and tuple(state[k].shape) != want[k])
    unknown = sorted(k for k in state if k not in want)
    if missing or wrong or [k for k in unknown if k.startswith("blocks.")]:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {', '.join(missing)}")
        if wrong:
            parts.append(f"{len(wrong)} of the wrong shape: {', '.join(wrong)}")
        bad = [k for k in unknown if k.startswith("blocks.")]
        if bad:  # a block tensor we do not know would change the computation (e.g. layer scale)
            parts.append(f"{len(bad)} block tensors the EVA02 tower does not have: {', '.join(bad)}")
        raise VisionCheckpointError(f"{source}: refused, " + "; ".join(parts))
    return unknown


def resize_pos_embed(pos: torch.Tensor, n_prefix: int, new_grid: int) -> torch.Tensor:
    """[1, prefix + g*g, C] -> [1, prefix + G*G, C]: bicubic, align_corners=False, no antialias
    (EVA-CLIP's own interpolation), computed in float32."""
    prefix, grid = pos[:, :n_prefix], pos[:, n_prefix:]
    g = math.isqrt(grid.shape[1])
    if g == new_grid:
        return pos
    x = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(new_grid, new_grid), mode="bicubic", align_corners=False,
                                        antialias=False)
    x = x.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, -1).to(pos.dtype)
    return torch.cat([prefix, x], dim=1)


def load_vision_checkpoint(path: str, image_size: int | None = None, heads: int | None = None):
    """(VisionConfig at ``image_size``, our tower's state dict, report) from a checkpoint file.

    The absolute position embedding is resized to the new grid; the RoPE needs nothing stored
    (our tower evaluates it on the grid, rescaled to the pre-training grid, as EVA-CLIP does)."""
    raw = read_state(path)
    layout, prefix = detect_layout(raw)
    tower = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
    outside = sorted(k for k in raw if not k.startswith(prefix))
    state, ignored = to_ours(tower)
    cfg = infer_config(state, heads)
    unknown = check_complete(state, cfg, path)
    for k in unknown:  # top-level extras (not block tensors) are reported, not used
        state.pop(k)
    native = cfg.image_size
    if image_size is not None and image_size != native:
        if image_size % cfg.patch_size:
            raise VisionCheckpointError(f"--image-size {image_size} is not a multiple of the patch {cfg.patch_size}")
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], int(cfg.use_cls), image_size // cfg.patch_size)
        cfg.image_size = image_size
    report = {"path": os.path.abspath(path), "layout": layout, "prefix": prefix, "tensors": len(state),
              "native_image_size": native, "image_size": cfg.image_size,
              "pos_embed": f"{native // cfg.patch_size}x{native // cfg.patch_size} -> {cfg.grid}x{cfg.grid} "
                           "(bicubic, align_corners=False, no antialias)" if native != cfg.image_size else "as stored",
              "heads": cfg.heads, "ignored": sorted(ignored) + [k for k in outside if not k.startswith("text.")],
              "ignored_text_tower": sum(k.startswith("text.") for k in outside), "unused_top_level": unknown}
    return cfg, state, report
