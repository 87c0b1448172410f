"""The Kangaroo-8B path end to end at a tiny size: `kangaroo assemble` (a tiny EVA-CLIP-layout
checkpoint + a tiny random Llama with SmolLM2's real tokenizer and chat template), `kangaroo synth
--layout kangaroo-8b`, the five shipped 8B recipes for 2 steps each through `kangaroo curriculum`
with ${KANGAROO_DATA} / ${KANGAROO_INIT} and --set, an interrupted last stage resumed, exported
and asked a question.

In float32 (``bf16=false``): on a CPU without bf16 units bf16 autocast makes these steps several
times slower (76 s against 28 s for the first test, 2 cores, kangaroo/train/metrics.py); FSDP2's
bf16 mixed-precision policy is trained in tests/train/test_distributed_vision.py."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from kangaroo.cli import main

from ..model.parts import eva_clip_state, tiny_llama_dir

RECIPES = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "kangaroo-8b")
STAGES = ["stage1_image.yaml", "stage2_video.yaml", "stage3_refine.yaml", "stage4_instruct.yaml", "stage5_long.yaml"]
SETS = ["max_steps=2", "rows_per_step=1", "image_size=112", "min_frames=1", "max_frames=4", "max_seq_len=2048", "bf16=false"]


def _llm(folder):
    out = {}
    for f in os.listdir(folder):
        if f.endswith(".safetensors"):
            out.update({k: v for k, v in load_file(os.path.join(folder, f)).items() if k.startswith("language_model.")})
    return out


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("8b")
    torch.save(eva_clip_state(), root / "EVA02_CLIP_L.pt")
    llm = tiny_llama_dir(root / "llama", dtype=torch.float32)
    assert main(["assemble", "--vision", str(root / "EVA02_CLIP_L.pt"), "--llm", llm, "--out", str(root / "init"),
                 "--image-size", "112"]) == 0
    assert main(["synth", "--layout", "kangaroo-8b", "--out", str(root / "data"), "--num-videos", "2",
                 "--long-videos", "1", "--width", "160", "--height", "120", "--quiet"]) == 0
    return root


def test_five_8b_stages_resume_export_ask(parts, monkeypatch, capsys):
    monkeypatch.setenv("KANGAROO_DATA", str(parts / "data"))
    monkeypatch.setenv("KANGAROO_INIT", str(parts / "init"))
    runs = parts / "runs"
    recipes = [os.path.join(RECIPES, s) for s in STAGES]
    argv = ["curriculum", *recipes, "--out", str(runs), "--quiet"] + [x for s in SETS for x in ("--set", s)]
    capsys.readouterr()
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["stage"] for r in res] == ["image", "video", "refine", "instruct", "long"]
    assert all(r["step"] == 2 and r["tokens"] > 0 for r in res)
    # stages 1-3 leave the LLM frozen (bit for bit the assembled one); stage 4 trains it
    init, s3, s4 = _llm(parts / "init"), _llm(runs / "3_refine" / "model"), _llm(runs / "4_instruct" / "model")
    assert init.keys() == s3.keys() and all(torch.equal(init[k], s3[k]) for k in init)
    assert any(not torch.equal(init[k], s4[k]) for k in init)
    # the last stage is interrupted (no exported model) and resumed for one more step
    row = res[-1]["row"]  # the global data position (rows read)
    import shutil

    shutil.rmtree(runs / "5_long" / "model")
    assert main(argv[:-len(SETS) * 2] + ["--resume"] + [x for s in ["max_steps=3", *SETS[1:]] for x in ("--set", s)]) == 0
    res2 = json.loads(capsys.readouterr().out)
    assert [r.get("skipped") for r in res2[:4]] == ["already finished"] * 4
    assert res2[4]["step"] == 3 and res2[4]["row"] > row
    out = parts / "exported"
    assert main(["export", str(runs / "5_long"), "--out", str(out), "--init-from", str(runs / "4_instruct" / "model")]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 3
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["video_token_id"] == json.loads((parts / "init" / "config.json").read_text())["video_token_id"]
    video = str(parts / "data" / "short" / "videos" / "synth_0_00000.mp4")
    assert main(["ask", video, "What happens in the video?", "--model", str(out), "--frames", "4", "--greedy",
                 "--max-new-tokens", "4", "--json"]) == 0
    ans = json.loads(capsys.readouterr().out)
    assert isinstance(ans["answer"], str) and ans["frames"]["num_frames"] == 4


@pytest.mark.timeout(600)
def test_five_8b_stages_under_torchrun(parts, tmp_path, monkeypatch):
    """The same five stages in two processes (FSDP2 over gloo, sharded checkpoints): every rank
    waits for rank 0's export of a stage before the next stage loads it; the last stage's 2-rank
    checkpoint then resumes in one process."""
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "kangaroo.cli", "curriculum", *[os.path.join(RECIPES, s) for s in STAGES], "--out", str(runs),
           "--quiet"] + [x for s in SETS for x in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KANGAROO_DATA": str(parts / "data"),
           "KANGAROO_INIT": str(parts / "init")}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=540, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout[p.stdout.index("["):])
    assert [r["step"] for r in res] == [2] * 5
    init, s3 = _llm(parts / "init"), _llm(runs / "3_refine" / "model")
    assert all(torch.equal(init[k], s3[k]) for k in init)
    assert (runs / "5_long" / "model" / "config.json").exists()
    # sharded checkpoints: one file of shards per rank (stage 5 trains the whole LLM under FSDP2)
    ck = runs / "5_long" / "checkpoints" / "step_0000002"
    assert sorted(os.listdir(ck / "dcp")) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    # resumed on another world size: the 2-rank checkpoint of stage 5 continues in one process
    import shutil

    shutil.rmtree(runs / "5_long" / "model")
    sets = [x for s in ["max_steps=3", *SETS[1:]] for x in ("--set", s)]
    monkeypatch.setenv("KANGAROO_DATA", env["KANGAROO_DATA"])
    monkeypatch.setenv("KANGAROO_INIT", env["KANGAROO_INIT"])
    assert main(cmd[cmd.index("curriculum"):cmd.index("--quiet") + 1] + ["--resume"] + sets) == 0
    steps = [json.loads(x)["step"] for x in open(runs / "5_long" / "metrics.jsonl")]
    assert steps == [1, 2, 3]
    assert (runs / "5_long" / "model" / "config.json").exists()
