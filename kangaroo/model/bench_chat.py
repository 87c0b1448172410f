"""``kangaroo bench chat``: what the per-frame encoder cache and the KV reuse save.

kangaroo-smol's architecture (untrained visual weights: timings do not depend on them) on a
generated 120 s video. Three follow-ups to a first ask, each counting the frames the vision
tower runs on again although they were seen before (goal: 0) and the frames that are new:

- ``another_count``: 64 uniform frames, then 32 (uniform grids of different counts share few
  timestamps, so most of the 32 are new; none of the shared ones is encoded again);
- ``another_range``: 1 frame per second of the whole video, then of [30 s, 60 s];
- ``grown_file``: 1 frame per second of a recording (MPEG-TS) while half of it is written,
  then again once the rest is: the first half's frames come from the cache (the video's
  identity holds while the file grows, kangaroo/video/identity.py).

TTFT at 64 frames: the first ask (decode + tower + prefill + first token) against a second
round of the same conversation (KV reuse) and against a fresh conversation about the same
video (the tower skipped, the prefill redone).
"""

from __future__ import annotations

import os
import time


def _video(workdir: str) -> str:
    from .bench import _video as model_bench_video

    return model_bench_video(workdir)


def _to_ts(src: str, dst: str) -> str:
    import av

    if os.path.exists(dst):
        return dst
    with av.open(src) as i, av.open(dst + ".part", "w", format="mpegts") as o:
        s_in = i.streams.video[0]
        s_out = o.add_stream("libx264", rate=int(round(float(s_in.average_rate or 8))))
        s_out.width, s_out.height, s_out.pix_fmt = s_in.codec_context.width, s_in.codec_context.height, "yuv420p"
        for frame in i.decode(s_in):
            for p in s_out.encode(frame.reformat(format="yuv420p")):
                o.mux(p)
        for p in s_out.encode():
            o.mux(p)
    os.replace(dst + ".part", dst)
    return dst


def _count(kc, video, sampling) -> dict:
    before = dict(kc.frame_cache.stats)
    keys_before = set(kc.frame_cache.items)
    t = time.perf_counter()
    _, info = kc.encode(video, sampling)
    dt = time.perf_counter() - t
    encoded = kc.frame_cache.stats["encoded"] - before["encoded"]
    new_keys = len(set(kc.frame_cache.items) - keys_before)
    seen = info["num_frames"] - new_keys
    return {"frames": info["num_frames"], "seen_before": seen, "new": new_keys,
            "reencoded_seen": encoded - new_keys, "encode_s": round(dt, 3)}


def _ttft(kc, conv, question, gen) -> float:
    t = time.perf_counter()
    stream = kc.ask_stream(conv, question, gen)
    next(stream, None)
    dt = time.perf_counter() - t
    for _ in stream:
        pass
    return dt


def bench_chat(workdir: str = ".bench", progress: bool = True) -> dict:
    import torch

    from ..video import SamplingConfig
    from .chat import GenerationConfig, KangarooChat
    from .weights import build_smol

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    video = _video(workdir)
    model, tok = build_smol()
    gen = GenerationConfig.greedy(4)
    cases = {}
    kc = KangarooChat(model, tok)
    first = _count(kc, video, SamplingConfig(num_frames=64))
    cases["another_count"] = {"first": first, "then": _count(kc, video, SamplingConfig(num_frames=32))}
    fps = dict(sampler="fps", fps=1.0, min_frames=1, max_frames=400)
    kc = KangarooChat(model, tok)
    cases["another_range"] = {"first": _count(kc, video, SamplingConfig(**fps)),
                              "then": _count(kc, video, SamplingConfig(**fps, start=30.0, end=60.0))}
    ts = _to_ts(video, os.path.join(workdir, "bench_chat_120s.ts"))
    growing = os.path.join(workdir, "bench_chat_growing.ts")
    data = open(ts, "rb").read()
    half = (len(data) // 2) // 188 * 188  # whole MPEG-TS packets, as a recorder writes them
    with open(growing, "wb") as f:
        f.write(data[:half])
    kc = KangarooChat(model, tok)
    grown = {"first": _count(kc, growing, SamplingConfig(**fps))}
    with open(growing, "ab") as f:
        f.write(data[half:])
    grown["then"] = _count(kc, growing, SamplingConfig(**fps))
    cases["grown_file"] = grown
    os.remove(growing)

    kc = KangarooChat(model, tok, sampling=SamplingConfig(num_frames=64))
    t = time.perf_counter()
    conv = kc.start(video)
    stream = kc.ask_stream(conv, "What happens in the video?", gen)
    next(stream, None)
    ttft1 = time.perf_counter() - t
    for _ in stream:
        pass
    ttft2 = _ttft(kc, conv, "Which object appears first?", gen)
    t = time.perf_counter()
    fresh = kc.start(video)
    _ttft(kc, fresh, "Which object appears first?", gen)
    ttft3 = time.perf_counter() - t  # encode (decode + frame cache) + prefill + first token
    seen = sum(c["then"]["seen_before"] for c in cases.values())
    re = sum(c["then"]["reencoded_seen"] for c in cases.values())
    report = {"benchmark": "chat", "model": "kangaroo-smol architecture (untrained visual weights)",
              "cases": cases, "reencoded_fraction_of_seen": round(re / max(1, seen), 4),
              "ttft_64_frames": {"first_s": round(ttft1, 3), "second_round_s": round(ttft2, 4),
                                 "second_round_ratio": round(ttft2 / ttft1, 4), "fresh_conversation_s": round(ttft3, 3),
                                 "fresh_conversation_ratio": round(ttft3 / ttft1, 4)}}
    return report


def format_chat(r: dict) -> str:
    rows = ["| case | first: frames | then: frames | seen before | encoded again | new |", "|---|---|---|---|---|---|"]
    for name, c in r["cases"].items():
        t = c["then"]
        rows.append(f"| {name} | {c['first']['frames']} | {t['frames']} | {t['seen_before']} | {t['reencoded_seen']} | "
                    f"{t['new']} |")
    tt = r["ttft_64_frames"]
    rows.append("")
    rows.append(f"re-encoded fraction of frames seen before: {r['reencoded_fraction_of_seen']}")
    rows.append(f"TTFT at 64 frames: first {tt['first_s']} s; second round {tt['second_round_s']} s "
                f"({tt['second_round_ratio']}x); a fresh conversation about the same video {tt['fresh_conversation_s']} s "
                f"({tt['fresh_conversation_ratio']}x)")
    return "\n".join(rows)
