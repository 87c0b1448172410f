"""``kangaroo bench serve --engine``: engine specs, the folder both engines load, and our engine end
to end as a ``kangaroo serve`` subprocess (the vLLM side runs in tests/vllm, vLLM's env)."""

import json

import pytest

from kangaroo.serve.bench_engines import (
    EngineBenchConfig,
    bench_engines,
    check_vllm_python,
    compare,
    format_engines,
    full_folder,
    parse_engines,
    score,
)


def test_engine_specs():
    specs = parse_engines("vllm|ours,vllm:bf16,vllm:fp8,ours:int8")
    assert [s.name for s in specs] == ["vllm:float32", "ours", "vllm:bfloat16", "vllm:fp8 (bfloat16)", "ours:int8"]
    assert (specs[3].dtype, specs[3].quantization) == ("bfloat16", "fp8")
    with pytest.raises(ValueError, match="the engines are ours and vllm"):
        parse_engines("sglang")
    with pytest.raises(ValueError, match="int8 or int4"):
        parse_engines("ours:fp8")
    with pytest.raises(ValueError, match="names no engine"):
        parse_engines(" , ")


def test_refusals(tmp_path, capsys):
    from kangaroo.cli import main

    with pytest.raises(FileNotFoundError, match="make vllm-env"):
        check_vllm_python(str(tmp_path / "nope" / "python"))
    # said on the command line before any model is exported
    assert main(["bench", "serve", "--engine", "vllm,ours", "--vllm-python", str(tmp_path / "nope"),
                 "--workdir", str(tmp_path)]) != 0
    assert "--vllm-python" in capsys.readouterr().err and not (tmp_path / "engines").exists()
    assert main(["bench", "serve", "--engine", "sglang"]) != 0
    assert "the engines are ours and vllm" in capsys.readouterr().err
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ValueError, match="not a full Kangaroo folder"):
        full_folder(str(tmp_path), str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["KangarooForConditionalGeneration"],
                                                      "text_config": {"quantization_config": {"quant_method": "gguf"}}}))
    with pytest.raises(ValueError, match="quantization_config"):
        full_folder(str(tmp_path), str(tmp_path))
    with pytest.raises(ValueError, match="min_tokens"):
        EngineBenchConfig(max_tokens=4, min_tokens=5)
    with pytest.raises(ValueError, match="levels"):
        EngineBenchConfig(levels=(0,))
    with pytest.raises(ValueError, match="the engines are ours and vllm"):
        EngineBenchConfig(engines=("vllm", "tgi"))


def test_config_round_trips_through_json():
    cfg = EngineBenchConfig(engines=("ours", "vllm:w8a8", " "), levels=(1, 4), frames=4)
    again = EngineBenchConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.engines == ("ours", "vllm:w8a8") and [s.name for s in again.specs] == [
        "ours", "vllm:w8a8 (bfloat16)"]
    with pytest.raises(ValueError, match="unknown engine bench options"):
        EngineBenchConfig.from_dict({"engine": ["vllm"]})


def test_score_reads_the_chosen_option():
    keys = [(["red", "blue"], 1), (["red", "blue"], 0), (["red", "blue"], 0)]
    assert score(["(B) blue", "A", None], keys) == {"questions": 3, "correct": 2, "accuracy": 0.6667}


def test_compare_counts_identical_answers_against_the_first_engine():
    def lv(tps, wall, answers):
        return {"clients": 2, "requests": len(answers), "tokens_per_s": tps, "wall_s": wall, "answers": answers}

    runs = [{"engine": "vllm", "levels": [lv(30.0, 2.0, ["a", "b", "c"])]},
            {"engine": "broken", "failed": "did not start"},
            {"engine": "ours", "levels": [lv(10.0, 5.0, ["a", "x", None])]}]
    (c,) = compare(runs)
    assert (c["engine"], c["baseline"], c["identical_answers"]) == ("ours", "vllm", 1)
    assert (c["tokens_per_s_ratio"], c["wall_speedup"]) == (0.333, 0.4)


def test_our_engine_end_to_end_as_a_subprocess(tiny_chat_model, smol_tokenizer, synth_dir, tmp_path):
    from kangaroo.model.weights import save_model

    save_model(tiny_chat_model, smol_tokenizer, str(tmp_path / "tiny"))
    cfg = EngineBenchConfig(engines=("ours", "ours"), model=str(tmp_path / "tiny"), levels=(1, 2),
                            min_requests=2, frames=2, max_tokens=3, min_tokens=3, workdir=str(tmp_path / "bench"),
                            data=str(synth_dir), limit=3)
    r = bench_engines(cfg, progress=False)
    for x in r["runs"]:  # held-out questions scored (a random tiny model: any accuracy, but every answer in)
        h = x["heldout"]
        assert h["questions"] == 3 and h["errors"] == 0 and all(a is not None for a in h["answers"])
        assert 0 <= h["correct"] <= 3 and h["accuracy"] == round(h["correct"] / 3, 4)
    assert "held-out accuracy" in format_engines(r)
    assert [x.get("failed") for x in r["runs"]] == [None, None]
    for x in r["runs"]:
        assert [lv["errors"] for lv in x["levels"]] == [0, 0]
        assert all(lv["completion_tokens"] > 0 and lv["ttft_p50_s"] is not None for lv in x["levels"])
        assert all(lv["completion_tokens"] == 3 * lv["requests"] for lv in x["levels"])  # min_tokens = max_tokens
        assert x["rss_peak_mb"] > 0
    assert r["comparison"][0]["identical_answers"] == 2  # one client at a time: the same greedy answers
