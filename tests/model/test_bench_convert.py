"""kangaroo bench convert at a tiny shape: inputs in the release's and the parts' layouts,
both commands measured in fresh processes, every part of the official-layout input found."""

import os

from kangaroo.model.bench_convert import bench_convert


def test_bench_convert_quick(tmp_path):
    rep = bench_convert(workdir=str(tmp_path / "w"), quick=True, progress=False)
    assert [c["kind"] for c in rep["cases"]] == ["convert", "assemble"]
    conv, asm = rep["cases"]
    assert conv["untrained"] == [] and conv["matched_by_shape"] == 4  # patchify w+b, TPE gain, markers
    assert asm["dtype"] == "bfloat16" and asm["llm_tensors"] > 0
    assert all(c["peak_anon_mb"] >= c["start_anon_mb"] > 0 and c["output_bytes"] > 0 for c in rep["cases"])
    assert not os.path.exists(tmp_path / "w")  # inputs deleted unless keep


def test_anon_sampler_sees_an_allocation():
    """In a fresh process (a long test session's heap may hand back pages it already holds), 64 MB
    of touched anonymous pages held for a while are seen by the sampler; nothing like it before."""
    import subprocess
    import sys

    code = """
import time, torch
from kangaroo.model.bench_convert import AnonSampler
with AnonSampler(every=0.005) as idle:
    time.sleep(0.05)
with AnonSampler(every=0.005) as s:
    x = torch.ones(64 * 2**20 // 4)
    x.add_(1)
    time.sleep(0.3)  # held across many sampling periods
    del x
print(idle.peak - idle.start_mb, s.peak - s.start_mb)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    idle, busy = map(float, out.stdout.split())
    assert busy > 48 and idle < 16
