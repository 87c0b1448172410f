"""``kangaroo bench serve``: the real server on a loopback port under concurrent clients.

1. Time to first token (server side, from the request's arrival) for a video the server
   has never seen (decode + vision + prefill) against a second question about the same
   video (visual rows cached, prefix KV reused), at 16 and 64 frames:
   ``cached_ttft_ratio`` = cached / uncached, per video, median (headline: 64 frames).
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
    """(server-side time to first token, client-side total latency) of one streamed request."""
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
            if msg["choices"][0].get("finish_reason") == "stop":
                first = msg["kangaroo"]["ttft_s"]
    total = time.perf_counter() - t0
    return (first if first is not None else total), total


def bench_serve(model: str | None = None, videos: int = 4, clients: int = 32, frames: int = 16,
                workdir: str = ".bench", ttft_frames: tuple[int, ...] = (16, 64)) -> dict:
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
        ttft = {}
        for n in ttft_frames:  # a fresh server-side sampling key per frame count: uncached first
            un, ca = [], []
            for u in urls:
                un.append(_ttft(srv.url, u, "What happens in the video?", n, 4)[0])
                ca.append(_ttft(srv.url, u, "Which object appears first?", n, 4)[0])
            ttft[n] = {"uncached_ttft_s": [round(x, 3) for x in un], "cached_ttft_s": [round(x, 3) for x in ca],
                       "cached_ttft_ratio": round(statistics.median(c / u for c, u in zip(ca, un)), 4)}
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
    return {
        "benchmark": "serve", "model": name, "videos": videos, "frames": frames, "clients": clients,
        "ttft_by_frames": ttft, "cached_ttft_ratio": ttft[max(ttft_frames)]["cached_ttft_ratio"],
        "throughput_rps": round(clients / wall, 3), "wall_s": round(wall, 2),
        "latency_p50_s": round(lat[len(lat) // 2], 3) if lat else None,
        "latency_p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3) if lat else None,
        "ttft_p50_s": round(statistics.median(ttfts), 3) if ttfts else None,
        "errors": errors,
    }


def format_serve(r: dict) -> str:
    lines = ["| metric | value |", "|---|---|"]
    for n, t in r["ttft_by_frames"].items():
        lines += [f"| {n} frames: uncached TTFT s (per video) | {t['uncached_ttft_s']} |",
                  f"| {n} frames: cached TTFT s (per video) | {t['cached_ttft_s']} |",
                  f"| {n} frames: cached / uncached TTFT (median) | {t['cached_ttft_ratio']} |"]
    lines += [f"| {r['clients']} concurrent clients ({r['frames']} frames): throughput | {r['throughput_rps']} req/s |",
              f"| latency p50 / p95 | {r['latency_p50_s']} s / {r['latency_p95_s']} s |",
              f"| TTFT p50 under load | {r['ttft_p50_s']} s |",
              f"| errors | {r['errors']} |"]
    return "\n".join(lines)
