"""``vllm serve`` (vLLM's OpenAI server, our plugin) against our server over HTTP: the same
``video_url`` chat requests, the same greedy text (``KANGAROO_VLLM_TEST=1`` only: vLLM's env)."""

import sys

import pytest

pytestmark = pytest.mark.timeout(1200)


def test_vllm_serve_answers_a_video_url_chat_like_our_server(tmp_path, tiny_kangaroo):
    from kangaroo.serve.bench_engines import EngineBenchConfig, bench_engines

    # one client at a time: the answers of our batcher under load are another test's business
    cfg = EngineBenchConfig(engines=("vllm", "ours"), model=tiny_kangaroo, levels=(1,), min_requests=2,
                            frames=4, max_tokens=8, vllm_python=sys.executable, max_model_len=2048,
                            workdir=str(tmp_path / "bench"), startup_timeout_s=900)
    r = bench_engines(cfg, progress=False)
    vllm, ours = r["runs"]
    assert "failed" not in vllm, vllm.get("failed")
    assert "failed" not in ours, ours.get("failed")
    a, b = vllm["levels"][0], ours["levels"][0]
    assert a["errors"] == 0 and b["errors"] == 0, (a["error_examples"], b["error_examples"])
    assert all(a["answers"]) and a["answers"] == b["answers"]
    assert a["prompt_tokens"] == b["prompt_tokens"]  # the same prompt length, visual run included
    assert a["completion_tokens"] == b["completion_tokens"] > 0
    assert r["comparison"][0]["identical_answers"] == 2


def test_kangaroo_video_loader_gives_our_frames_and_their_seconds(tmp_path):
    """The loader vLLM's server decodes a video_url with: our decoder's frames, timestamps in seconds."""
    import numpy as np

    from kangaroo.serve.bench_scale import synth_videos
    from kangaroo.video import DecodeOptions, SamplingConfig, load_video
    from kangaroo.vllm_plugin.video import KangarooVideoLoader

    path = synth_videos(str(tmp_path), 1, progress=False)[0]
    frames, meta = KangarooVideoLoader.load_bytes(open(path, "rb").read(), num_frames=6, max_side=448)
    ours = load_video(path, SamplingConfig(num_frames=6), DecodeOptions(max_side=448))
    assert np.array_equal(frames, ours.frames)
    assert meta["timestamps"] == [float(t) for t in ours.timestamps] and meta["video_backend"] == "kangaroo"
    with pytest.raises(ValueError, match="not \\['colour'\\]"):
        KangarooVideoLoader.load_bytes(b"", colour=1)


def test_prequantised_copies_serve_on_vllms_cpu_int_kernels(tmp_path, tiny_kangaroo):
    """``kangaroo export-vllm`` copies (W8A8, W4A16) start in vLLM, run on its CPU int8 / int4 kernels
    (not silently unquantised) and answer video_url chats."""
    from kangaroo.serve.bench_engines import EngineBenchConfig, bench_engines

    cfg = EngineBenchConfig(engines=("vllm:w8a8", "vllm:w4a16"), model=tiny_kangaroo, levels=(1,),
                            min_requests=1, frames=4, max_tokens=4, vllm_python=sys.executable, max_model_len=2048,
                            workdir=str(tmp_path / "bench"), startup_timeout_s=900)
    from kangaroo.vllm_plugin.export import cpu_kernel_missing

    r = bench_engines(cfg, progress=False)
    for run, kernel, scheme in zip(r["runs"], ("CPUInt8ScaledMMLinearKernel", "CPUWNA16LinearKernel"), ("w8a8", "w4a16")):
        if cpu_kernel_missing(scheme):  # an AVX2-only x86 CPU: refused up front with the reason, no crash
            assert "no int4 kernel" in run["failed"] and "log" not in run
            continue
        assert "failed" not in run, run.get("failed")
        assert run["levels"][0]["errors"] == 0 and run["levels"][0]["completion_tokens"] > 0
        with open(run["log"]) as f:
            assert kernel in f.read()


def test_vllm_servers_chat_prompt_is_our_processors(tmp_path, tiny_kangaroo):
    """A video_url chat through vLLM's OpenAI server (its chat template rendering, our loader and
    prompt replacement) gives exactly the prompt ids of ``processor.apply_chat_template``."""
    import os

    import httpx

    from kangaroo.model.weights import load
    from kangaroo.serve.bench_engines import EngineBenchConfig, ServerProcess, server_command
    from kangaroo.serve.bench_scale import synth_videos
    from kangaroo.serve.testserver import free_port

    video = synth_videos(str(tmp_path / "videos"), 1, progress=False)[0]
    cfg = EngineBenchConfig(engines=("vllm",), model=tiny_kangaroo, levels=(1,), frames=4, vllm_python=sys.executable,
                            max_model_len=2048)
    port = free_port()
    cmd, env = server_command(cfg.specs[0], cfg, tiny_kangaroo, "tiny", os.path.dirname(video), port,
                              str(tmp_path / "store"))
    question = "What happens in the video?"
    body = {"model": "tiny", "max_tokens": 2, "temperature": 0, "return_token_ids": True,
            "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "file://" + video}},
                                                      {"type": "text", "text": question}]}]}
    with ServerProcess(cmd, f"http://127.0.0.1:{port}", env, str(tmp_path / "vllm.log"), 900) as srv:
        r = httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=600)
    assert r.status_code == 200, r.text
    _, proc = load(tiny_kangaroo)
    conv = [{"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": question}]}]
    want = proc.apply_chat_template(conv, num_frames=4)["input_ids"][0].tolist()
    assert r.json()["prompt_token_ids"] == want
