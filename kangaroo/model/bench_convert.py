"""``kangaroo bench convert``: peak anonymous memory and time of ``kangaroo convert`` and
``kangaroo assemble`` at the 8B shape (random bf16 weights, CPU).

Inputs are generated once under ``--workdir`` (about 17 GB for the 8B shape), tensor by tensor,
one shard in memory at a time:

- an HF Llama folder of Llama-3-8B-Instruct's shape (bf16, 5 GB shards; SmolLM2's tokenizer and
  chat template stand in for Llama-3's, which cannot be had offline),
- the official release's layout: the same LLM shards (the official names are HF Llama's) linked
  in, plus a shard with ``vision_tower.*`` (EVA-CLIP names), ``mm_projector.*`` and the unnamed
  patchify / TPE / marker tensors (found by shape),
- an EVA-CLIP-layout vision checkpoint (``visual.*`` fp16 + rope tables + CLIP head).

Each measurement runs in a fresh process; a thread samples ``RssAnon`` (anonymous pages:
what the process allocated, not the file-backed pages of memory-mapped inputs, which the kernel
can drop) every 20 ms. The goal: peak anonymous memory at most ~1.2x the checkpoint's size,
never a float32 copy. Outputs are deleted after each measurement; ``--keep`` keeps the inputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time

SHARD = 5 * 2**30


def _anon_mb() -> float:
    from ..procstat import status_mb

    return status_mb("RssAnon")


class AnonSampler:
    """The peak of RssAnon while it runs (sampled)."""

    def __init__(self, every: float = 0.02):
        self.every, self.peak, self._stop = every, _anon_mb(), threading.Event()
        self.start_mb = self.peak
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, _anon_mb())

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _anon_mb())


def _shapes(quick: bool):
    from .config import VisionConfig, llama3_8b_instruct, tiny_config

    if quick:
        cfg = tiny_config()
        text = {k: v for k, v in cfg.text_config.to_dict().items() if k in llama3_8b_instruct()}
        return text, VisionConfig(**cfg.vision_config)
    return llama3_8b_instruct(), VisionConfig()


def _write_shards(tensors, folder: str, prefix: str, shard_bytes: int) -> list[str]:
    """Write (name, shape, dtype) specs as safetensors shards of random values, one shard in memory."""
    import torch
    from safetensors.torch import save_file

    files, cur, size = [], {}, 0

    def flush():
        nonlocal cur, size
        if cur:
            name = f"{prefix}-{len(files) + 1:05d}.safetensors"
            save_file(cur, os.path.join(folder, name), metadata={"format": "pt"})
            files.append(name)
            cur, size = {}, 0

    g = torch.Generator().manual_seed(0)
    for name, shape, dtype in tensors:
        t = torch.empty(shape, dtype=dtype)
        t.uniform_(-0.02, 0.02, generator=g) if t.is_floating_point() else t.zero_()
        nbytes = t.numel() * t.element_size()
        if size and size + nbytes > shard_bytes:
            flush()
        cur[name] = t
        size += nbytes
    flush()
    return files


def make_inputs(workdir: str, quick: bool = False) -> dict:
    """The LLM folder, the official-layout folder and the vision checkpoint (reused if present)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .hub import load_smollm2
    from .vision import EVAVisionTower

    text, vcfg = _shapes(quick)
    llm, official, vision = (os.path.join(workdir, n) for n in ("llama", "official", "EVA02_CLIP_L_psz14.pt"))
    done = os.path.join(workdir, "inputs.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(llm)
    os.makedirs(official)
    lcfg = LlamaConfig(**{k: v for k, v in text.items() if k != "model_type"})
    lcfg.dtype = "bfloat16"
    with torch.device("meta"):
        meta = LlamaForCausalLM(lcfg)
    specs = [(k, tuple(v.shape), torch.bfloat16) for k, v in meta.state_dict().items()]
    shard = 2**20 if quick else SHARD
    files = _write_shards(specs, llm, "model", shard)
    total = len(files)
    renamed = []
    for i, f in enumerate(files):  # HF's name pattern, with the index every loader reads
        new = f"model-{i + 1:05d}-of-{total:05d}.safetensors"
        os.rename(os.path.join(llm, f), os.path.join(llm, new))
        renamed.append(new)
    from .tensorfile import tensor_shapes

    wmap = {k: f for f in renamed for k in tensor_shapes(os.path.join(llm, f))}
    with open(os.path.join(llm, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {}, "weight_map": wmap}, fh)
    lcfg.save_pretrained(llm)
    load_smollm2()[1].save_pretrained(llm)
    # the official layout: the LLM's shards as they are, plus ours
    for f in renamed:
        os.symlink(os.path.abspath(os.path.join(llm, f)), os.path.join(official, f))
    with torch.device("meta"):
        tower = EVAVisionTower(vcfg)
    w, d = vcfg.width, text["hidden_size"]
    extra = [(f"vision_tower.{k}", tuple(v.shape), torch.bfloat16) for k, v in tower.state_dict().items()]
    extra += [("mm_projector.0.weight", (d, w), torch.bfloat16), ("mm_projector.0.bias", (d,), torch.bfloat16),
              ("mm_projector.2.weight", (d, d), torch.bfloat16), ("mm_projector.2.bias", (d,), torch.bfloat16),
              ("st_patchify.weight", (w, 1, 2, 2, 2), torch.bfloat16), ("st_patchify.bias", (w,), torch.bfloat16),
              ("tpe_gain", (w,), torch.bfloat16), ("video_special_embeds", (4, d), torch.bfloat16)]
    _write_shards(extra, official, "kangaroo-visual", 2**40)
    with open(os.path.join(official, "config.json"), "w") as fh:
        json.dump({**text, "model_type": "kangaroo", "vision_config": dataclasses.asdict(vcfg)}, fh)
    # EVA-CLIP's .pt: the tower in fp16 at its pre-training size, + what the reader must ignore
    g = torch.Generator().manual_seed(1)
    pre = dataclasses.replace(vcfg, image_size=vcfg.rope_pretrain_grid * vcfg.patch_size)
    with torch.device("meta"):
        tower = EVAVisionTower(pre)
    st = {f"visual.{k}": torch.empty(v.shape, dtype=torch.float16).uniform_(-0.02, 0.02, generator=g)
          for k, v in tower.state_dict().items()}
    hd = vcfg.width // vcfg.heads
    st["visual.rope.freqs_cos"] = torch.zeros(pre.grid**2, hd)
    st["visual.norm.weight"], st["visual.head.weight"] = torch.ones(w), torch.zeros(768, w)
    st["text.positional_embedding"], st["logit_scale"] = torch.zeros(77, 768), torch.tensor(4.6)
    torch.save(st, vision)
    size = lambda p: sum(os.path.getsize(os.path.join(p, f)) for f in os.listdir(p)  # noqa: E731
                         if f.endswith(".safetensors"))
    off = sum(os.path.getsize(os.path.realpath(os.path.join(official, f)))
              for f in os.listdir(official) if f.endswith(".safetensors"))
    rec = {"llm": llm, "official": official, "vision": vision, "llm_bytes": size(llm), "official_bytes": off,
           "vision_bytes": os.path.getsize(vision), "vision_heads": vcfg.heads, "quick": quick}
    with open(done, "w") as fh:
        json.dump(rec, fh)
    return rec


def measure(kind: str, inputs: dict, out: str) -> dict:
    """One measurement, in this process: convert or assemble, timed, RssAnon sampled."""
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with AnonSampler() as s:
        t = time.perf_counter()
        if kind == "convert":
            from .convert import convert_official

            rep = convert_official(inputs["official"], out, dtype=torch.bfloat16)
            detail = {"untrained": rep["untrained"], "matched_by_shape": len(rep["matched_by_shape"])}
        else:
            from .assemble import assemble

            rep = assemble(inputs["vision"], inputs["llm"], out, image_size=448, dtype="auto", heads=inputs["vision_heads"])
            detail = {"dtype": rep["dtype"], "llm_tensors": rep["llm"]["tensors"]}
        secs = time.perf_counter() - t
    from ..procstat import status_mb

    out_bytes = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out) if f.endswith(".safetensors"))
    return {"kind": kind, "seconds": round(secs, 1), "peak_anon_mb": round(s.peak, 1),
            "start_anon_mb": round(s.start_mb, 1), "peak_rss_mb": round(status_mb("VmHWM"), 1),
            "output_gb": round(out_bytes / 1e9, 3), "output_bytes": out_bytes, **detail}


def bench_convert(workdir: str = ".bench/convert", quick: bool = False, keep: bool = False,
                  progress: bool = True) -> dict:
    t = time.perf_counter()
    inputs = make_inputs(workdir, quick)
    gen_s = round(time.perf_counter() - t, 1)
    cases = []
    for kind in ("convert", "assemble"):
        out = os.path.join(workdir, f"out_{kind}")
        shutil.rmtree(out, ignore_errors=True)
        if progress:
            print(f"bench convert: {kind} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "kangaroo.model.bench_convert", kind, json.dumps(inputs), out]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
        shutil.rmtree(out, ignore_errors=True)
        if r.returncode != 0:
            raise RuntimeError(f"bench {kind} failed: {r.stderr.strip()[-2000:]}")
        case = json.loads(r.stdout.strip().splitlines()[-1])
        ck = inputs["official_bytes"] if kind == "convert" else inputs["llm_bytes"] + inputs["vision_bytes"]
        case["checkpoint_gb"] = round(ck / 1e9, 3)
        case["peak_anon_over_checkpoint"] = round(case["peak_anon_mb"] * 2**20 / ck, 3)
        cases.append(case)
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"benchmark": "convert", "shape": "tiny" if quick else "Kangaroo-8B (EVA02-CLIP-L + Llama-3-8B), bf16",
            "inputs_gb": {k[:-6]: round(v / 1e9, 3) for k, v in inputs.items() if k.endswith("_bytes")}, "generate_inputs_s": gen_s,
            "cases": cases}


def format_convert(report: dict) -> str:
    lines = [f"shape: {report['shape']}; inputs (GB) {report['inputs_gb']}",
             "| command | seconds | checkpoint GB | peak RssAnon MB | peak RssAnon / checkpoint | peak RSS MB (with file pages) |",
             "|---|---|---|---|---|---|"]
    for c in report["cases"]:
        lines.append(f"| {c['kind']} | {c['seconds']} | {c['checkpoint_gb']} | {c['peak_anon_mb']} | "
                     f"{c['peak_anon_over_checkpoint']} | {c['peak_rss_mb']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3])))
