"""kangaroo bench convert at a tiny shape: inputs in the release's and the parts' layouts,
both commands measured in fresh processes, every part of the official-layout input found."""

import os

from kangaroo.model.bench_convert import AnonSampler, bench_convert


def test_bench_convert_quick(tmp_path):
    rep = bench_convert(workdir=str(tmp_path / "w"), quick=True, progress=False)
    assert [c["kind"] for c in rep["cases"]] == ["convert", "assemble"]
    conv, asm = rep["cases"]
    assert conv["untrained"] == [] and conv["matched_by_shape"] == 4  # patchify w+b, TPE gain, markers
    assert asm["dtype"] == "bfloat16" and asm["llm_tensors"] > 0
    assert all(c["peak_anon_mb"] >= c["start_anon_mb"] > 0 and c["output_bytes"] > 0 for c in rep["cases"])
    assert not os.path.exists(tmp_path / "w")  # inputs deleted unless keep


def test_anon_sampler_sees_an_allocation():
    import torch

    with AnonSampler(every=0.005) as s:
        x = torch.ones(64 * 2**20 // 4)  # 64 MB of anonymous pages, touched
        x.add_(1)
        del x
    assert s.peak - s.start_mb > 48
