"""``make demo``: the main job on the built-in default.

Generates a synthetic video with a known timeline (and a brief needle event), shows how
it is sampled, then asks the default model, kangaroo-smol, the benchmark-style questions
about it and prints each answer beside the ground truth (generated answers first, then the likeliest option), and finishes with a free-form
multi-round chat (the video is encoded once; the second round reuses the KV cache).
"""

from __future__ import annotations

import json
import os
import sys
import time

from .synth import SynthConfig, make_timeline, questions, write_video
from .synth.qa import caption
from .video import SamplingConfig, load_video, probe


def main(out: str = "demo_out", model: str = "kangaroo-smol", frames: int = 16) -> int:
    os.makedirs(out, exist_ok=True)
    tl = make_timeline(SynthConfig(duration=24.0, needle=True, needle_depth=0.6, num_objects=4), seed=2024)
    video = write_video(tl, os.path.join(out, "demo.mp4"))
    info = probe(video)
    print(f"== synthetic video {video}: {info.duration:.1f}s, {info.width}x{info.height}, {info.num_frames} frames")
    print(f"ground truth: {caption(tl)}\n")
    f = load_video(video, SamplingConfig(num_frames=frames))
    print(f"{frames} frames sampled at {[round(float(t), 2) for t in f.timestamps]} "
          f"(decoded {f.stats['decoded']} frames, {f.stats['seeks']} seeks)\n")

    from .eval import core
    from .model.chat import GenerationConfig, KangarooChat
    from .model.hub import resolve_model_path

    try:
        resolve_model_path(model)
    except FileNotFoundError as e:
        print(f"model not available ({e}); the video and its ground truth are in {out}/")
        return 0
    t = time.perf_counter()
    kc = KangarooChat.load(model, sampling=SamplingConfig(num_frames=frames))
    print(f"loaded {model} in {time.perf_counter() - t:.1f}s")
    if model == "kangaroo-smol":
        print("kangaroo-smol is the small built-in model: SmolLM2-135M-Instruct (de-quantised from a Q4_1 GGUF) and a\n"
              "small vision tower, trained only on synthetic videos of coloured shapes and timed events like this one.\n"
              "It is not a model for real-world footage: that needs Kangaroo-8B (README: the 8B path).\n")
    conv = kc.start(video)
    mcq = [q for q in questions(tl, 2024) if "candidates" in q]
    qs = [core.Question(q["question"], q["candidates"]) for q in mcq]
    # the way users ask: the benchmark prompt, the model writes its answer (greedy), the letter is read from it;
    # beside it the likeliest option text as the reply (lmms-eval's multiple_choice scoring)
    said = core.answer(kc, conv.visual, qs, "generate")
    liked = core.answer(kc, conv.visual, qs, "likelihood")
    right = right_lik = 0
    for q, g, lk in zip(mcq, said, liked):
        ok, ok_lik = g["pred"] == q["answer_index"], lk["pred"] == q["answer_index"]
        right, right_lik = right + ok, right_lik + ok_lik
        text = f"{g['output']!r} = {q['candidates'][g['pred']]}" if g["pred"] is not None else f"(unreadable: {g['output']!r})"
        print(f"[{q['family']:>9}] {q['question']}   truth: {q['answer']}\n"
              f"            generated:  {text:<40} {'OK' if ok else 'WRONG'}\n"
              f"            likelihood: {q['candidates'][lk['pred']]:<40} {'OK' if ok_lik else 'WRONG'}")
    total = len(mcq)
    print(f"\n{right}/{total} multiple-choice answers right as generated, {right_lik}/{total} by likelihood\n")
    for question in ("Describe what happens in the video.", "Which object appears first?"):
        t = time.perf_counter()
        print(f"you> {question}\nkangaroo> ", end="", flush=True)
        for delta in kc.ask_stream(conv, question, GenerationConfig.greedy(60)):
            print(delta, end="", flush=True)
        st = conv.stats[-1]
        print(f"\n   ({time.perf_counter() - t:.1f}s; {st['reused_tokens']} of {st['prompt_tokens']} prompt tokens "
              "reused from the cache)")
    print(json.dumps({"video": video, "model": model, "mc_generated_correct": right, "mc_likelihood_correct": right_lik,
                      "mc_total": total}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
