"""`torchrun ... kangaroo eval`: the ranks share the items, one writer merges them into the same
results.json a single process writes."""

import json
import os
import socket
import subprocess
import sys

import pytest

from kangaroo.cli import main

from .test_benchmarks import make_fixture


@pytest.mark.timeout(600)
def test_eval_under_torchrun_writes_the_single_process_results(tmp_path, synth_video, tiny_chat_model, smol_tokenizer,
                                                               capsys):
    model = tmp_path / "m"
    tiny_chat_model.save_pretrained(model)
    smol_tokenizer.save_pretrained(model)
    n, _ = make_fixture("mvbench", tmp_path / "d", synth_video)
    args = ["eval", "--benchmark", "mvbench", "--data", str(tmp_path / "d"), "--model", str(model), "--frames", "2",
            "--json"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
                        "-m", "kangaroo.cli", *args, "--out", str(tmp_path / "two")], capture_output=True, text=True,
                       timeout=500, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count('"settings"') == 1  # rank 0 reports, once
    shards = [[json.loads(x)["qid"] for x in (tmp_path / "two" / f"predictions.rank{r}.jsonl").read_text().splitlines()]
              for r in (0, 1)]
    assert n == 2 and len(shards[0]) == len(shards[1]) == 1 and shards[0] != shards[1]  # every item once, one per rank
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two == one


def test_rank_device(monkeypatch):
    from kangaroo.eval.harness import rank_device

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert rank_device("cuda") == "cuda" and rank_device("cpu") == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert rank_device("cuda") == "cuda:3" and rank_device("cuda:1") == "cuda:1" and rank_device("cpu") == "cpu"
