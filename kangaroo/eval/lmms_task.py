"""A benchmark read by our adapters (``kangaroo.eval.benchmarks``), written as a local lmms-eval task.

lmms-eval reads a task from a YAML file in a folder given with ``--include_path``; its dataset
can be a local JSON-lines file (``dataset_path: json``, ``dataset_kwargs.data_files``), so
nothing is downloaded. ``write_task`` writes the three files of such a task:

    FOLDER/NAME.jsonl          one doc per question: qid, video (absolute path), question,
                               candidates, answer (option index), benchmark, task
    FOLDER/NAME.yaml           generate_until, greedy, ``max_new_tokens`` as ``kangaroo eval``'s
    FOLDER/NAME_utils.py       ``!function`` targets: re-exports of this module's functions

The task asks each question with the same prompt as ``kangaroo eval`` (``kangaroo.prompts``, the
benchmark's own template), reads the letter with the same ``extract_choice`` and reports
``accuracy``, so its score is ``kangaroo eval --mc-scoring generate``'s: `make lmms-test` checks
that they are equal when lmms-eval runs our backend (kangaroo/eval/lmms_plugin.py) on it.

    python -m kangaroo.eval.lmms_task --benchmark synthetic --data DATA --out TASKDIR [--name N]
    lmms-eval --model kangaroo --model_args pretrained=kangaroo-smol,max_frames_num=16 \\
              --tasks N --include_path TASKDIR --output_path OUT --log_samples
"""

from __future__ import annotations

import argparse
import json
import os
import re

from .benchmarks import BENCHMARKS, Item
from .core import Question
from .extract import extract_choice

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def write_task(items: list[Item], folder: str, name: str, benchmark: str, max_new_tokens: int = 8) -> str:
    """Write the task (docs, YAML, utils) for these multiple-choice items; returns the YAML's path."""
    if not _NAME.match(name):
        raise ValueError(f"task name must be lower-case letters, digits and _, starting with a letter: {name!r}")
    if not items:
        raise ValueError("no items to write")
    open_ended = [it.qid for it in items if it.open_ended]
    if open_ended:
        raise ValueError(f"only multiple-choice items can be written as this task; open-ended: {open_ended[:3]}")
    os.makedirs(folder, exist_ok=True)
    docs = os.path.abspath(os.path.join(folder, f"{name}.jsonl"))
    with open(docs, "w") as f:
        for it in items:
            f.write(json.dumps({"qid": it.qid, "video": os.path.abspath(it.video), "question": it.question,
                                "candidates": list(it.candidates), "answer": int(it.answer),
                                "subtitles": it.subtitles or "", "benchmark": benchmark, "task": it.task},
                               ensure_ascii=False) + "\n")
    utils = f"{name}_utils"
    with open(os.path.join(folder, f"{utils}.py"), "w") as f:
        f.write("# Written by kangaroo.eval.lmms_task.write_task: lmms-eval's !function targets.\n"
                "from kangaroo.eval.lmms_task import doc_to_target, doc_to_text, doc_to_visual, process_results  # noqa: F401\n")
    yaml_path = os.path.join(folder, f"{name}.yaml")
    with open(yaml_path, "w") as f:
        f.write(f"""# Written by kangaroo.eval.lmms_task.write_task ({benchmark}, {len(items)} questions).
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {json.dumps(docs)}
test_split: test
output_type: generate_until
doc_to_visual: !function {utils}.doc_to_visual
doc_to_text: !function {utils}.doc_to_text
doc_to_target: !function {utils}.doc_to_target
process_results: !function {utils}.process_results
generation_kwargs:
  max_new_tokens: {int(max_new_tokens)}
  temperature: 0
  top_p: 1.0
  num_beams: 1
  do_sample: false
  until: []
metric_list:
  - metric: accuracy
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1
""")
    return yaml_path


def _question(doc: dict) -> Question:
    return Question(doc["question"], list(doc["candidates"]), doc.get("subtitles") or None)


def doc_to_visual(doc: dict) -> list[str]:
    return [doc["video"]]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The prompt ``kangaroo eval`` asks this question with (the benchmark's own template)."""
    return _question(doc).prompt(doc["benchmark"])


def doc_to_target(doc: dict) -> str:
    return "ABCDEFGH"[int(doc["answer"])]


def process_results(doc: dict, results: list[str]) -> dict:
    """The generated reply's option (``extract_choice``, as ``kangaroo eval``); no option read is wrong."""
    pred = extract_choice(results[0], list(doc["candidates"]))
    return {"accuracy": float(pred == int(doc["answer"]))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kangaroo.eval.lmms_task", description=__doc__.split("\n\n")[0])
    p.add_argument("--benchmark", required=True, choices=BENCHMARKS.names())
    p.add_argument("--data", required=True, help="the benchmark's local folder, as for kangaroo eval")
    p.add_argument("--out", required=True, help="the task folder (lmms-eval's --include_path)")
    p.add_argument("--name", default=None, help="the task's name (default: kangaroo_BENCHMARK)")
    p.add_argument("--limit", type=int, default=None, help="the first K questions, as kangaroo eval --limit")
    p.add_argument("--max-new-tokens", type=int, default=8)
    args = p.parse_args(argv)
    items = BENCHMARKS.get(args.benchmark)(args.data)
    items = items[: args.limit] if args.limit else items
    path = write_task(items, args.out, args.name or f"kangaroo_{args.benchmark}", args.benchmark, args.max_new_tokens)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
