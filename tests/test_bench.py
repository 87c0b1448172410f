import json
import subprocess
import sys


def test_bench_decode_quick_json(tmp_path):
    """The decode benchmark runs end to end and reports a ratio per case (no timing asserted)."""
    r = subprocess.run([sys.executable, "-m", "kangaroo.cli", "bench", "decode", "--quick", "--repeats", "1", "--json",
                        "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert [(c["video"], c["frames"]) for c in rep["cases"]] == [(v, n) for v in ("60s", "bikes (real)")
                                                                 for n in (8, 16, 64, 160)]
    assert all("ratio" in c and c["results"]["ours"]["peak_mb"] >= 0 for c in rep["cases"])
    assert "decode_all" in rep["methods"]
    # every method is measured or says why not (decord, torchcodec: their import's own error)
    from kangaroo.video.bench import METHODS

    assert set(rep["methods"]) | set(rep["unavailable"]) == set(METHODS)
    assert not set(rep["methods"]) & set(rep["unavailable"])
    assert all(why for why in rep["unavailable"].values())
    for c in rep["cases"]:  # the ratio is against the fastest of all the others measured
        others = {m: v["median_s"] for m, v in c["results"].items() if m != "ours" and "median_s" in v}
        assert c["best_other"] == min(others, key=others.get)
        assert c["ratio"] == round(c["results"]["ours"]["median_s"] / others[c["best_other"]], 3)


def test_bench_curate_quick_json(tmp_path):
    """The curation benchmark reports filters against their decode and real-time factors (no timing asserted)."""
    r = subprocess.run([sys.executable, "-m", "kangaroo.cli", "bench", "curate", "--quick", "--repeats", "1", "--json",
                        "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    v = rep["videos"][0]
    assert v["size"] == "640x360" and v["cuts"] == 5  # the generated shots, found frame-accurately
    assert v["filters_own_decode_s"] > 0 and v["filters_vs_their_decode"] > 0
    assert set(v["per_filter_vs_decode"]) == {"text_coverage", "face_coverage", "motion"}
    assert {"decode", "scenes", "text_coverage", "face_coverage", "motion", "keyframes"} <= set(rep["stages"])


def test_bench_score_shared_prefix_equals_one_sequence_per_option(tmp_path):
    """On the real kangaroo-smol: the shared-prefix scores equal the per-option baseline's (no timing asserted)."""
    from kangaroo.eval.bench import bench_score, format_score

    rep = bench_score(workdir=str(tmp_path), frames=(4,), num_questions=2, duration=12.0, progress=False)
    [c] = rep["cases"]
    assert c["frames"] == 4 and c["questions"] == 2 and c["options"] >= 4
    assert c["max_abs_score_diff"] < 1e-3 and c["same_choice"] == 2
    assert c["per_option_s"] > 0 and c["shared_prefix_s"] > 0 and "speedup_vs_per_question" in c
    # the same questions by generation: the video's block shared by the batch gives the same answers
    assert c["generate_same_answers"] == 2 and c["generate_left_padded_s"] > 0 and c["generate_shared_prefix_s"] > 0
    assert "shared prefix" in format_score(rep) and "left-padded" in format_score(rep)


def test_bench_sampler_quick(tmp_path):
    """The sampler benchmark reports needle coverage and time for uniform and events (no timing asserted)."""
    from kangaroo.video.bench_sampler import bench_sampler, format_sampler

    rep = bench_sampler(workdir=str(tmp_path), quick=True, progress=False)
    assert [(c["videos"], c["frames"]) for c in rep["cases"]] == [("short", 16), ("short", 32), ("long", 64), ("long", 128)]
    for c in rep["cases"]:
        for s in ("uniform", "events"):
            assert 0.0 <= c["results"][s]["needle_seen"] <= 1.0 and c["results"][s]["seconds_per_video"] > 0
        assert c["time_ratio"] > 0
    assert "needle seen" in format_sampler(rep)
