"""What vLLM keeps in memory for each weight format: the bytes of every parameter and buffer of the
loaded model, counted inside vLLM's worker (``LLM.apply_model``), not the process's RSS.

Run in vLLM's environment (make vllm-env), on CPU, once per format (each in a fresh process):

    .vllmenv/bin/python scripts/vllm_weight_bytes.py [--model kangaroo-smol] [--workdir .bench/weights]
        [--schemes bf16,w8a8,w4a16] [--json]

Why: `kangaroo bench serve` measured W4A16's RSS only 72 MB under bf16's, where the LLM's linear
weights alone should shrink by ~160 MB (212 MB in bf16, 53 MB in int4). This counts which tensors
vLLM's CPU kernels keep after loading (and repacking) each format, grouped by dtype and by where
they live (the LLM's quantised linear layers, embeddings / norms / head, the vision side).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: apply_model
# then runs the counting function on the model here, nothing is pickled


def tensor_bytes(model) -> dict:
    """Bytes of every parameter and buffer, by dtype and by part, with the largest tensors named."""
    import torch

    seen, by_dtype, by_part, top = set(), {}, {}, []
    named = [("param", n, t) for n, t in model.named_parameters(remove_duplicate=False)]
    named += [("buffer", n, t) for n, t in model.named_buffers(remove_duplicate=False)]
    for mod_name, mod in model.named_modules():  # tensors a kernel keeps as plain attributes
        for attr, v in vars(mod).items():
            if isinstance(v, torch.Tensor) and not attr.startswith("_"):
                named.append(("attr", f"{mod_name}.{attr}", v))
    for kind, name, t in named:
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) if t.device.type != "meta" else None
        if key is None or key in seen:
            continue
        seen.add(key)
        nbytes = t.untyped_storage().nbytes()
        part = ("llm.linear" if any(s in name for s in ("proj", "qkv", "gate_up")) and "language_model" in name
                else "llm.other" if "language_model" in name or "lm_head" in name else "vision+projector")
        by_dtype[str(t.dtype)] = by_dtype.get(str(t.dtype), 0) + nbytes
        by_part[part] = by_part.get(part, 0) + nbytes
        top.append((nbytes, kind, name, str(t.dtype), list(t.shape)))
    top.sort(reverse=True)
    mb = lambda d: {k: round(v / 2**20, 1) for k, v in sorted(d.items())}  # noqa: E731
    return {"total_mb": round(sum(by_dtype.values()) / 2**20, 1), "by_dtype_mb": mb(by_dtype),
            "by_part_mb": mb(by_part), "largest": [dict(zip(("bytes", "kind", "name", "dtype", "shape"), x))
                                                   for x in top[:6]]}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return round(next(int(x.split()[1]) for x in f if x.startswith("VmRSS:")) / 1024, 1)


def measure(folder: str) -> dict:
    """The tensors of the loaded model, and this process's RSS after loading, before and after
    glibc's ``malloc_trim`` hands freed heap pages (load-time temporaries) back to the system."""
    import ctypes

    from kangaroo.vllm_plugin.offline import engine

    llm = engine(folder, dtype="bfloat16", max_num_seqs=4, max_model_len=2048)
    out = llm.apply_model(tensor_bytes)[0]
    out["rss_mb_after_load"] = rss_mb()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    out["rss_mb_after_trim"] = rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="kangaroo-smol")
    ap.add_argument("--workdir", default=".bench/weights")
    ap.add_argument("--schemes", default="bf16,w8a8,w4a16")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this folder in this process
    a = ap.parse_args()
    if a.one:
        print("RESULT " + json.dumps(measure(a.one)), flush=True)
        return
    from kangaroo.serve.bench_engines import full_folder
    from kangaroo.vllm_plugin.export import export_quantized

    os.makedirs(a.workdir, exist_ok=True)
    folder = full_folder(a.model, a.workdir)
    out = {}
    for scheme in a.schemes.split(","):
        served = folder if scheme == "bf16" else folder + "-" + scheme
        if scheme != "bf16" and not os.path.isfile(os.path.join(served, "config.json")):
            export_quantized(folder, served, scheme, True)
        p = subprocess.run([sys.executable, __file__, "--one", served], capture_output=True, text=True)
        line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
        if p.returncode or not line:
            raise SystemExit(f"{scheme}: vLLM failed (rc {p.returncode}):\n{p.stderr[-3000:]}")
        out[scheme] = json.loads(line[0][7:])
    if a.json:
        print(json.dumps(out, indent=1))
        return
    for scheme, r in out.items():
        print(f"{scheme:6s} RSS after load {r['rss_mb_after_load']} MB, after malloc_trim {r['rss_mb_after_trim']} MB")
        print(f"{scheme:6s} total {r['total_mb']:8.1f} MB  by dtype {r['by_dtype_mb']}  by part {r['by_part_mb']}")
        for t in r["largest"][:3]:
            print(f"        {t['bytes'] / 2**20:7.1f} MB {t['kind']:6s} {t['dtype']:14s} {t['shape']} {t['name']}")


if __name__ == "__main__":
    main()
