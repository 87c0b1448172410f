"""The end of a curation run: balance, manifest (JSONL + Parquet), rejects, report + plots.

Everything here is rebuilt from the journal, in input order, so it is the same whether
the run was interrupted or not. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
from collections import Counter

from .config import CurateConfig
from .refine import balance

def _write_jsonl(path: str, rows: list[dict]) -> None:
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            try:
                line = json.dumps(r, ensure_ascii=False)
                line.encode("utf-8")
            except UnicodeEncodeError:  # a file name that is not valid UTF-8: keep it as escapes
                line = json.dumps(r)
            f.write(line + "\n")
    os.replace(tmp, path)


def _write_parquet(path: str, rows: list[dict]) -> bool:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    flat = [{k: (json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v) for k, v in r.items()}
            for r in rows]
    keys = sorted({k for r in flat for k in r})
    try:
        table = pa.table({k: [r.get(k) for r in flat] for k in keys}) if flat else pa.table({})
        tmp = path + ".part"
        pq.write_table(table, tmp)
    except (pa.ArrowException, UnicodeEncodeError) as e:  # mixed column types, undecodable names: JSONL still has it all
        import sys

        print(f"warning: manifest.parquet not written ({e}); manifest.jsonl is complete", file=sys.stderr)
        return False
    os.replace(tmp, path)
    return True


def finalize(cfg: CurateConfig, out: str, items: list[dict], done: dict[str, dict], executor: str = "local",
             workers: int = 1) -> dict:
    manifest, rejects = [], []
    for it in items:
        res = done.get(it["source"])
        if res is None:
            continue  # not processed yet (interrupted): the next run does it
        manifest += res["clips"]
        rejects += res["rejects"]
        if not res["clips"] and not res["rejects"]:
            rejects.append({"source": it["source"], "level": "input", "stage": "scenes", "reason": "no_clips", "detail": "no clip found"})
    bal = None
    if cfg.balance and manifest:
        kept, dropped, bal = balance(manifest, cfg.category)
        keep_ids = {r["id"] for r in kept}
        manifest = [r for r in manifest if r["id"] in keep_ids]  # input order, not balance order
        rejects += [{**r, "level": "image" if r.get("kind") == "image" else "clip", "stage": "balance",
                     "reason": "category_balance",
                     "detail": f"category {r['category']!r} above its target share"} for r in dropped]
    _write_jsonl(os.path.join(out, "manifest.jsonl"), manifest)
    parquet = _write_parquet(os.path.join(out, "manifest.parquet"), manifest)
    _write_jsonl(os.path.join(out, "rejects.jsonl"), rejects)
    report = build_report(cfg, items, done, manifest, rejects, bal, executor, workers)
    report["files"] = {"manifest": "manifest.jsonl", "manifest_parquet": "manifest.parquet" if parquet else None,
                       "rejects": "rejects.jsonl", "plot": "report.png"}
    plot_report(cfg, done, os.path.join(out, "report.png"))
    tmp = os.path.join(out, "report.json.part")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, os.path.join(out, "report.json"))
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write(format_report(report))
    return report


def build_report(cfg, items, done, manifest, rejects, bal, executor, workers) -> dict:
    results = [done[it["source"]] for it in items if it["source"] in done]
    input_rejects = Counter(r["reason"] for r in rejects if r["level"] == "input")
    clip_rejects = Counter(f"{r['stage']}:{r['reason']}" for r in rejects if r["level"] != "input")
    filter_fail = Counter(f for r in rejects if r.get("stage") == "filter" for f in r.get("failed", []))
    secs: Counter = Counter()
    for res in results:
        for k, v in res["seconds"].items():
            secs[k] += v
    video_s = sum(res.get("video_seconds", 0.0) for res in results)
    n_videos = sum(1 for res in results if res.get("video_seconds"))
    throughput = {}
    for stage, s in secs.items():
        if s > 0 and stage != "total":
            throughput[stage] = {"seconds": round(s, 3), "videos_per_min_per_core": round(60 * n_videos / s, 2)
                                 if n_videos else None,
                                 "realtime_x_per_core": round(video_s / s, 2) if video_s else None}
    filt = ["decode", "scenes"] + [f.name for f in cfg.filters]
    fp = sum(secs.get(k, 0.0) for k in filt)
    return {
        "inputs": len(items),
        "processed": len(results),
        "pending": len(items) - len(results),
        "inputs_with_clips": len({m["source"] for m in manifest}),
        "input_rejects": dict(input_rejects),
        "clips_detected": sum(len(res["clips"]) + sum(1 for r in res["rejects"] if r["level"] == "clip")
                              for res in results),
        "clip_rejects": dict(clip_rejects),
        "filter_failures": dict(filter_fail),
        "manifest_rows": len(manifest),
        "reject_rows": len(rejects),
        "categories": bal,
        "video_seconds": round(video_s, 2),
        "executor": executor,
        "workers": workers,
        "throughput": throughput,
        "filter_path_realtime_x_per_core": round(video_s / fp, 2) if fp else None,
    }


def format_report(r: dict) -> str:
    lines = ["# Curation report", "",
             f"- inputs: {r['inputs']} (processed {r['processed']}, pending {r['pending']})",
             f"- manifest rows: {r['manifest_rows']}; reject rows: {r['reject_rows']}",
             f"- clips detected: {r['clips_detected']}; video processed: {r['video_seconds']} s",
             f"- executor: {r['executor']} x {r['workers']}", "",
             "| inputs rejected | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(r["input_rejects"].items())]
    lines += ["", "| clips rejected (stage:reason) | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(r["clip_rejects"].items())]
    lines += ["", "| stage | seconds | videos/min/core | x real time/core |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['seconds']} | {v['videos_per_min_per_core']} | {v['realtime_x_per_core']} |"
              for k, v in r["throughput"].items()]
    if r.get("categories"):
        lines += ["", "| category | before | after |", "|---|---|---|"]
        lines += [f"| {c} | {n} | {r['categories']['after'].get(c, 0)} |" for c, n in
                  sorted(r["categories"]["before"].items())]
    lines += ["", "![scores](report.png)", ""]
    return "\n".join(lines)


def plot_report(cfg: CurateConfig, done: dict[str, dict], path: str) -> None:
    """Histograms of every filter's clip scores (kept and rejected) with the thresholds, and clip lengths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [r for res in done.values() for r in res["clips"] + res["rejects"] if "scores" in r]
    panels = [f for f in cfg.filters] + [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    axes = list(axes) if len(panels) > 1 else [axes]
    for ax, f in zip(axes, panels):
        if f is None:
            vals = [r["duration"] for r in rows]
            ax.hist(vals, bins=30, color="#888")
            ax.set_title("clip length (s)")
            continue
        vals = [r["scores"].get(f.name) for r in rows if r["scores"].get(f.name) is not None]
        ax.hist(vals, bins=30, color="#4a7")
        for bound in (f.min, f.max):
            if bound is not None:
                ax.axvline(bound, color="r", linestyle="--")
        ax.set_title(f"{f.name} (n={len(vals)})")
    fig.tight_layout()
    fig.savefig(path + ".part.png", dpi=80)
    plt.close(fig)
    os.replace(path + ".part.png", path)
