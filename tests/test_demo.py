import json


def test_demo_answers_beside_the_truth(tmp_path, capsys):
    """`make demo`'s job on kangaroo-smol: every MC question answered both ways, the counts reported."""
    from kangaroo.demo import main

    assert main(out=str(tmp_path), frames=4) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["model"] == "kangaroo-smol" and summary["mc_total"] >= 5
    assert 0 <= summary["mc_generated_correct"] <= summary["mc_total"] and 0 <= summary["mc_likelihood_correct"] <= summary["mc_total"]
    assert out.count("   truth: ") == summary["mc_total"] and out.count("likelihood: ") == summary["mc_total"]
    assert "kangaroo> " in out and "reused from the cache" in out
