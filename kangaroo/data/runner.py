"""``kangaroo curate``: inputs -> journal -> manifest, rejects and report; resumable.

Every input's result (its clip rows and reject rows) is appended to ``journal.jsonl`` as
one line, flushed and fsynced, as soon as it is done. A rerun reads the journal, drops a
torn last line (the process was killed mid-write) and skips inputs already there, so a
run killed at any moment (kill -9) and rerun ends with the same manifest as an
uninterrupted one. The manifest, rejects and report are rebuilt from the journal at the
end (atomically), and the balance step depends only on row ids, never on finishing order.

Executors (registered by name) only decide where ``Pipeline.process`` runs; results all
come back to this process, which alone writes the journal:
- ``local``: a process pool (spawned workers, one Pipeline each; a worker that dies is
  replaced and its input retried once, then rejected as ``worker_crashed``);
- ``ray``: Ray Data ``map_batches`` over actors (one Pipeline each), for clusters.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Callable, Iterable, Iterator

from ..registry import Registry
from ..video.image import IMAGE_EXTENSIONS
from .config import CurateConfig
from .pipeline import Pipeline

EXECUTORS: Registry[Callable] = Registry("executor")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
JOURNAL = "journal.jsonl"


# ---- inputs --------------------------------------------------------------------------------------

def list_inputs(spec: str) -> list[dict]:
    """A folder (recursive), a glob, a list file (one path per line) or a JSON/JSONL file of records
    with "video"/"image"/"path" (+ optional "label"/"category" and "caption") -> input items."""
    items: list[dict] = []
    if os.path.isdir(spec):
        for root, dirs, files in os.walk(spec):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            # a directory named like a video or an image is an input too (rejected with its reason, as a list
            # file's would be), never silently left out; its contents are still walked
            names = sorted(files + [d for d in dirs if d.lower().endswith(MEDIA_EXTENSIONS)])
            items += [{"source": os.path.join(root, f)} for f in names
                      if not f.startswith(".") and not f.endswith(".part")]
    elif any(c in spec for c in "*?["):
        items = [{"source": p} for p in sorted(glob.glob(spec, recursive=True)) if os.path.isfile(p)]
        if not items:
            raise FileNotFoundError(f"no files match {spec!r}")
    elif spec.endswith((".txt", ".lst", ".list")):
        base = os.path.dirname(os.path.abspath(spec))
        with open(spec, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    items.append({"source": line if os.path.isabs(line) else os.path.join(base, line)})
    elif spec.endswith((".json", ".jsonl")):
        items = _records(spec)
    elif os.path.isfile(spec):
        items = [{"source": spec}]
    else:
        raise FileNotFoundError(f"{spec}: not a folder, glob, list file or file")
    seen, out = set(), []
    for it in items:
        it["source"] = os.path.abspath(it["source"])
        if it["source"] not in seen:
            seen.add(it["source"])
            out.append({**it, "index": len(out)})
    return out


def _records(path: str) -> list[dict]:
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        text = f.read().strip()
    recs = json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]
    items = []
    for k, r in enumerate(recs):
        src = r.get("video") or r.get("image") or r.get("path") or r.get("source")
        if not isinstance(src, str):
            raise ValueError(f"{path}: record {k} has no video/image/path field")
        item = {"source": src if os.path.isabs(src) else os.path.join(base, src)}
        if r.get("label") or r.get("category"):
            item["label"] = str(r.get("label") or r.get("category"))
        cap = r.get("caption")
        if cap is None and isinstance(r.get("conversations"), list):  # LLaVA: the first answer is the caption
            cap = next((t.get("value") for t in r["conversations"] if t.get("from") in ("gpt", "assistant")), None)
        if cap:
            item["caption"] = str(cap)
        items.append(item)
    return items


# ---- journal -------------------------------------------------------------------------------------

def read_journal(path: str) -> dict[str, dict]:
    """source -> result, from complete lines; a torn last line is cut off the file."""
    done: dict[str, dict] = {}
    if not os.path.exists(path):
        return done
    good = 0
    with open(path, "rb") as f:
        data = f.read()
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break
        done[rec["source"]] = rec["result"]
        good += len(line)
    if good < len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
    return done


class Journal:
    def __init__(self, path: str):
        self.f = open(path, "a", encoding="utf-8")

    def append(self, result: dict) -> None:
        # ASCII escapes: a file name that is not valid UTF-8 (surrogate-escaped by Python) survives the round trip
        self.f.write(json.dumps({"source": result["source"], "result": result}) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


# ---- executors -----------------------------------------------------------------------------------

class _Worker:
    """The pipeline of one worker process (built by the pool's initializer, used by its tasks)."""

    pipeline: Pipeline | None = None
    timeout: float = 0.0


def _init_worker(cfg_dict: dict, out: str, threads: int) -> None:
    _limit_threads(threads)
    cfg = CurateConfig.from_dict(cfg_dict)
    _Worker.pipeline = Pipeline(cfg, out, threads=threads)
    _Worker.timeout = cfg.timeout_s


def _limit_threads(threads: int) -> None:
    import cv2
    import torch

    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)


def _run_one(item: dict) -> dict:
    """In a worker process: its pipeline on one input."""
    return process_with_alarm(_Worker.pipeline, _Worker.timeout, item)


def process_with_alarm(pipeline: Pipeline, timeout: float, item: dict) -> dict:
    """``pipeline.process(item)`` with SIGALRM as a backstop to its cooperative deadline (main thread only)."""
    import math
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # e.g. a Ray actor's thread: deadline only
        return pipeline.process(item)

    def _alarm(*_):
        raise TimeoutError("input time limit")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(math.ceil(timeout * 1.5 + 30)))  # captions may run a little past the deadline
    try:
        return pipeline.process(item)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _crashed(item: dict, detail: str) -> dict:
    reject = {"source": item["source"], "level": "input", "stage": "worker", "reason": "worker_crashed",
              "detail": detail}
    return {"source": item["source"], "index": item["index"], "kind": "video", "clips": [], "seconds": {},
            "video_seconds": 0.0, "rejects": [reject]}


@EXECUTORS.register("local")
def run_local(cfg: CurateConfig, out: str, items: list[dict], workers: int, threads: int = 1) -> Iterator[dict]:
    """Results as they finish. ``workers=0`` runs inline in this process (no isolation)."""
    if workers <= 0:  # this process's own thread settings are left alone
        pipeline = Pipeline(cfg, out, threads=threads)
        for it in items:
            yield process_with_alarm(pipeline, cfg.timeout_s, it)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    def pool(n: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                   initargs=(cfg.to_dict(), out, threads))

    broken: list[dict] = []
    with pool(workers) as ex:
        futures = {ex.submit(_run_one, it): it for it in items}
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except BrokenProcessPool:  # a worker died: every unfinished input of this pool lands here
                broken.append(futures[fut])
    # Which input killed the worker is unknown: run each unfinished one alone, once more.
    for it in sorted(broken, key=lambda x: x["index"]):
        with pool(1) as ex:
            try:
                yield ex.submit(_run_one, it).result()
            except BrokenProcessPool:
                yield _crashed(it, "the worker process died on this input (a crash in native code)")


class RayPipeline:
    """A Ray Data actor: one Pipeline per actor; rows in, JSON results out."""

    def __init__(self, cfg_dict: dict, out: str, threads: int = 1):
        _limit_threads(threads)
        self.cfg = CurateConfig.from_dict(cfg_dict)
        self.pipeline = Pipeline(self.cfg, out, threads=threads)

    def __call__(self, batch: dict) -> dict:
        results = [json.dumps(process_with_alarm(self.pipeline, self.cfg.timeout_s,
                                                 {"source": s, "index": int(i), **json.loads(extra)}))
                   for s, i, extra in zip(batch["source"], batch["index"], batch["extra"])]
        return {"result": results}


@EXECUTORS.register("ray")
def run_ray(cfg: CurateConfig, out: str, items: list[dict], workers: int, threads: int = 1) -> Iterator[dict]:
    """Ray Data: actors each hold a Pipeline; on a laptop, actors ask for 0.5 CPU so that they fit."""
    import ray

    rows = [{"source": it["source"], "index": it["index"],
             "extra": json.dumps({k: v for k, v in it.items() if k not in ("source", "index")})} for it in items]
    if not rows:
        return
    started = not ray.is_initialized()
    if started:  # no cluster to join (RAY_ADDRESS unset): a local instance for this run
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False)
        else:
            ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts videos
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map_batches(RayPipeline, fn_constructor_kwargs={"cfg_dict": cfg.to_dict(), "out": out,
                                                                "threads": threads},
                            batch_size=1, concurrency=max(1, workers), num_cpus=0.5)
        for row in ds.iter_rows():
            yield json.loads(row["result"])
    finally:
        if started:
            ray.shutdown()


# ---- the run -------------------------------------------------------------------------------------

def curate(input_spec: str | list[dict], out: str, cfg: CurateConfig | None = None, executor: str = "local",
           workers: int = 1, threads: int = 1, progress: bool = True, restart: bool = False) -> dict:
    """Run (or resume) a curation; returns the report. Outputs are written under ``out``."""
    from .report import finalize

    cfg = cfg or CurateConfig()
    items = list_inputs(input_spec) if isinstance(input_spec, str) else input_spec
    os.makedirs(out, exist_ok=True)
    _check_config(cfg, out, restart)
    jpath = os.path.join(out, JOURNAL)
    done = read_journal(jpath)
    todo = [it for it in items if it["source"] not in done]
    run = EXECUTORS.get(executor)
    journal = Journal(jpath)
    try:
        for res in _progress(run(cfg, out, todo, workers, threads), total=len(items), initial=len(items) - len(todo),
                             show=progress):
            journal.append(res)
            done[res["source"]] = res
    finally:
        journal.close()
    return finalize(cfg, out, items, done, executor=executor, workers=workers)


def _check_config(cfg: CurateConfig, out: str, restart: bool) -> None:
    """An output folder belongs to one config: resuming it with another would mix results."""
    import yaml

    path = os.path.join(out, "config.yaml")
    mine = yaml.safe_dump(cfg.to_dict(), sort_keys=True)
    if os.path.exists(path) and not restart:
        with open(path, encoding="utf-8") as f:
            theirs = yaml.safe_dump(yaml.safe_load(f), sort_keys=True)
        if theirs != mine:
            raise ValueError(f"{out} holds a run made with a different config ({path}); use another --out, "
                             "or --restart to discard it")
        return
    if restart:
        for name in (JOURNAL, "manifest.jsonl", "rejects.jsonl", "manifest.parquet"):
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False, allow_unicode=True)
    os.replace(tmp, path)


def _progress(it: Iterable[dict], total: int, initial: int, show: bool) -> Iterator[dict]:
    from tqdm import tqdm

    bar = tqdm(total=total, initial=initial, unit="video", desc="curate", disable=not show, dynamic_ncols=True)
    clips = 0
    try:
        for res in it:
            clips += len(res["clips"])
            bar.set_postfix(kept_clips=clips, refresh=False)
            bar.update(1)
            yield res
    finally:
        bar.close()
