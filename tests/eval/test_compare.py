import json
import math
import subprocess
import sys

import pytest

from kangaroo.eval.compare import compare_runs, format_compare, sign_test


def _write(folder, records, rank=0, cut_tail=False):
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    if cut_tail:
        text += '{"qid": "cut-by-a-cra'
    (folder / f"predictions.rank{rank}.jsonl").write_text(text)


def _rec(qid, task, correct, group=None):
    r = {"qid": qid, "task": task, "answer": 0, "output": "", "pred": 0 if correct else 1, "correct": correct}
    if group:
        r["group"] = group
    return r


def test_sign_test_exact_values():
    assert sign_test(0, 0) == 1.0
    assert sign_test(6, 0) == pytest.approx(2 / 64)
    assert sign_test(3, 3) == 1.0
    # 24 vs 18 (the 6c -> 6d comparison in docs/kangaroo-smol.md): 2 * P(X <= 18), X ~ Bin(42, 1/2)
    assert sign_test(24, 18) == pytest.approx(2 * sum(math.comb(42, i) for i in range(19)) / 2**42)
    assert sign_test(24, 18) == sign_test(18, 24)


def test_compare_counts_discordant_pairs(tmp_path):
    # A: q0-q9 of task "x" right except q0-q1; B: q0-q5 right, q6-q9 wrong -> B gained 2, lost 4
    a = [_rec(f"q{i}", "x", i >= 2, group="g1" if i < 5 else "g2") for i in range(10)]
    b = [_rec(f"q{i}", "x", i < 6) for i in range(10)]
    a.append(_rec("y0", "y", True))  # only in A
    b += [_rec("y0", "y", True), _rec("z0", "z", False)]  # z0 only in B
    _write(tmp_path / "a", a[:6])
    _write(tmp_path / "a", a[6:], rank=1, cut_tail=True)  # two ranks, the last line of one cut by a crash
    _write(tmp_path / "b", b)
    (tmp_path / "a" / "results.json").write_text(json.dumps({"settings": {"benchmark": "synthetic", "frames": 32}}))
    rep = compare_runs(str(tmp_path / "a"), str(tmp_path / "b"))
    o = rep["overall"]
    assert (o["n"], o["gained"], o["lost"]) == (11, 2, 4)
    assert o["accuracy_a"] == pytest.approx(9 / 11, abs=1e-4) and o["accuracy_b"] == pytest.approx(7 / 11, abs=1e-4)
    assert o["p_value"] == pytest.approx(sign_test(2, 4), abs=1e-4)
    assert rep["only_in_a"] == 0 and rep["only_in_b"] == 1
    assert rep["per_task"]["x"]["gained"] == 2 and rep["per_task"]["y"]["gained"] == 0
    assert rep["per_group"]["g1"] == {"n": 5, "accuracy_a": 0.6, "accuracy_b": 1.0, "gained": 2, "lost": 0,
                                      "p_value": 0.5}
    assert rep["per_group"]["g2"]["lost"] == 4
    md = format_compare(rep)
    assert "| **overall** | 11 |" in md and "1 only in B" in md
    assert "(benchmark synthetic, frames 32)" in md.splitlines()[0] and md.splitlines()[1].endswith("b")


def test_compare_rejects_what_it_cannot_pair(tmp_path):
    _write(tmp_path / "a", [_rec("q0", "x", True)])
    _write(tmp_path / "b", [_rec("other", "x", True)])
    with pytest.raises(ValueError, match="share no question ids"):
        compare_runs(str(tmp_path / "a"), str(tmp_path / "b"))
    _write(tmp_path / "open", [{"qid": "q0", "task": "x", "answer": "a cat", "output": "a dog"}])
    with pytest.raises(ValueError, match="open-ended"):
        compare_runs(str(tmp_path / "a"), str(tmp_path / "open"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no predictions"):
        compare_runs(str(tmp_path / "a"), str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError):
        compare_runs(str(tmp_path / "a"), str(tmp_path / "missing"))


def test_compare_cli(tmp_path):
    _write(tmp_path / "a", [_rec(f"q{i}", "x", False) for i in range(8)])
    _write(tmp_path / "b", [_rec(f"q{i}", "x", True) for i in range(8)])
    cmd = [sys.executable, "-m", "kangaroo.cli", "compare", str(tmp_path / "a"), str(tmp_path / "b")]
    r = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["overall"]["gained"] == 8 and rep["overall"]["p_value"] == pytest.approx(2 / 256, abs=1e-4)
    r = subprocess.run(cmd[:-1] + [str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no evaluation folder" in r.stderr
