"""``kangaroo bench serve_scale``: many clients, each on its own video, against our server in two
designs in the same run (issue #26):

- ``before``: ``legacy_lock=True``, decode, vision encode and generation of one request at a
  time under one lock (the server before #26);
- ``after``: decode in a worker pool, the encode under its own lock, generation continuously
  batched across clients (engine.py, batcher.py).

Each client streams one answer (``max_tokens`` new tokens, greedy, ``include_usage``) about a
video no other client asks about, all at once. Reported per design: errors, latency p50/p95
(client side, request sent to last byte), TTFT p50 (server side, from the request's arrival),
requests/s and generated tokens/s; and after/before ratios (throughput: higher is better,
p95: lower is better). The first request of each server (a warm-up on another video) is not
counted.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import tempfile
import time

import httpx


def _stream(url: str, video: str, question: str, frames: int, max_tokens: int, model: str | None = None,
            min_tokens: int = 0) -> dict:
    """One streamed greedy answer (OpenAI chat, ``video_url``): latency (client side, request sent to
    last byte), TTFT server side (``ttft``: ours reports it, None elsewhere) and client side
    (``ttft_client``: request sent to the first content chunk), completion and prompt tokens (``usage``), the text."""
    body = {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": video}},
                                                      {"type": "text", "text": question}]}],
            "stream": True, "max_tokens": max_tokens, "temperature": 0, "frames": frames,
            "stream_options": {"include_usage": True}}
    if model is not None:
        body["model"] = model
    if min_tokens:  # vLLM's extra parameter, ours too: every answer exactly max_tokens long when equal
        body["min_tokens"] = min_tokens
    t0 = time.perf_counter()
    ttft = tokens = first = prompt = None
    text = []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=3600) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.read()[:200]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            msg = json.loads(line[6:])
            if "error" in msg:
                raise RuntimeError(msg["error"]["message"])
            if msg.get("usage"):
                tokens, prompt = msg["usage"]["completion_tokens"], msg["usage"].get("prompt_tokens")
            for c in msg.get("choices") or []:
                piece = (c.get("delta") or {}).get("content")
                if piece:
                    if first is None:
                        first = time.perf_counter() - t0
                    text.append(piece)
                if c.get("finish_reason"):
                    ttft = (msg.get("kangaroo") or {}).get("ttft_s")
    return {"latency": time.perf_counter() - t0, "ttft": ttft, "ttft_client": first, "tokens": tokens or 0,
            "prompt_tokens": prompt, "text": "".join(text)}


def synth_videos(folder: str, n: int, seed: int = 700, progress: bool = True) -> list[str]:
    """``n`` synthetic 30 s videos (4 objects, 8 fps) in ``folder``, made once and cached: v00.mp4, ..."""
    from tqdm import tqdm

    from ..synth import SynthConfig, make_timeline, write_video

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in tqdm(range(n), desc="videos", disable=not progress):
        p = os.path.join(folder, f"v{i:02d}.mp4")
        if not os.path.exists(p):
            write_video(make_timeline(SynthConfig(duration=30.0, fps=8.0, num_objects=4), seed + i), p)
        paths.append(p)
    return paths


def _pct(xs: list[float], q: float) -> float | None:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3) if xs else None


def _run(chat, paths: list[str], legacy: bool, clients: int, frames: int, max_tokens: int) -> dict:
    from . import ServeConfig, build_app
    from .testserver import LoopbackServer

    cfg = ServeConfig(model="bench", store=tempfile.mkdtemp(prefix="kg_scale_"), max_new_tokens=max_tokens,
                      max_queue=clients + 8, allowed_roots=[os.path.dirname(paths[0])], legacy_lock=legacy,
                      max_frames=max(frames, 8))
    urls = ["file://" + p for p in paths]
    with LoopbackServer(build_app(cfg, chat=chat)) as srv:
        _stream(srv.url, urls[-1], "Warm-up: what is shown?", frames, 2)
        chat.frame_cache.clear()  # every design encodes every video itself
        results, errors = [], []
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(clients) as ex:
            futs = [ex.submit(_stream, srv.url, urls[i], f"Client {i}: what happens in the video?", frames, max_tokens)
                    for i in range(clients)]
            for f in futs:
                try:
                    results.append(f.result())
                except Exception as e:  # counted, and the first few kept
                    errors.append(str(e)[:200])
        wall = time.perf_counter() - t0
        health = httpx.get(srv.url + "/health").json()
    lat = [r["latency"] for r in results]
    return {"design": "before (one lock)" if legacy else "after (pool + batching)", "clients": clients,
            "errors": len(errors), "error_examples": errors[:3], "wall_s": round(wall, 2),
            "requests_per_s": round(len(results) / wall, 3),
            "tokens_per_s": round(sum(r["tokens"] for r in results) / wall, 2),
            "latency_p50_s": _pct(lat, 0.5), "latency_p95_s": _pct(lat, 0.95),
            "ttft_p50_s": _pct([r["ttft"] for r in results if r["ttft"] is not None], 0.5),
            "largest_batch": health.get("largest_batch")}


def bench_serve_scale(model: str | None = None, clients: int = 16, frames: int = 8, max_tokens: int = 8,
                      workdir: str = ".bench", progress: bool = True) -> dict:
    from tqdm import tqdm

    from ..model.chat import KangarooChat
    from ..model.weights import build_smol

    paths = synth_videos(os.path.abspath(os.path.join(workdir, "serve_scale")), clients + 1, progress=progress)  # +1: the warm-up's
    if model:
        chat, name = KangarooChat.load(model), model
    else:
        m, tok = build_smol()
        chat, name = KangarooChat(m, tok), "kangaroo-smol architecture (untrained visual weights)"
    runs = [_run(chat, paths, legacy, clients, frames, max_tokens)
            for legacy in tqdm((True, False), desc="designs", disable=not progress)]
    before, after = runs
    import torch

    return {"benchmark": "serve_scale", "model": name, "clients": clients, "frames": frames,
            "max_tokens": max_tokens, "threads": torch.get_num_threads(), "runs": runs,
            "throughput_ratio": round(after["tokens_per_s"] / before["tokens_per_s"], 3) if before["tokens_per_s"] else None,
            "p95_ratio": round(after["latency_p95_s"] / before["latency_p95_s"], 3) if before["latency_p95_s"] else None,
            "ttft_p50_ratio": round(after["ttft_p50_s"] / before["ttft_p50_s"], 3) if before["ttft_p50_s"] else None}


def format_serve_scale(r: dict) -> str:
    lines = [f"{r['clients']} concurrent clients, each on its own video ({r['frames']} frames, {r['max_tokens']} "
             f"new tokens, greedy, streamed), {r['model']}, CPU {r['threads']} threads", "",
             "| design | errors | req/s | tokens/s | latency p50 s | latency p95 s | TTFT p50 s | largest batch |",
             "|---|---|---|---|---|---|---|---|"]
    for x in r["runs"]:
        lines.append(f"| {x['design']} | {x['errors']} | {x['requests_per_s']} | {x['tokens_per_s']} | "
                     f"{x['latency_p50_s']} | {x['latency_p95_s']} | {x['ttft_p50_s']} | {x['largest_batch']} |")
    lines.append(f"| **after / before** | | | **{r['throughput_ratio']}** | | **{r['p95_ratio']}** | "
                 f"**{r['ttft_p50_ratio']}** | |")
    return "\n".join(lines)
