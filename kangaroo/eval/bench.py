"""``kangaroo bench score``: likelihood multiple-choice scoring with the video's prefix shared
against one sequence per option (lmms-eval's loglikelihood requests), in one run.

The same questions about the same video, the same model: the baseline runs every
(question, option) pair as its own forward pass over system prompt + video + question +
reply; a middle line prefills the video once per question; ``KangarooChat.score_options_many``
prefills the part all questions share once and runs each question's options as a batch
over that KV cache. Both produce the same scores (the
report gives the largest difference); the ratio of their seconds is the speedup.

The same questions are also answered by generation (the benchmark's letter prompt, greedy, as
``kangaroo eval`` asks them, in one ``ask_batch``): left-padded rows, each prefilling the video,
against the video's block prefilled once and shared by the batch; the answers must be the same.
"""

from __future__ import annotations

import os
import time

FRAMES = (16, 64)


def _video(workdir: str, duration: float) -> tuple[str, list[dict]]:
    from ..synth import SynthConfig, make_timeline, write_video
    from ..synth.qa import questions

    os.makedirs(workdir, exist_ok=True)
    tl = make_timeline(SynthConfig(duration=duration, fps=8.0, num_objects=max(3, int(duration // 8))), 11)
    path = os.path.join(workdir, f"bench_score_{duration:.0f}s.mp4")
    if not os.path.exists(path):
        write_video(tl, path)
    return path, [q for q in questions(tl, 11) if q.get("candidates")]


def one_sequence_scores(kc, visual, question: str, options: list[str]) -> list[float]:
    """The baseline: each option's reply log-likelihood from its own full forward pass, no cache."""
    return [lp for lp, _ in one_sequence_loglikelihoods(kc, visual, question, options)]


def one_sequence_loglikelihoods(kc, visual, question: str, options: list[str]) -> list[tuple[float, bool]]:
    """(log-likelihood, is_greedy) of each option's reply, each from its own full forward pass."""
    import torch

    prompt, conts = kc.render_replies(visual, question, options)
    out = []
    for cont in conts:
        with torch.inference_mode():
            logits = kc.model(torch.tensor([prompt + cont], device=kc.device), media_embeds=visual,
                              logits_to_keep=len(cont) + 1)["logits"][0, :-1]
        lp = torch.log_softmax(logits.float(), -1)
        target = torch.tensor(cont, device=kc.device)
        out.append((float(lp.gather(-1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())))
    return out


def bench_score(model: str | None = None, workdir: str = ".bench", frames=FRAMES, num_questions: int = 8,
                duration: float = 60.0, progress: bool = True) -> dict:
    import torch
    from tqdm import tqdm

    from ..model.chat import GenerationConfig, KangarooChat
    from ..prompts import mc_prompt
    from ..video import SamplingConfig

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    kc = KangarooChat.load(model or "kangaroo-smol")
    video, items = _video(workdir, duration)
    items = items[:num_questions]
    qs, opts = [it["question"] for it in items], [it["candidates"] for it in items]
    prompts, greedy = [mc_prompt(q, o, "synthetic") for q, o in zip(qs, opts)], GenerationConfig.greedy(32)
    cases = []
    for n in tqdm(frames, desc="bench score", disable=not progress):
        rows, info = kc.encode(video, SamplingConfig(num_frames=n))  # the same rows for both
        kc.score_options_many(rows, qs[:1], opts[:1])  # warm-up
        t = time.perf_counter()
        base = [one_sequence_scores(kc, rows, q, o) for q, o in zip(qs, opts)]
        t_base = time.perf_counter() - t
        t = time.perf_counter()
        for q, o in zip(qs, opts):  # the video prefilled once per question
            kc.score_options_many(rows, [q], [o])
        t_question = time.perf_counter() - t
        t = time.perf_counter()
        shared = kc.score_options_many(rows, qs, opts)
        t_shared = time.perf_counter() - t
        diff = max(abs(a - b) for x, y in zip(base, shared) for a, b in zip(x, y))
        same = sum(max(range(len(x)), key=x.__getitem__) == max(range(len(y)), key=y.__getitem__)
                   for x, y in zip(base, shared))
        t = time.perf_counter()
        gen_base = kc.ask_batch(rows, prompts, greedy, share_prefix=False)
        t_gen_base = time.perf_counter() - t
        t = time.perf_counter()
        gen_shared = kc.ask_batch(rows, prompts, greedy)
        t_gen = time.perf_counter() - t
        cases.append({"frames": n, "visual_tokens": info["visual_tokens"], "questions": len(qs),
                      "options": sum(len(o) for o in opts), "per_option_s": round(t_base, 3),
                      "per_question_s": round(t_question, 3), "shared_prefix_s": round(t_shared, 3),
                      "speedup": round(t_base / max(t_shared, 1e-9), 2),
                      "speedup_vs_per_question": round(t_question / max(t_shared, 1e-9), 2),
                      "max_abs_score_diff": round(diff, 5), "same_choice": same,
                      "generate_left_padded_s": round(t_gen_base, 3), "generate_shared_prefix_s": round(t_gen, 3),
                      "generate_speedup": round(t_gen_base / max(t_gen, 1e-9), 2),
                      "generate_same_answers": sum(a == b for a, b in zip(gen_base, gen_shared))})
    return {"benchmark": "score", "model": model or "kangaroo-smol", "device": str(kc.device), "cases": cases,
            "speedup": min(c["speedup"] for c in cases), "generate_speedup": min(c["generate_speedup"] for c in cases)}


def format_score(r: dict) -> str:
    lines = [f"likelihood MC scoring, {r['model']} on {r['device']}", "",
             "| frames | visual tokens | questions / options | one sequence per option s | video once per question s "
             "| shared prefix s | speedup (vs per option / per question) | max score diff | same choice |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in r["cases"]:
        lines.append(f"| {c['frames']} | {c['visual_tokens']} | {c['questions']} / {c['options']} | {c['per_option_s']} "
                     f"| {c['per_question_s']} | {c['shared_prefix_s']} | **{c['speedup']}x** / "
                     f"{c['speedup_vs_per_question']}x | {c['max_abs_score_diff']} | {c['same_choice']}/{c['questions']} |")
    lines += ["", "generated answers, one batch of all questions (greedy, the letter prompt)", "",
              "| frames | left-padded s | shared prefix s | speedup | same answers |", "|---|---|---|---|---|"]
    for c in r["cases"]:
        lines.append(f"| {c['frames']} | {c['generate_left_padded_s']} | {c['generate_shared_prefix_s']} "
                     f"| **{c['generate_speedup']}x** | {c['generate_same_answers']}/{c['questions']} |")
    return "\n".join(lines)
