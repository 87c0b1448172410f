"""``kangaroo bench watch``: time to first token over a growing stream, against answering from scratch.

A synthetic stream (the synthetic data's shapes, rendered in memory) is fed to a ``WatchSession``
at ``fps`` frames per second of video, faster than real time. At each checkpoint (1, 5, 10 and
20 minutes of stream) the same question is asked both ways:

- session: ``WatchSession.ask`` (only the question and the video's closing markers are
  prefilled; the slots are in the KV cache already);
- scratch: ``KangarooChat`` over exactly the frames the session holds (every frame through the
  vision tower, the whole prompt prefilled), the way ``kangaroo ask`` answers.

Both generate one token (greedy), so TTFT is the whole time (session: median of two asks). The report gives both TTFTs and
their ratio, the frames held (within the budget once thinning starts), the session's KV-cache +
slot bytes and the process's RSS, and the ingest rate (frames per second of wall time, thinning
rebuilds included). The plot (TTFT against stream length) goes to ``workdir/watch_ttft.png``.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch

from ..procstat import status_mb

QUESTION = "Which object is on screen at the end of the video?"


def _stream(width=128, height=96, seconds=1200, seed=0):
    """frame(t) for a long synthetic video: shapes coming and going (the synthetic data's timelines)."""
    from ..synth.render import render_frame
    from ..synth.timeline import SynthConfig, make_timeline

    tl = make_timeline(SynthConfig(duration=seconds, fps=1, width=width, height=height, num_objects=60), seed)
    return lambda t: render_frame(tl, t)


def bench_watch(model: str | None = None, workdir: str = ".bench", quick: bool = False, progress: bool = True,
                fps: float = 1.0) -> dict:
    from tqdm import tqdm

    from ..video import Frames
    from .chat import GenerationConfig, KangarooChat
    from .session import WatchConfig, WatchSession

    minutes = (0.5, 1.0) if quick else (1, 5, 10, 20)
    chat = KangarooChat.load(model or "kangaroo-smol")
    session = WatchSession(chat, WatchConfig(fps=fps))
    frame = _stream(seconds=int(max(minutes) * 60) + 2)
    gen = GenerationConfig.greedy(1)
    rows, fed, ingest_s = [], 0, 0.0
    total = int(max(minutes) * 60 * fps)
    bar = tqdm(total=total, unit="frame", desc="stream", disable=not progress)
    for m in minutes:
        upto = int(m * 60 * fps)
        while fed < upto:
            batch = [((i + 0.5) / fps, frame((i + 0.5) / fps)) for i in range(fed, min(upto, fed + 8))]
            t0 = time.perf_counter()
            session.add_frames(batch)
            ingest_s += time.perf_counter() - t0
            fed += len(batch)
            bar.update(len(batch))
        live = [session.ask(QUESTION, gen)["ttft_s"] for _ in range(2)]
        ts = session.timestamps
        video = Frames(np.stack([frame(t) for t in ts]), np.array(ts), list(ts), None)
        scratch = []
        for _ in range(1):  # one run: the scratch answer costs seconds, the noise is far below the ratio
            t0 = time.perf_counter()
            conv = chat.start(video)
            chat.ask(conv, QUESTION, gen)
            scratch.append(time.perf_counter() - t0)
        s_live, s_scratch = statistics.median(live), statistics.median(scratch)
        rows.append({"stream_minutes": m, "frames_seen": fed, "frames_held": len(ts),
                     "cached_tokens": session.cache.get_seq_length(), "ttft_session_s": round(s_live, 4),
                     "ttft_scratch_s": round(s_scratch, 4), "ratio": round(s_live / s_scratch, 4),
                     "session_mb": round(session.memory_bytes() / 2**20, 2), "rss_mb": round(status_mb("VmRSS"), 1)})
    bar.close()
    full = [r for r in rows if r["frames_seen"] >= session.max_frames]
    flat = max(r["ttft_session_s"] for r in rows) / min(r["ttft_session_s"] for r in rows)
    report = {"model": model or "kangaroo-smol", "fps": fps, "question": QUESTION, "max_frames": session.max_frames,
              "policy": session.config.policy, "threads": torch.get_num_threads(), "rows": rows,
              "ttft_flatness": round(flat, 3), "ratio_at_end": rows[-1]["ratio"],
              "session_mb_once_full": [r["session_mb"] for r in full],
              "ingest_frames_per_s": round(fed / ingest_s, 2) if ingest_s else None,
              "thinning": {k: session.stats[k] for k in ("frames_dropped", "rebuilds", "rebuilt_tokens")}}
    os.makedirs(workdir, exist_ok=True)
    report["plot"] = plot_watch(report, os.path.join(workdir, "watch_ttft.png"))
    session.close()
    return report


def plot_watch(report: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["stream_minutes"] for r in report["rows"]]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(x, [r["ttft_scratch_s"] for r in report["rows"]], "o-", label="from scratch (encode + prefill)")
    ax.plot(x, [r["ttft_session_s"] for r in report["rows"]], "o-", label="watch session (question only)")
    ax.set_xlabel("stream length (minutes at %g fps)" % report["fps"])
    ax.set_ylabel("time to first token (s)")
    ax.set_title(f"{report['model']}: budget {report['max_frames']} frames ({report['policy']})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def format_watch(r: dict) -> str:
    lines = [f"watch session vs from scratch: {r['model']}, {r['fps']:g} fps, budget {r['max_frames']} frames "
             f"({r['policy']}), {r['threads']} threads", "",
             "| stream | frames held | cached tokens | TTFT session | TTFT scratch | ratio | session MB | RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['stream_minutes']:g} min | {x['frames_held']} | {x['cached_tokens']} | "
                     f"{x['ttft_session_s']:.3f} s | {x['ttft_scratch_s']:.3f} s | {x['ratio']:.3f} | "
                     f"{x['session_mb']:.1f} | {x['rss_mb']:.0f} |")
    lines += ["", f"session TTFT max/min over the stream: {r['ttft_flatness']:.2f}x; ingest "
              f"{r['ingest_frames_per_s']} frames/s (thinning: {r['thinning']}); plot: {r['plot']}"]
    return "\n".join(lines)
