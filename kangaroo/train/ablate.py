"""``kangaroo ablate``: the training ablations, at equal compute, evaluated and plotted.

An ablation (registered by name) turns a curriculum (a list of stage recipes) into named
variants; each variant is trained with ``run_curriculum`` and its final model evaluated
on a held-out synthetic set with the evaluation harness. Output: ``results.json``,
``results.md`` and ``ablation.png`` (accuracy per question family, one bar per variant,
with 95% intervals).

- ``curriculum``: the curriculum as given, against training directly on its final stage
  from scratch. Equal compute = equal training tokens: the final-only run gets as many
  steps as the curriculum's token budget (sum over stages of steps x rows x max_seq_len)
  buys at the final stage's row size. Both variants' measured tokens and seconds are
  reported next to their accuracy.
- ``tpe``: the same curriculum with the temporal position embedding from real timestamps
  (``sincos``), from frame indices (``index``) and without one (``none``); evaluated on the
  "what appears at time t" and "when" families by default.
- ``time_labels`` (ours): the final stage with each slot's start time written as text
  (``time_labels: true``) against the same stage without; the stages before it are shared,
  without labels, and trained once.

Variants train in order and resume (``--resume``) like any curriculum; leading stages a
variant shares with an earlier one (the tags stages) are trained once and copied.
``steps_scale`` < 1 runs a cheaper ablation: every language-model stage's steps scaled alike.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

from ..registry import Registry
from .recipe import MODULES, Recipe

ABLATIONS: Registry = Registry("ablation")


def _tokens(r: Recipe) -> int:
    return r.max_steps * r.rows_per_step * r.max_seq_len


@ABLATIONS.register("curriculum")
def curriculum_variants(stages: list[Recipe]) -> dict[str, list[Recipe]]:
    # leading vision pre-training stages (objective: tags) stand in for a pre-trained tower:
    # both variants get them, and they are not part of the language-model token budget
    k = 0
    while k < len(stages) - 1 and stages[k].objective == "tags":
        k += 1
    pre, stages = stages[:k], stages[k:]
    last = stages[-1]
    budget = sum(_tokens(r) for r in stages)
    steps = max(1, round(budget / (last.rows_per_step * last.max_seq_len)))
    trained = [m for m in MODULES if any(m in r.train for r in stages)]  # everything the curriculum trains
    if "lora" in trained and "llm" in trained:
        trained.remove("lora")
    lora = next((r.lora for r in stages if r.lora is not None), None)
    final = dataclasses.replace(last, name=f"final_only_{last.name}", init="previous" if pre else stages[0].init,
                                tpe=(pre or stages)[0].tpe,
                                max_steps=steps, warmup_steps=min(steps - 1, max(r.warmup_steps for r in stages)),
                                train=trained, lora=lora if "lora" in trained else None,
                                save_every=max(1, steps // 5))
    return {"curriculum": pre + stages, "final_only": pre + [final]}


@ABLATIONS.register("tpe")
def tpe_variants(stages: list[Recipe]) -> dict[str, list[Recipe]]:
    if stages[0].init not in ("smol", "8b"):
        raise ValueError("the tpe ablation builds fresh models: the first stage's init must be 'smol' or '8b'")
    # vision pre-training (tags) never sees a timestamp: shared, and the variants fork after it
    return {t: [r if r.objective == "tags" else dataclasses.replace(r, tpe=t) for r in stages]
            for t in ("sincos", "index", "none")}


@ABLATIONS.register("time_labels")
def time_label_variants(stages: list[Recipe]) -> dict[str, list[Recipe]]:
    pre = [dataclasses.replace(r, time_labels=False) if r.time_labels else r for r in stages[:-1]]
    last = stages[-1]
    return {"labels": pre + [dataclasses.replace(last, time_labels=True)],
            "tpe_only": pre + [dataclasses.replace(last, time_labels=False)]}


def scale_steps(stages: list[Recipe], factor: float) -> list[Recipe]:
    """A cheaper (factor < 1) run of the same ablation: every language-model stage's steps,
    warm-up and checkpoint interval scaled; vision pre-training (tags) stages kept as they are."""
    if factor <= 0:
        raise ValueError("the steps scale must be > 0")
    out = []
    for r in stages:
        if r.objective != "tags" and factor != 1:
            steps = max(1, round(r.max_steps * factor))
            r = dataclasses.replace(r, max_steps=steps, warmup_steps=min(steps - 1, round(r.warmup_steps * factor)),
                                    save_every=max(1, round(r.save_every * factor)))
        out.append(r)
    return out


def _shared(done: list[tuple[str, list[Recipe]]], vout: str, recipes: list[Recipe]) -> int:
    """Copy the leading stages this variant shares with an already trained one; their count."""
    best, src = 0, None
    for pout, prev in done:
        n = 0  # shared and finished there
        while (n < min(len(prev), len(recipes)) and prev[n] == recipes[n]
               and os.path.exists(os.path.join(pout, f"{n + 1}_{prev[n].name}", "model", "config.json"))):
            n += 1
        if n > best:
            best, src = n, pout
    for i in range(best):
        d = f"{i + 1}_{recipes[i].name}"
        if os.path.abspath(os.path.join(src, d)) != os.path.abspath(os.path.join(vout, d)):
            shutil.rmtree(os.path.join(vout, d), ignore_errors=True)
            shutil.copytree(os.path.join(src, d), os.path.join(vout, d), ignore=shutil.ignore_patterns("checkpoints"))
    return best


DEFAULT_TASKS = {"curriculum": None, "tpe": ["appear_at", "when"]}


def run_ablation(name: str, stages: list[Recipe], out: str, data: str, frames: int = 16, limit: int | None = None,
                 tasks: list[str] | None = None, resume: bool = False, progress: bool = True,
                 mc_scoring: str = "generate", steps_scale: float = 1.0) -> dict:
    from ..eval.harness import EvalConfig, run_eval
    from ..model.chat import KangarooChat
    from .trainer import run_curriculum

    variants = ABLATIONS.get(name)(scale_steps(stages, steps_scale))
    tasks = tasks if tasks is not None else DEFAULT_TASKS.get(name)
    results, done = {}, []
    for vname, recipes in variants.items():
        vout = os.path.join(out, vname)
        run_curriculum(recipes, vout, resume=resume, progress=progress, reuse=_shared(done, vout, recipes))
        done.append((vout, recipes))
        model_dir = os.path.join(vout, f"{len(recipes)}_{recipes[-1].name}", "model")
        compute = _measured(vout, recipes)
        kc = KangarooChat.load(model_dir)
        ev = run_eval(kc, EvalConfig("synthetic", data, os.path.join(vout, "eval"), frames=frames, limit=limit,
                                     tasks=tasks, mc_scoring=mc_scoring), vname, progress=progress)
        results[vname] = {"accuracy": ev["accuracy"], "per_task": ev["per_task"], "n": ev.get("n"),
                          "per_task_n": ev.get("per_task_n", {}), **compute,
                          "stages": [r.name for r in recipes], "steps": [r.max_steps for r in recipes]}
    report = {"ablation": name, "data": data, "frames": frames, "tasks": tasks, "mc_scoring": mc_scoring,
              "steps_scale": steps_scale, "variants": results}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(format_ablation(report))
    plot_ablation(report, os.path.join(out, "ablation.png"))
    return report


def _measured(vout: str, recipes: list[Recipe]) -> dict:
    """Language-model training tokens and seconds (all stages) actually spent, from the metrics.jsonl files."""
    tokens = seconds = 0.0
    for i, r in enumerate(recipes):
        path = os.path.join(vout, f"{i + 1}_{r.name}", "metrics.jsonl")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for line in f:
                m = json.loads(line)
                if "img_s" in m:  # a tags stage: images, not language-model tokens
                    seconds += r.batch_size / max(m["img_s"], 1e-9)
                    continue
                tokens += m["tokens"]
                seconds += m["tokens"] / max(m["tok_s"], 1e-9)
    return {"train_tokens": int(tokens), "train_seconds": round(seconds, 1)}


def ci95(p: float, n: int | None) -> float:
    """Half-width of the normal-approximation 95% interval of an accuracy p over n questions."""
    return 1.96 * (p * (1 - p) / n) ** 0.5 if n else float("nan")


def format_ablation(r: dict) -> str:
    tasks = sorted({t for v in r["variants"].values() for t in v["per_task"]})
    scoring = r.get("mc_scoring", "generate")
    lines = [f"# Ablation: {r['ablation']} ({r['frames']} frames, {r['data']}, multiple choice by {scoring})", "",
             "| variant | accuracy | " + " | ".join(tasks) + " | train tokens | train s |",
             "|---|---|" + "---|" * len(tasks) + "---|---|"]
    for name, v in r["variants"].items():
        cells = " | ".join(f"{v['per_task'].get(t, float('nan')):.3f}" for t in tasks)
        lines.append(f"| {name} | {v['accuracy']:.3f} ± {ci95(v['accuracy'], v.get('n')):.3f} | {cells} | "
                     f"{v['train_tokens']} | {v['train_seconds']} |")
    n = next(iter(r["variants"].values())).get("n")
    return "\n".join(lines) + f"\n\n± : 95% interval over {n} questions (normal approximation).\n"


def plot_ablation(r: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = sorted({t for v in r["variants"].values() for t in v["per_task"]}) + ["overall"]
    names = list(r["variants"])
    x = np.arange(len(tasks))
    w = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(tasks), 3.4))
    for k, n in enumerate(names):
        v = r["variants"][n]
        vals = [v["per_task"].get(t, 0.0) for t in tasks[:-1]] + [v["accuracy"]]
        counts = [v.get("per_task_n", {}).get(t) for t in tasks[:-1]] + [v.get("n")]
        err = [ci95(p, c) if c else 0.0 for p, c in zip(vals, counts)]
        ax.bar(x + (k - (len(names) - 1) / 2) * w, vals, w, yerr=err, capsize=2, error_kw={"lw": 0.8},
               label=f"{n} ({v['train_tokens'] / 1e3:.0f}k tok)")
    ax.set_xticks(x, tasks)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"ablation: {r['ablation']} ({r['frames']} frames, MC by {r.get('mc_scoring', 'generate')})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
