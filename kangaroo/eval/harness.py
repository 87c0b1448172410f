"""The evaluation harness: prompts, resumable predictions, sharding, reports.

Every result records what changes a score: benchmark, frame count, sampler, resolution,
prompt template, model and generation settings. Predictions are appended to
``predictions.rankR.jsonl`` as they are made; a rerun skips what is there, so an
interrupted run resumes where it stopped. Shards (``--shard i/n`` or torchrun's
RANK/WORLD_SIZE) take every n-th item; the report merges whatever shards exist. Under
torchrun the ranks wait for each other (a gloo barrier) and rank 0 alone writes the merged
results.json, the same file a single process writes.
Questions about the same video share one encoding and are decoded as one batch.

An item whose video cannot be read (missing, corrupt) is recorded with its reason and
counted apart as ``unreadable`` in results.json / results.md: ``accuracy`` is over all
items (an unreadable one counts as wrong), ``accuracy_answered`` over the items read.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections import defaultdict
from dataclasses import dataclass

from tqdm import tqdm

from ..model.chat import KangarooChat
from ..prompts import LIKELIHOOD_TEMPLATE, OPEN_TEMPLATE, mc_template
from ..video import COUNT_SAMPLERS, SamplingConfig
from . import core
from .benchmarks import BENCHMARKS, NEEDS_JUDGE, RULE_SCORED, Item
from .extract import REPLY_KINDS
from .open_scoring import score_open
from .open_scoring import summarise as summarise_open

WINDOWS = ("video", "evidence")


@dataclass
class EvalConfig:
    benchmark: str
    data: str
    out: str
    frames: int = 16
    limit: int | None = None
    tasks: list[str] | None = None  # only these tasks / categories / question families
    rank: int = 0
    world: int = 1
    max_new_tokens: int = 32  # eval.core.MC_MAX_NEW_TOKENS
    batch_size: int = 8  # questions about one video decoded together
    judge_url: str | None = None  # OpenAI-compatible endpoint for open-ended scoring
    judge_model: str = "judge"
    mc_scoring: str = "generate"  # generate: the model names a letter | likelihood: the likeliest option text
    sampler: str = "uniform"  # uniform | events (ours: part of the frames on brief events), both `frames` frames
    # video: frames from the whole video (or the benchmark's clip) | evidence (ours, a diagnostic): frames only
    # from each question's ground-truth interval (synthetic set), so a wrong answer is one of perception, not search
    window: str = "video"

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {list(WINDOWS)}, got {self.window!r}")
        if self.mc_scoring not in ("generate", "likelihood"):
            raise ValueError(f"mc_scoring must be 'generate' or 'likelihood', got {self.mc_scoring!r}")
        if self.sampler not in COUNT_SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(COUNT_SAMPLERS)}, got {self.sampler!r}")

    def settings(self, kc: KangarooChat, model_name: str) -> dict:
        return {"benchmark": self.benchmark, "model": model_name, "frames": self.frames, "sampler": self.sampler,
                "window": self.window,
                "frames_per_slot": kc.model.config.slot_frames,
                "image_size": kc.preprocess.size, "resize": kc.preprocess.mode,
                "prompt_template": template_for(self.benchmark) if self.mc_scoring == "generate" else LIKELIHOOD_TEMPLATE,
                "mc_scoring": self.mc_scoring,
                "generation": {"greedy": True, "max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size},
                "limit": self.limit, "tasks": self.tasks, "judge": self.judge_url}


def template_for(benchmark: str) -> str:
    return OPEN_TEMPLATE if benchmark in NEEDS_JUDGE else mc_template(benchmark)


def question_of(item: Item) -> core.Question:
    return core.Question(item.question, None if item.open_ended else list(item.candidates), item.subtitles)


def prompt_for(item: Item, benchmark: str = "") -> str:
    """The prompt a generated answer to ``item`` is asked with (kangaroo.prompts)."""
    return question_of(item).prompt(benchmark)


def _pred_path(cfg: EvalConfig, rank: int) -> str:
    return os.path.join(cfg.out, f"predictions.rank{rank}.jsonl")


def _records(path: str) -> list[dict]:
    """The complete records of a predictions file (a line cut by a crash is skipped)."""
    out = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "qid" in rec:
                out.append(rec)
    return out


def _done(path: str) -> set[str]:
    """qids already answered; rewrites the file without a cut last line so appends stay valid."""
    if not os.path.exists(path):
        return set()
    recs = _records(path)
    with open(path, "rb") as f:
        clean = f.read().endswith(b"\n") or os.path.getsize(path) == 0
    if not clean:
        tmp = path + ".part"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
        os.replace(tmp, path)
    return {r["qid"] for r in recs}


def predict(kc: KangarooChat, cfg: EvalConfig, progress: bool = True) -> int:
    """Answer this shard's items not yet in its predictions file; returns how many were new."""
    items = BENCHMARKS.get(cfg.benchmark)(cfg.data)
    if cfg.tasks:
        items = [it for it in items if it.task in cfg.tasks]
    if cfg.limit:
        items = items[: cfg.limit]
    items = items[cfg.rank :: cfg.world]
    if cfg.window == "evidence":
        items = [evidence_window(it) for it in items]
    os.makedirs(cfg.out, exist_ok=True)
    path = _pred_path(cfg, cfg.rank)
    done = _done(path)
    todo = [it for it in items if it.qid not in done]
    groups = defaultdict(list)
    for it in todo:
        groups[(it.video, it.start, it.end)].append(it)
    bar = tqdm(total=len(todo), desc=f"eval {cfg.benchmark}", disable=not progress)
    with open(path, "a") as f:
        for (video, start, end), its in groups.items():
            sampling = SamplingConfig(sampler=cfg.sampler, num_frames=cfg.frames, start=start, end=end)
            try:
                rows, _ = kc.encode(video, sampling)
                error = reason = None
            except Exception as e:  # an unreadable video: counted apart (report), with its reason, not a crash
                rows, error = None, f"{type(e).__name__}: {e}"
                reason = getattr(e, "reason", type(e).__name__)  # VideoError's short code, e.g. not_found
            for b in range(0, len(its), cfg.batch_size):  # questions about one video, answered as a batch
                chunk = its[b : b + cfg.batch_size]
                outs = [None] * len(chunk) if error else core.answer(
                    kc, rows, [question_of(it) for it in chunk], cfg.mc_scoring, cfg.benchmark, cfg.max_new_tokens,
                    cfg.batch_size)
                for it, out in zip(chunk, outs):
                    rec = {"qid": it.qid, "task": it.task, "answer": it.answer, "output": None}
                    if it.extra.get("group"):
                        rec["group"] = it.extra["group"]
                    if error:
                        rec.update(pred=None, correct=False, error=error, unreadable=reason)
                    else:
                        rec.update(out)
                        if not it.open_ended:
                            rec["correct"] = rec["pred"] == it.answer
                        elif cfg.benchmark in RULE_SCORED:
                            rec.update(score_open(it.task, rec["output"], it.answer, it.extra.get("record", {})))
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                bar.update(len(chunk))
    bar.close()
    return len(todo)


def evidence_window(it: Item) -> Item:
    """The item with its clip narrowed to its ground-truth interval ``extra["evidence"] = [a, b]``
    (seconds; the synthetic set's needle and appear_at questions have one)."""
    ev = it.extra.get("evidence")
    if not (isinstance(ev, (list, tuple)) and len(ev) == 2 and all(isinstance(x, (int, float)) for x in ev)
            and ev[1] > ev[0]):
        raise ValueError(f"window 'evidence' needs one ground-truth interval [start, end] per question; "
                         f"{it.qid} ({it.task}) has {ev!r}: keep the tasks that have one (--tasks needle,appear_at)")
    return dataclasses.replace(it, start=float(ev[0]), end=float(ev[1]))


def judge_score(cfg: EvalConfig, question: str, reference: str, output: str) -> float:
    """0-3 from an OpenAI-compatible judge (MMBench-Video's scale)."""
    import httpx

    prompt = (f"Question: {question}\nReference answer: {reference}\nCandidate answer: {output}\n"
              "Score the candidate from 0 (wrong) to 3 (fully correct). Reply with the number only.")
    r = httpx.post(cfg.judge_url.rstrip("/") + "/chat/completions", timeout=120,
                   json={"model": cfg.judge_model, "messages": [{"role": "user", "content": prompt}], "temperature": 0})
    r.raise_for_status()
    text = r.json()["choices"][0]["message"]["content"]
    import re

    m = re.search(r"[0-3](?:\.\d+)?", text)
    return float(m.group(0)) if m else 0.0


def load_predictions(out: str) -> list[dict]:
    """Every complete prediction record of an evaluation folder (all ranks)."""
    recs = []
    for p in sorted(os.listdir(out)):
        if p.startswith("predictions.rank") and p.endswith(".jsonl"):
            recs += _records(os.path.join(out, p))
    return sorted(recs, key=lambda r: r["qid"])  # the same order however many shards wrote them


def report(kc: KangarooChat, cfg: EvalConfig, model_name: str) -> dict:
    recs = load_predictions(cfg.out)
    by_task = defaultdict(list)
    for r in recs:
        by_task[r["task"]].append(r)
    summary = {"settings": cfg.settings(kc, model_name), "n": len(recs),
               "per_task_n": {t: len(rs) for t, rs in sorted(by_task.items())}}
    if cfg.benchmark in RULE_SCORED:  # open answers against the known truth; captions by event recall
        scored = [r for r in recs if r.get("correct") is not None and r["task"] != "caption"]
        per = {t: round(sum(bool(r["correct"]) for r in rs) / len(rs), 4) for t, rs in sorted(by_task.items())
               if t != "caption"}
        summary.update(accuracy=round(sum(bool(r["correct"]) for r in scored) / max(1, len(scored)), 4),
                       per_task=per, open=summarise_open(recs), errors=sum(1 for r in recs if r.get("error")))
        summary.update(unreadable_summary(recs))
    elif cfg.benchmark in NEEDS_JUDGE:
        if not cfg.judge_url:
            summary.update(accuracy=None, score=None, note="open-ended: scores need a judge endpoint (--judge-url)")
        else:
            items = {it.qid: it for it in BENCHMARKS.get(cfg.benchmark)(cfg.data)}
            scores = {r["qid"]: judge_score(cfg, items[r["qid"]].question, r["answer"], r["output"] or "") for r in recs}
            per = {t: round(sum(scores[r["qid"]] for r in rs) / len(rs), 3) for t, rs in by_task.items()}
            summary.update(score=round(sum(scores.values()) / max(1, len(scores)), 3), per_task=per, accuracy=None)
    else:
        per = {t: round(sum(r["correct"] for r in rs) / len(rs), 4) for t, rs in sorted(by_task.items())}
        by_group = defaultdict(list)
        for r in recs:
            if r.get("group"):
                by_group[r["group"]].append(r["correct"])
        if by_group:  # a finer breakdown where the benchmark gives one (synthetic: when by position, count by n)
            summary["per_group"] = {g: {"n": len(c), "accuracy": round(sum(c) / len(c), 4)}
                                    for g, c in sorted(by_group.items())}
        summary.update(accuracy=round(sum(r["correct"] for r in recs) / max(1, len(recs)), 4), per_task=per,
                       errors=sum(1 for r in recs if r.get("error")),
                       unparsed=sum(1 for r in recs if r.get("pred") is None and not r.get("error")))
        summary.update(unreadable_summary(recs))
        kinds = reply_kinds(recs)
        if kinds:
            summary["replies"] = kinds
    with open(os.path.join(cfg.out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
    with open(os.path.join(cfg.out, "results.md"), "w") as f:
        f.write(markdown(summary))
    plot_per_task(summary, os.path.join(cfg.out, "per_task.png"))
    return summary


def markdown(summary: dict) -> str:
    s = summary["settings"]
    head = (f"**{s['benchmark']}** — model `{s['model']}`, {s['frames']} frames ({s['sampler']}), "
            f"{s['image_size']} px, " + ("multiple choice by likelihood" if s.get("mc_scoring") == "likelihood"
                                          else "greedy") + "\n\n")
    key = "accuracy" if summary.get("accuracy") is not None else "score"
    rows = [f"| task | {key} |", "|---|---|"]
    rows += [f"| {t} | {v} |" for t, v in summary.get("per_task", {}).items()]
    rows.append(f"| **overall** ({summary['n']}) | **{summary.get(key)}** |")
    if summary.get("per_group"):
        rows += ["", "| group | n | accuracy |", "|---|---|---|"]
        rows += [f"| {g} | {v['n']} | {v['accuracy']} |" for g, v in summary["per_group"].items()]
    if summary.get("replies"):
        rows += ["", "| reply | n | right |", "|---|---|---|"]
        rows += [f"| {k} | {v['n']} | {v['correct']} |" for k, v in summary["replies"].items()]
    if "unreadable" in summary:
        rows += ["", unreadable_line(summary)]
    return head + "\n".join(rows) + "\n"


def reply_kinds(recs: list[dict]) -> dict:
    """Generated multiple-choice replies by what they consist of (``extract.REPLY_KINDS``), with how
    many of each were right: a wrong "text_disagrees" is a letter bound to the wrong option text, a
    wrong "text_no_option" an answer in the model's own words."""
    out: dict = {}
    for r in recs:
        if r.get("reply"):
            k = out.setdefault(r["reply"], {"n": 0, "correct": 0})
            k["n"] += 1
            k["correct"] += bool(r.get("correct"))
    return {k: out[k] for k in REPLY_KINDS if k in out}


def unreadable_summary(recs: list[dict]) -> dict:
    """Items whose video could not be read, apart from wrong answers. ``accuracy`` stays over all
    items (an unreadable one counts as wrong: the score a benchmark's leaderboard would give);
    ``accuracy_answered`` is over the items the model saw."""
    bad = [r for r in recs if r.get("error")]
    answered = [r for r in recs if not r.get("error")]
    scored = [r for r in answered if r.get("correct") is not None]  # descriptions have recall, not a verdict
    reasons: dict[str, int] = defaultdict(int)
    for r in bad:
        reasons[r.get("unreadable") or r["error"].split(":")[0]] += 1
    return {"unreadable": len(bad), "unreadable_reasons": dict(sorted(reasons.items())),
            "unreadable_examples": [{"qid": r["qid"], "error": r["error"]} for r in bad[:5]],
            "answered": len(answered),
            "accuracy_answered": round(sum(bool(r["correct"]) for r in scored) / len(scored), 4) if scored else None}


def unreadable_line(summary: dict) -> str:
    n, bad = summary["n"], summary["unreadable"]
    if not bad:
        return f"unreadable: 0 (every one of the {n} items was read)"
    why = ", ".join(f"{k} {v}" for k, v in summary["unreadable_reasons"].items())
    first = summary["unreadable_examples"][0]
    return (f"**unreadable: {bad}** of {n} items ({why}; e.g. {first['qid']}: {first['error']}). "
            f"Accuracy over all {n} items (unreadable counted wrong): {summary['accuracy']}; "
            f"over the {summary['answered']} answered: {summary['accuracy_answered']}")


def plot_per_task(summary: dict, png: str) -> None:
    per = summary.get("per_task") or {}
    if not per:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(per) + 2), 3.5))
    ax.bar(range(len(per)), list(per.values()))
    ax.set_xticks(range(len(per)), list(per), rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1 if summary.get("accuracy") is not None else 3)
    ax.set_title(f"{summary['settings']['benchmark']} @ {summary['settings']['frames']} frames")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def run_eval(kc: KangarooChat, cfg: EvalConfig, model_name: str, progress: bool = True) -> dict:
    predict(kc, cfg, progress)
    if not under_torchrun(cfg):
        return report(kc, cfg, model_name)
    import torch.distributed as dist

    own = not dist.is_initialized()
    if own:  # gloo: a barrier needs no GPU; the slowest shard may take hours
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))
    try:
        dist.barrier()  # every shard's predictions are written
        if cfg.rank == 0:
            summary = report(kc, cfg, model_name)
        dist.barrier()  # the one writer is done
        if cfg.rank != 0:
            with open(os.path.join(cfg.out, "results.json")) as f:
                summary = json.load(f)
    finally:
        if own:
            dist.destroy_process_group()
    return summary


def under_torchrun(cfg: EvalConfig) -> bool:
    """This process is one of torchrun's ranks and shards by them (not a manual ``--shard``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world > 1 and cfg.world == world and cfg.rank == int(os.environ.get("RANK", "0"))


def rank_device(device: str) -> str:
    """``cuda`` under torchrun is this rank's GPU, ``cuda:LOCAL_RANK``; any other device as given."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def shard_from_env(cfg: EvalConfig) -> EvalConfig:
    rank, world = int(os.environ.get("RANK", cfg.rank)), int(os.environ.get("WORLD_SIZE", cfg.world))
    return dataclasses.replace(cfg, rank=rank, world=world)
