"""``kangaroo bench serve``: the real server on a loopback port under concurrent clients.

1. Time to first token for a video the server has never seen (decode + vision + prefill)
   against a second question about the same video (visual rows cached, prefix KV reused):
   ``cached_ttft_ratio`` = cached / uncached, per video, median.
2. 32 concurrent clients, each streaming an answer about one of a handful of videos:
   throughput, p50/p95 latency, p50 time to first token, errors.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import json
import os
import statistics
import tempfile
import time

import httpx


def _ttft(url: str, video: str, question: str, frames: int, max_tokens: int) -> tuple[float, float]:
    body = {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": video}},
                                                      {"type": "text", "text": question}]}],
            "stream": True, "max_tokens": max_tokens, "temperature": 0, "frames": frames}
    t0 = time.perf_counter()
    first = None
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.read()[:200]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            msg = json.loads(line[6:])
            if "error" in msg:
                raise RuntimeError(msg["error"]["message"])
            if first is None and msg["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return (first if first is not None else total), total


def bench_serve(model: str | None = None, videos: int = 4, clients: int = 32, frames: int = 16,
                workdir: str = ".bench") -> dict:
    from ..model.chat import KangarooChat
    from ..model.weights import build_smol
    from ..synth import SynthConfig, make_timeline, write_video
    from . import ServeConfig, build_app
    from .testserver import LoopbackServer

    os.makedirs(workdir, exist_ok=True)
    paths = []
    for i in range(videos):
        p = os.path.join(workdir, f"bench_serve_{i}.mp4")
        if not os.path.exists(p):
            write_video(make_timeline(SynthConfig(duration=60.0, fps=8.0, num_objects=6, needle=True), 100 + i), p)
        paths.append(p)
    urls = ["data:video/mp4;base64," + base64.b64encode(open(p, "rb").read()).decode() for p in paths]
    if model:
        chat = KangarooChat.load(model)
        name = model
    else:
        m, tok = build_smol()
        chat, name = KangarooChat(m, tok), "kangaroo-smol architecture (untrained visual weights)"
    cfg = ServeConfig(model="bench", store=tempfile.mkdtemp(prefix="kg_serve_"), max_new_tokens=16, max_queue=256)
    with LoopbackServer(build_app(cfg, chat=chat)) as srv:
        uncached, cached = [], []
        for u in urls:
            uncached.append(_ttft(srv.url, u, "What happens in the video?", frames, 4)[0])
            cached.append(_ttft(srv.url, u, "Which object appears first?", frames, 4)[0])
        errors = 0
        lat, ttfts = [], []

        def client(i):
            return _ttft(srv.url, urls[i % len(urls)], f"Question {i}: what is on screen?", frames, 8)

        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(clients) as ex:
            futs = [ex.submit(client, i) for i in range(clients)]
            for f in futs:
                try:
                    a, b = f.result()
                    ttfts.append(a)
                    lat.append(b)
                except Exception:
                    errors += 1
        wall = time.perf_counter() - t0
    lat.sort()
    ratios = [c / u for c, u in zip(cached, uncached)]
    return {
        "benchmark": "serve", "model": name, "videos": videos, "frames": frames, "clients": clients,
        "uncached_ttft_s": [round(x, 3) for x in uncached], "cached_ttft_s": [round(x, 3) for x in cached],
        "cached_ttft_ratio": round(statistics.median(ratios), 4),
        "throughput_rps": round(clients / wall, 3), "wall_s": round(wall, 2),
        "latency_p50_s": round(lat[len(lat) // 2], 3) if lat else None,
        "latency_p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3) if lat else None,
        "ttft_p50_s": round(statistics.median(ttfts), 3) if ttfts else None,
        "errors": errors,
    }


def format_serve(r: dict) -> str:
    return "\n".join([
        "| metric | value |", "|---|---|",
        f"| uncached TTFT s (per video) | {r['uncached_ttft_s']} |",
        f"| cached TTFT s (per video) | {r['cached_ttft_s']} |",
        f"| cached / uncached TTFT (median) | {r['cached_ttft_ratio']} |",
        f"| {r['clients']} concurrent clients: throughput | {r['throughput_rps']} req/s |",
        f"| latency p50 / p95 | {r['latency_p50_s']} s / {r['latency_p95_s']} s |",
        f"| TTFT p50 under load | {r['ttft_p50_s']} s |",
        f"| errors | {r['errors']} |"])
