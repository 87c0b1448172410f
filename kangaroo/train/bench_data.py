"""``kangaroo bench data``: the training data path at 10k, 100k and 1M records.

Each case writes a synthetic curation manifest (JSONL, ``format: manifest``) of N image-caption
records that point at a small pool of real images (84 px, stage 1's setting), then, in a fresh
process (so that its peak RSS is its own): indexes it (``train/records.py``), and draws packed rows
from the global row stream (``train/stream.py``: record read, image decoded and preprocessed,
conversation tokenized with SmolLM2's tokenizer, rows packed to 768 tokens) for a fixed number of
samples, in-process (no data workers). Reported per case: ``records``, ``index_s`` (first run:
builds the offset index), ``setup_rss_mb`` (RSS after imports, tokenizer and config, before any
data), ``peak_rss_mb`` (VmHWM of the process), ``rss_mb`` (at the end), ``samples_per_s``. The goal:
peak RSS flat in N (``rss_spread``: (max - min) / min over the cases, within 0.10).

The baseline, measured in the same run: ``train_samples_per_s``, the samples per second that
kangaroo-smol's training steps consume on the same rows (stage 1: LLM frozen, visual path
trained, forward + backward + AdamW; on this machine's device); ``loader_vs_train`` =
samples_per_s / train_samples_per_s: above 1, one in-process loader outruns training.

``formats``: the record format, chosen with a measurement: random access to single records
(what a seeded mixture and exact resume need) at 100k records from the JSONL offset index and from
Parquet (pyarrow: a record is a row of a row group; the group is read to get it), and WebDataset-
style tar shards read in order (they have no random access).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

CASES = (10_000, 100_000, 1_000_000)
POOL = 16  # distinct images the records point at


def write_manifest(path: str, n: int, images: list[str]) -> None:
    """N manifest records, written in blocks (1M records: a few seconds)."""
    words = ["red", "blue", "green", "circle", "square", "triangle", "moving", "left", "right", "small", "large"]
    with open(path, "w") as f:
        block = []
        for i in range(n):
            a, b, c = words[i % 11], words[(i * 7) % 11], words[(i * 13) % 11]
            block.append(f'{{"kind": "image", "image": "{images[i % len(images)]}", "id": {i}, '
                         f'"caption": "A {a} {b} and a {c} shape, record {i}."}}\n')
            if len(block) == 10_000:
                f.write("".join(block))
                block = []
        f.write("".join(block))


def make_images(folder: str) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    out = []
    for k in range(POOL):
        p = os.path.join(folder, f"img{k:02d}.jpg")
        if not os.path.exists(p):
            Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(p, quality=90)
        out.append(p)
    return out


def _recipe(manifest: str):
    from .recipe import Recipe

    return Recipe.from_dict(dict(name="bench-data", image_size=84, min_frames=1, max_frames=1, max_seq_len=768,
                                 data=[dict(path=manifest, format="manifest")], global_rows=1, seed=0))


def _smol_parts():
    from transformers import AutoTokenizer

    from ..model.config import KangarooConfig
    from ..model.hub import resolve_model_path, smollm2_dir

    cfg = KangarooConfig.from_pretrained(resolve_model_path("kangaroo-smol"))
    return cfg, AutoTokenizer.from_pretrained(smollm2_dir())  # the tokenizer only: no LLM weights in memory


def run_case(manifest: str, samples: int) -> dict:
    """One case, in this process (``python -m kangaroo.train.bench_data``)."""
    from ..procstat import status_mb
    from .data import Mixture
    from .loader import SampleLoader
    from .stream import RowStream

    cfg, tok = _smol_parts()
    r = _recipe(manifest)
    setup = status_mb("VmRSS")  # imports, tokenizer, config: what every case has before its data
    t0 = time.perf_counter()
    mix = Mixture(r)
    index_s = time.perf_counter() - t0
    stream = RowStream(SampleLoader(r, mix, tok, cfg, workers=0), r, {cfg.video_token_id, cfg.image_token_id})
    stream.next_rows()  # warm
    t0 = time.perf_counter()
    got = 0
    while got < samples:
        got += sum(len(s) for s, _ in stream.next_rows())
    dt = time.perf_counter() - t0
    return {"records": len(mix), "index_s": round(index_s, 3), "setup_rss_mb": round(setup, 1),
            "peak_rss_mb": round(status_mb("VmHWM"), 1), "rss_mb": round(status_mb("VmRSS"), 1),
            "samples_per_s": round(got / dt, 1), "samples": got}


def train_rate(manifest: str, steps: int = 3) -> dict:
    """Samples per second that kangaroo-smol's stage-1 training steps consume on the same rows."""
    import torch

    from .. import load
    from .data import Mixture
    from .loader import SampleLoader
    from .packing import pack_row, to_device
    from .stream import RowStream

    model, proc = load("kangaroo-smol")
    cfg, tok = model.config, proc.tokenizer
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(dev).train()
    model.requires_grad_(False)
    for m in (model.vision_tower, model.mm_projector, model.patchify, model.temporal_embed):
        m.requires_grad_(True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    r = _recipe(manifest)
    stream = RowStream(SampleLoader(r, Mixture(r), tok, cfg, workers=0), r, {cfg.video_token_id, cfg.image_token_id})
    rows = [stream.next_rows()[0][0] for _ in range(steps + 1)]
    times = []
    for samples in rows:
        t0 = time.perf_counter()
        row = to_device(pack_row(samples), dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = model(**row)["loss_sum"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    n = sum(len(s) for s in rows[1:])
    return {"train_device": dev.type, "train_samples_per_s": round(n / sum(times[1:]), 2),
            "samples_per_row": round(n / steps, 1)}


def compare_formats(manifest: str, workdir: str, reads: int = 2000) -> list[dict]:
    """Random single-record reads: JSONL offset index vs Parquet; tar shards read in order."""
    import tarfile

    import pyarrow.json as pj
    import pyarrow.parquet as pq

    from .records import Records

    rng = np.random.default_rng(0)
    out = []
    rec = Records(manifest)
    picks = rng.integers(0, len(rec), reads)
    t0 = time.perf_counter()
    for i in picks:
        rec[int(i)]
    out.append({"format": "jsonl+offsets", "random_reads_per_s": round(reads / (time.perf_counter() - t0)),
                "index_bytes_per_record": 8, "random_access": True})
    pq_path = os.path.join(workdir, "records.parquet")
    if not os.path.exists(pq_path):
        pq.write_table(pj.read_json(manifest), pq_path, row_group_size=10_000)
    pf = pq.ParquetFile(pq_path)
    starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
    t0 = time.perf_counter()
    for i in picks[: reads // 10]:
        g = int(np.searchsorted(starts, i, side="right") - 1)
        pf.read_row_group(g).slice(int(i - starts[g]), 1).to_pylist()
    out.append({"format": "parquet (row groups of 10k)", "random_reads_per_s": round((reads // 10) / (time.perf_counter() - t0)),
                "random_access": True})
    tar_path = os.path.join(workdir, "shard-000000.tar")
    if not os.path.exists(tar_path):
        import io

        with tarfile.open(tar_path, "w") as tf:
            for k in range(len(rec)):
                data = json.dumps(rec[k]).encode()
                info = tarfile.TarInfo(f"{k:08d}.json")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    t0 = time.perf_counter()
    n = 0
    with tarfile.open(tar_path, "r|") as tf:
        for m in tf:
            json.loads(tf.extractfile(m).read())
            n += 1
            if n == reads * 10:
                break
    out.append({"format": "tar shard (WebDataset-style)", "sequential_reads_per_s": round(n / (time.perf_counter() - t0)),
                "random_access": False})
    return out


def _child(manifest: str, what: str, samples: int, workdir: str) -> dict:
    import shutil

    cache = os.path.join(workdir, "index")
    shutil.rmtree(cache, ignore_errors=True)  # index_s: the first run's, which builds the index
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KANGAROO_RECORDS_CACHE": cache}
    cmd = [sys.executable, "-m", "kangaroo.train.bench_data", what, manifest, str(samples), workdir]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"bench data {what} {manifest} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def bench_data(workdir: str = ".bench", cases=CASES, samples: int = 400, progress: bool = True) -> dict:
    from tqdm import tqdm

    work = os.path.join(os.path.abspath(workdir), "data")
    images = make_images(os.path.join(work, "images"))
    report = {"cases": [], "samples_per_case": samples}
    for n in tqdm(cases, desc="bench data", unit="case", disable=not progress):
        path = os.path.join(work, f"manifest_{n}.jsonl")
        t0 = time.perf_counter()
        if not os.path.exists(path):
            write_manifest(path, n, images)
        gen = time.perf_counter() - t0
        case = _child(path, "case", samples, work)
        report["cases"].append({**case, "manifest_s": round(gen, 2), "manifest_mb": round(os.path.getsize(path) / 2**20, 1)})
    rss = [c["peak_rss_mb"] for c in report["cases"]]
    report["rss_spread"] = round((max(rss) - min(rss)) / min(rss), 4)
    first = os.path.join(work, f"manifest_{cases[0]}.jsonl")
    report.update(_child(first, "train", 0, work))
    report["loader_vs_train"] = round(min(c["samples_per_s"] for c in report["cases"]) / report["train_samples_per_s"], 2)
    mid = os.path.join(work, f"manifest_{sorted(cases)[len(cases) // 2]}.jsonl")
    report["formats"] = _child(mid, "formats", 0, work)["formats"]
    report["formats_records"] = int(os.path.basename(mid).split("_")[1].split(".")[0])
    return report


def format_data(report: dict) -> str:
    lines = ["| records | manifest MB | index s | RSS before data MB | peak RSS MB | samples/s |",
             "|---:|---:|---:|---:|---:|---:|"]
    for c in report["cases"]:
        lines.append(f"| {c['records']:,} | {c['manifest_mb']} | {c['index_s']} | {c['setup_rss_mb']} | {c['peak_rss_mb']} "
                     f"| {c['samples_per_s']} |")
    lines.append(f"\npeak RSS spread {report['rss_spread']:.1%}; kangaroo-smol training consumes "
                 f"{report['train_samples_per_s']} samples/s ({report['train_device']}): loader / train = "
                 f"{report['loader_vs_train']}x")
    lines.append(f"\nrecord formats at {report['formats_records']:,} records:")
    for f in report["formats"]:
        rate = f.get("random_reads_per_s") or f.get("sequential_reads_per_s")
        kind = "random" if "random_reads_per_s" in f else "sequential only"
        lines.append(f"- {f['format']}: {rate:,} reads/s ({kind})")
    return "\n".join(lines)


if __name__ == "__main__":
    what, manifest, samples, workdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if what == "case":
        res = run_case(manifest, samples)
    elif what == "train":
        res = train_rate(manifest)
    else:
        res = {"formats": compare_formats(manifest, workdir)}
    print(json.dumps(res))
