"""``kangaroo bench serve --engine vllm,ours``: two serving engines, one model, one client, one run.

Every engine is a server in its own process, reached over HTTP by the same streaming client
(``bench_scale._stream``: OpenAI chat, one ``video_url`` + one question, greedy):

- ``ours``: ``kangaroo serve`` (continuous batcher, engine.py), from this Python;
- ``vllm``: vLLM's OpenAI server on the same folder, from ``--vllm-python`` (vLLM's own
  environment, ``make vllm-env``); our plugin registers the architecture and the ``kangaroo``
  video loader (vllm_plugin/video.py), so both engines decode the same frames (our decoder,
  the same ``frames`` placed by time, the same resize bound) and build the same prompt.

An engine spec is ``NAME[:VARIANT]``: ``vllm`` (float32, the dtype ours runs in, for equal
greedy answers), ``vllm:bf16``, ``vllm:fp8_per_block`` or any other ``--quantization`` method of
vLLM (bf16 activations), ``vllm:w8a8`` / ``vllm:w4a16`` (a pre-quantised int8 / int4 copy of the
folder, vllm_plugin/export.py), ``ours``, ``ours:int8`` / ``ours:int4`` (torchao).

At each concurrency level ``c`` (1, 8, 32), ``max(c, min_requests)`` requests go through ``c``
concurrent clients, each request on a video no other request of the run asks about (no engine
gets a visual or prefix cache hit on the video). Per engine and level: completion tokens/s
(usage tokens / wall), TTFT p50/p95 (client side: request sent to first content chunk),
latency p50/p95, errors, and the greedy answers; per level, how many answers are identical to
the first engine's, and each engine's throughput against the first's (tokens/s, and wall time
for the same requests). Memory: the server's
process tree RSS (all its processes, /proc), after the warm-up and at peak. With ``data`` (a
``kangaroo synth`` held-out folder): each engine's accuracy on its first ``limit`` multiple-choice
questions (generated answers, ``extract_choice``, as ``kangaroo eval --benchmark synthetic`` scores
them), asked by 8 concurrent clients at the bench's frame count.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import httpx

from ..dataclass_io import strict_from_dict
from .bench_scale import _pct, _stream, synth_videos
from .testserver import free_port

QUESTIONS = ("What happens in the video?", "Which object appears first?", "Describe the video.",
             "What colour is the first object?")
VLLM_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
               "fp32": "float32", "float32": "float32"}


@dataclass
class EngineSpec:
    """One engine of the comparison: ``ours`` or ``vllm``, a dtype, a quantisation method."""

    kind: str
    dtype: str = "float32"
    quantization: str | None = None  # vLLM's --quantization (online), or ours' --quantize (torchao)
    export: str | None = None  # vLLM: serve a pre-quantised copy of the folder (vllm_plugin/export.py)

    @classmethod
    def parse(cls, spec: str) -> "EngineSpec":
        kind, _, variant = spec.strip().partition(":")
        if kind not in ("ours", "vllm"):
            raise ValueError(f"engine {spec!r}: the engines are ours and vllm (NAME[:VARIANT])")
        if kind == "ours":
            if variant not in ("", "int8", "int4"):
                raise ValueError(f"engine {spec!r}: ours takes int8 or int4 (torchao), got {variant!r}")
            return cls(kind, quantization=variant or None)
        from ..vllm_plugin.export import SCHEMES

        if variant in VLLM_DTYPES:
            return cls(kind, dtype=VLLM_DTYPES[variant])
        if variant in SCHEMES:
            return cls(kind, dtype="bfloat16", export=variant)
        return cls(kind, dtype="bfloat16" if variant else "float32", quantization=variant or None)

    @property
    def name(self) -> str:
        if self.kind == "ours":
            return "ours" + (f":{self.quantization}" if self.quantization else "")
        method = self.quantization or self.export
        return "vllm:" + (method or self.dtype) + (f" ({self.dtype})" if method else "")


def parse_engines(text: str) -> list[EngineSpec]:
    """``"vllm,ours"`` (or ``"vllm|ours"``) -> specs, in order; the first is the baseline of the ratios."""
    specs = [EngineSpec.parse(s) for s in text.replace("|", ",").split(",") if s.strip()]
    if not specs:
        raise ValueError("--engine names no engine (e.g. vllm,ours)")
    return specs


@dataclass
class EngineBenchConfig:
    engines: tuple[str, ...] = ("vllm", "ours")  # engine specs, the first is the baseline
    model: str = "kangaroo-smol"
    levels: tuple[int, ...] = (1, 8, 32)
    min_requests: int = 4
    frames: int = 8
    max_tokens: int = 32
    min_tokens: int = 0  # > 0: no stop token before this many (min_tokens = max_tokens: decode-bound answers)
    vllm_python: str = ".vllmenv/bin/python"
    vllm_kv_cache_gib: float = 1.0  # VLLM_CPU_KVCACHE_SPACE: RAM vLLM's CPU backend gives the KV cache
    max_model_len: int = 4096
    startup_timeout_s: float = 900.0
    workdir: str = ".bench"
    data: str | None = None  # a `kangaroo synth` held-out folder: accuracy of each engine on its questions
    limit: int = 40  # held-out questions (the first ``limit``)

    def __post_init__(self) -> None:
        self.engines = tuple(e.strip() for e in self.engines if e.strip())
        self.levels = tuple(int(c) for c in self.levels)
        self.specs = parse_engines(",".join(self.engines))  # refuses an unknown engine here
        if not self.levels or min(self.levels) < 1:
            raise ValueError(f"levels must be positive client counts, got {self.levels}")
        if self.frames < 1 or self.max_tokens < 1:
            raise ValueError("frames and max_tokens must be >= 1")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"min_tokens must be in [0, max_tokens={self.max_tokens}], got {self.min_tokens}")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "EngineBenchConfig":
        return strict_from_dict(cls, d, "engine bench options")


def full_folder(model: str, workdir: str) -> str:
    """A full Kangaroo folder (config, tokenizer, all weights) both engines load: ``model`` itself when
    it is one, else the model exported into ``workdir``. A folder carrying ``quantization_config``
    is refused (vLLM would take it for a pre-quantised checkpoint)."""
    if os.path.isfile(os.path.join(model, "config.json")):
        folder = os.path.abspath(model)
    else:
        from ..model.weights import load_model, save_model

        folder = os.path.abspath(os.path.join(workdir, "engines", os.path.basename(model.rstrip("/"))))
        if not os.path.isfile(os.path.join(folder, "config.json")):
            m, tok = load_model(model)
            save_model(m, tok, folder)
    from ..vllm_plugin.export import full_folder_config

    full_folder_config(folder, "config.json carries quantization_config; export the model unquantised")
    return folder


def tree_rss_mb(pgid: int) -> float:
    """Resident memory of every process in process group ``pgid`` (a server and its workers), MB."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            if int(stat[2]) != pgid:  # field 5 (pgrp), counted after the command name
                continue
            with open(f"/proc/{pid}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError, IndexError):
            continue
    return total / 1024


class ServerProcess:
    """A server command in its own process group: started, waited for (``/health``), its memory
    sampled while it runs, and stopped with its whole group."""

    def __init__(self, cmd: list[str], url: str, env: dict, log_path: str, timeout_s: float):
        self.cmd, self.url, self.env, self.log_path, self.timeout_s = cmd, url, env, log_path, timeout_s
        self.peak_mb, self._stop = 0.0, threading.Event()

    def log_tail(self, chars: int = 3000) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-chars:]

    def __enter__(self) -> "ServerProcess":
        self.log = open(self.log_path, "w")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited ({self.proc.returncode}) before it answered /health:\n"
                                       f"{' '.join(self.cmd)}\n{self.log_tail()}")
                try:
                    if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.perf_counter() - t0 > self.timeout_s:
                    raise RuntimeError(f"the server did not answer /health within {self.timeout_s:.0f} s:\n"
                                       f"{self.log_tail()}")
                time.sleep(1.0)
        except BaseException:
            self.__exit__()
            raise
        self.startup_s = time.perf_counter() - t0
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self.proc.pid))

    def rss_mb(self) -> float:
        return tree_rss_mb(self.proc.pid)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def _pythonpath(env: dict) -> dict:
    """Both servers import this checkout's kangaroo (the plugin inside vLLM's env included)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {**env, "PYTHONPATH": os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])}


def server_command(spec: EngineSpec, cfg: EngineBenchConfig, folder: str, name: str, video_dir: str,
                   port: int, store: str) -> tuple[list[str], dict]:
    """The command line and environment that serve ``folder`` as ``name`` on ``port``."""
    env = _pythonpath(dict(os.environ))
    concurrency = max(cfg.levels)
    if spec.kind == "ours":
        cmd = [sys.executable, "-m", "kangaroo.cli", "serve", "--model", folder, "--port", str(port),
               "--allow-root", video_dir, "--store", store, "--max-queue", str(concurrency + 8),
               "--max-batch", str(concurrency), "--max-frames", str(max(cfg.frames, 8))]
        return cmd + (["--quantize", spec.quantization] if spec.quantization else []), env
    from ..model.config import KangarooConfig
    from ..vllm_plugin.layout import serve_media_io_kwargs

    media = serve_media_io_kwargs(KangarooConfig.from_pretrained(folder), cfg.frames)
    cmd = [os.path.abspath(cfg.vllm_python), "-m", "vllm.entrypoints.openai.api_server", "--model", folder,
           "--served-model-name", name, "--port", str(port), "--dtype", spec.dtype, "--enforce-eager",
           "--gpu-memory-utilization", "0.15", "--max-model-len", str(cfg.max_model_len),
           "--max-num-seqs", str(concurrency), "--limit-mm-per-prompt", json.dumps({"video": 1}),
           "--allowed-local-media-path", video_dir, "--media-io-kwargs", json.dumps(media)]
    if spec.quantization:
        cmd += ["--quantization", spec.quantization]
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{cfg.vllm_kv_cache_gib:g}")
    return cmd, env


def check_vllm_python(path: str) -> None:
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise FileNotFoundError(f"--vllm-python {path}: no such interpreter; the vllm engine needs vLLM's own "
                                f"environment (make vllm-env builds .vllmenv, docs/serving.md)")


def run_level(url: str, name: str, jobs: list[tuple[str, str]], clients: int, frames: int, max_tokens: int,
              progress: bool = True, min_tokens: int = 0) -> dict:
    """``jobs`` (video URL, question) through ``clients`` concurrent streaming clients."""
    from tqdm import tqdm

    results: list[dict | None] = [None] * len(jobs)
    errors: list[str] = []
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as ex, tqdm(total=len(jobs), desc=f"{clients} clients", unit="req",
                                                    disable=not progress, leave=False) as bar:
        futs = {ex.submit(_stream, url, v, q, frames, max_tokens, name, min_tokens): i for i, (v, q) in enumerate(jobs)}
        for f in cf.as_completed(futs):
            try:
                results[futs[f]] = f.result()
            except Exception as e:  # counted, and the first few kept
                errors.append(str(e)[:200])
            bar.update()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r is not None]
    lat, ttft = [r["latency"] for r in ok], [r["ttft_client"] for r in ok if r["ttft_client"] is not None]
    return {"clients": clients, "requests": len(jobs), "errors": len(errors), "error_examples": errors[:3],
            "wall_s": round(wall, 2), "completion_tokens": sum(r["tokens"] for r in ok),
            "tokens_per_s": round(sum(r["tokens"] for r in ok) / wall, 2), "ttft_p50_s": _pct(ttft, 0.5),
            "ttft_p95_s": _pct(ttft, 0.95), "latency_p50_s": _pct(lat, 0.5), "latency_p95_s": _pct(lat, 0.95),
            "answers": [r["text"] if r is not None else None for r in results],
            "prompt_tokens": [r["prompt_tokens"] if r is not None else None for r in results]}


def heldout_jobs(data: str, limit: int, folder: str) -> tuple[list[tuple[str, str]], list[tuple[list[str], int]]]:
    """The first ``limit`` multiple-choice questions of a synthetic held-out set: their videos copied
    into ``folder`` (the one folder both servers may read), (video URL, prompt) jobs, (candidates, answer)."""
    from ..eval.benchmarks import BENCHMARKS as EVAL_BENCHMARKS
    from ..prompts import mc_prompt

    items = [it for it in EVAL_BENCHMARKS.get("synthetic")(data) if it.candidates][:limit]
    if not items:
        raise ValueError(f"{data}: no multiple-choice questions")
    jobs, keys = [], []
    for it in items:
        dst = os.path.join(folder, "heldout_" + os.path.basename(it.video))
        if not os.path.exists(dst):
            shutil.copyfile(it.video, dst)
        jobs.append(("file://" + dst, mc_prompt(it.question, it.candidates, "synthetic", it.subtitles)))
        keys.append((it.candidates, it.answer))
    return jobs, keys


def score(answers: list[str | None], keys: list[tuple[list[str], int]]) -> dict:
    from ..eval.extract import extract_choice

    right = sum(a is not None and extract_choice(a, c) == k for a, (c, k) in zip(answers, keys))
    return {"questions": len(keys), "correct": right, "accuracy": round(right / len(keys), 4)}


def bench_engines(cfg: EngineBenchConfig, progress: bool = True) -> dict:
    """Every engine of ``cfg.engines`` (``cfg.specs``) in turn (never two at once) on the same requests."""
    if any(s.kind == "vllm" for s in cfg.specs):
        check_vllm_python(cfg.vllm_python)
    import torch

    folder = full_folder(cfg.model, cfg.workdir)
    name = os.path.basename(folder)
    counts = [max(c, cfg.min_requests) for c in cfg.levels]
    paths = synth_videos(os.path.abspath(os.path.join(cfg.workdir, "serve_engines")), 1 + sum(counts),
                         seed=900, progress=progress)
    video_dir = os.path.dirname(paths[0])
    urls = ["file://" + p for p in paths]
    jobs, k = [], 1  # urls[0]: the warm-up's
    for n in counts:
        jobs.append([(urls[k + i], QUESTIONS[(k + i) % len(QUESTIONS)]) for i in range(n)])
        k += n
    heldout = heldout_jobs(cfg.data, cfg.limit, video_dir) if cfg.data else None
    from ..vllm_plugin.export import cpu_kernel_missing, export_quantized

    runs = []
    for spec in cfg.specs:
        why = cpu_kernel_missing(spec.export) if spec.export else None
        if why:  # refused before a copy is written or a server started
            runs.append({"engine": spec.name, "dtype": spec.dtype, "quantization": spec.quantization, "failed": why})
            continue
        store = tempfile.mkdtemp(prefix="kg_engines_")
        port = free_port()
        served = folder
        if spec.export:
            served = folder + "-" + spec.export
            if not os.path.isfile(os.path.join(served, "config.json")):
                export_quantized(folder, served, spec.export, progress)
        cmd, env = server_command(spec, cfg, served, name, video_dir, port, store)
        log = os.path.join(cfg.workdir, f"serve_engines_{spec.name.replace(':', '_').split()[0]}.log")
        try:
            with ServerProcess(cmd, f"http://127.0.0.1:{port}", env, log, cfg.startup_timeout_s) as srv:
                _stream(srv.url, urls[0], "Warm-up: what is shown?", cfg.frames, 2, name)
                idle = srv.rss_mb()
                levels = [run_level(srv.url, name, j, c, cfg.frames, cfg.max_tokens, progress, cfg.min_tokens)
                          for c, j in zip(cfg.levels, jobs)]
                extra = {}
                if heldout:
                    from ..eval.core import MC_MAX_NEW_TOKENS

                    lv = run_level(srv.url, name, heldout[0], 8, cfg.frames, MC_MAX_NEW_TOKENS, progress)
                    extra["heldout"] = {**score(lv["answers"], heldout[1]), "errors": lv["errors"],
                                        "answers": lv["answers"]}
                runs.append({**extra, "engine": spec.name, "dtype": spec.dtype, "quantization": spec.quantization,
                             "startup_s": round(srv.startup_s, 1), "rss_after_warmup_mb": round(idle),
                             "rss_peak_mb": round(max(srv.peak_mb, idle)), "levels": levels, "log": log})
        except RuntimeError as e:  # an engine that does not start is a result too (e.g. a quantisation vLLM refuses)
            runs.append({"engine": spec.name, "dtype": spec.dtype, "quantization": spec.quantization,
                         "failed": str(e)[-1500:], "log": log})
        finally:
            shutil.rmtree(store, ignore_errors=True)
    return {"benchmark": "serve_engines", "config": cfg.to_dict(), "model": cfg.model, "folder": folder, "frames": cfg.frames,
            "max_tokens": cfg.max_tokens, "min_tokens": cfg.min_tokens, "levels": list(cfg.levels), "requests": counts,
            "cpu_threads": torch.get_num_threads(), "runs": runs, "comparison": compare(runs)}


def compare(runs: list[dict]) -> list[dict]:
    """Per level and engine: tokens/s against the first engine's, and how many of its greedy answers
    are identical to the first engine's (same video, question, frames and max_tokens)."""
    ok = [r for r in runs if "levels" in r]
    if len(ok) < 2:
        return []
    base, out = ok[0], []
    for i, lb in enumerate(base["levels"]):
        for r in ok[1:]:
            lv = r["levels"][i]
            same = sum(a is not None and a == b for a, b in zip(lb["answers"], lv["answers"]))
            out.append({"clients": lb["clients"], "engine": r["engine"], "baseline": base["engine"],
                        "identical_answers": same, "requests": lb["requests"],
                        "tokens_per_s_ratio": round(lv["tokens_per_s"] / lb["tokens_per_s"], 3)
                        if lb["tokens_per_s"] else None,
                        # the same requests: the wall-time speed-up is the other throughput measure (usage
                        # counts differ: vLLM counts the stop token as a completion token, ours does not)
                        "wall_speedup": round(lb["wall_s"] / lv["wall_s"], 3) if lv["wall_s"] else None})
    return out


def format_engines(r: dict) -> str:
    least = f", at least {r['min_tokens']}" if r.get("min_tokens") else ""
    lines = [f"{r['model']} ({r['frames']} frames, {r['max_tokens']} new tokens{least}, greedy, streamed, one video per "
             f"request), requests per level {r['requests']}, CPU {r['cpu_threads']} threads", "",
             "| engine | clients | errors | tokens/s | TTFT p50 s | TTFT p95 s | latency p95 s | RSS peak MB |",
             "|---|---|---|---|---|---|---|---|"]
    for x in r["runs"]:
        if "failed" in x:
            lines.append(f"| {x['engine']} | did not start: {x['failed'].strip().splitlines()[-1][:200]} |")
            continue
        for lv in x["levels"]:
            lines.append(f"| {x['engine']} | {lv['clients']} | {lv['errors']} | {lv['tokens_per_s']} | "
                         f"{lv['ttft_p50_s']} | {lv['ttft_p95_s']} | {lv['latency_p95_s']} | {x['rss_peak_mb']} |")
    held = [x for x in r["runs"] if "heldout" in x]
    if held:
        lines += ["", "| engine | held-out accuracy | errors |", "|---|---|---|"]
        lines += [f"| {x['engine']} | {x['heldout']['accuracy']} ({x['heldout']['correct']} / {x['heldout']['questions']}) | "
                  f"{x['heldout']['errors']} |" for x in held]
    if r["comparison"]:
        lines += ["", "| clients | engine | baseline | engine / baseline tokens/s | baseline / engine wall time | "
                      "identical greedy answers |", "|---|---|---|---|---|---|"]
        for c in r["comparison"]:
            lines.append(f"| {c['clients']} | {c['engine']} | {c['baseline']} | **{c['tokens_per_s_ratio']}** | "
                         f"{c['wall_speedup']} | {c['identical_answers']} / {c['requests']} |")
    return "\n".join(lines)
