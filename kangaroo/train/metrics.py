"""What a cluster user reads per step: tokens/s per GPU, peak memory, MFU.

FLOPs of one step, the convention of the issue (#24) and of torchtitan-style MFU:

- parameters: ``6 * N_trainable + 2 * N_frozen`` FLOPs per token that passes through them,
  counted per part: the LLM's decoder layers on every row token, its head on the labelled tokens
  (the loss computes logits only there), the vision tower on every patch of every frame, the
  projector on its output rows. Embedding tables are lookups, not counted;
- attention: ``2 * 2 * d * ctx`` forward per query per layer (scores and weighted sum), ``ctx``
  the causal span inside the query's own sample (``sum len^2 / 2`` per sample), full frames for the
  vision tower; times 3 (forward + backward) where the part has trainable parameters or a
  trainable part below it.

MFU = FLOPs / (seconds * world * peak), with the device's dense bf16 peak from ``PEAK_BF16``
(None on CPU or an unknown GPU: then no MFU is reported, never a guess).
"""

from __future__ import annotations

import torch

# dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' data sheets
PEAK_BF16 = {"H200": 989e12, "H100 SXM": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12,
             "GH200": 989e12, "B200": 2250e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 70e12,
             "A10": 125e12, "RTX 4090": 165e12, "RTX 6000 Ada": 364e12}


def device_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16.items():  # longest, most specific keys first in the table
        if key in name:
            return peak
    return None


def cpu_bf16_units(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16 in its flags); None when
    unknown (no /proc/cpuinfo). Without them autocast's bf16 matmuls are emulated and far slower
    than float32 (docs/training.md: one reading of a kangaroo-smol training log on an AVX2 machine)."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    return None if flags is None else bool({"avx512_bf16", "amx_bf16"} & set(flags))


def bf16_warning(device: torch.device, bf16: bool, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """A warning for bf16 autocast on a CPU without bf16 units (the recipe stays as written)."""
    if not bf16 or device.type != "cpu" or cpu_bf16_units(cpuinfo) is not False:
        return None
    return ("warning: bf16 autocast on a CPU without bf16 units (no avx512_bf16 / amx_bf16 in /proc/cpuinfo) is "
            "emulated and can be tens of times slower than float32; add --set bf16=false to train in float32")


def _n(module) -> tuple[int, int]:
    train = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return train, sum(p.numel() for p in module.parameters()) - train


class StepFlops:
    """FLOPs of the rows a step trains on, for one model (counts taken once)."""

    def __init__(self, model):
        llm = model.llm()
        self.layers = _n(llm.model.layers)
        self.head = _n(llm.lm_head)
        self.vision = _n(model.vision_tower)
        self.proj = _n(model.mm_projector)
        tc = model.config.text_config
        self.d, self.n_layers = tc.hidden_size, tc.num_hidden_layers
        v = model.config.vision
        self.v_width, self.v_layers, self.patch, self.cls = v.width, v.depth, v.patch_size, int(v.use_cls)
        below = any(t for t, _ in (self.vision, self.proj, _n(model.patchify), _n(model.temporal_embed)))
        self.llm_back = below or self.layers[0] > 0 or self.head[0] > 0 or model.markers.requires_grad
        self.vis_back = self.vision[0] > 0
        cfg = model.config
        self.media_ids = torch.tensor([i for i in (cfg.video_token_id, cfg.image_token_id) if i is not None])

    @staticmethod
    def _params(n: tuple[int, int], tokens: int) -> float:
        return (6.0 * n[0] + 2.0 * n[1]) * tokens

    def row(self, row: dict) -> float:
        """FLOPs of one packed row or padded batch (``input_ids``, ``labels``, ``segment_ids``, ``videos``)."""
        ids = row["input_ids"]
        f = self._params(self.layers, ids.numel())
        f += self._params(self.head, int((row["labels"][:, 1:] != -100).sum()))
        seg = row.get("segment_ids")
        lens = _segment_lengths(seg) if seg is not None else [ids.shape[1]] * ids.shape[0]
        f += (3 if self.llm_back else 1) * self.n_layers * 4 * self.d * sum(n * n / 2 for n in lens)
        for pixels, _ in row["videos"]:
            t, _, h, w = pixels.shape
            patches = (h // self.patch) * (w // self.patch) + self.cls
            f += self._params(self.vision, t * patches)
            f += (3 if self.vis_back else 1) * self.v_layers * 4 * self.v_width * t * patches * patches
        f += self._params(self.proj, int(torch.isin(ids, self.media_ids).sum()))  # one projector row per position
        return f


def _segment_lengths(seg: torch.Tensor) -> list[int]:
    out = []
    for r in seg.tolist():
        n, prev = 0, None
        for s in r:
            if s != prev and n:
                if prev:
                    out.append(n)
                n = 0
            n, prev = n + 1, s
        if n and prev:
            out.append(n)
    return out


def peak_memory_gib(device: torch.device) -> float | None:
    """This process's peak allocated GPU memory since the last reset (None on CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def step_metrics(flops: float, tokens: int, seconds: float, world: int, peak: float | None,
                 mem_gib: float | None) -> dict:
    """The per-step throughput keys of metrics.jsonl (``flops``, ``tokens`` summed over ranks)."""
    out = {"tok_s_per_gpu": tokens / seconds / world, "tflops_per_gpu": flops / seconds / world / 1e12}
    if peak:
        out["mfu"] = flops / seconds / world / peak
    if mem_gib is not None:
        out["peak_mem_gib"] = mem_gib
    return out
