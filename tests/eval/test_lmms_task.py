import json

import pytest

from kangaroo.eval import lmms_task
from kangaroo.eval.benchmarks import BENCHMARKS, Item
from kangaroo.eval.harness import prompt_for


def test_task_asks_and_scores_as_kangaroo_eval(synth_dir, tmp_path):
    items = BENCHMARKS.get("synthetic")(str(synth_dir))[:5]
    yaml_path = lmms_task.write_task(items, str(tmp_path / "task"), "kangaroo_t", "synthetic", max_new_tokens=6)
    text = open(yaml_path).read()
    assert "task: kangaroo_t" in text and "max_new_tokens: 6" in text and "until: []" in text
    assert "!function kangaroo_t_utils.doc_to_text" in text
    assert "from kangaroo.eval.lmms_task import" in (tmp_path / "task" / "kangaroo_t_utils.py").read_text()
    docs = [json.loads(line) for line in (tmp_path / "task" / "kangaroo_t.jsonl").read_text().splitlines()]
    assert [d["qid"] for d in docs] == [it.qid for it in items]
    for it, doc in zip(items, docs):
        assert lmms_task.doc_to_text(doc, None) == prompt_for(it, "synthetic")  # the same prompt
        assert lmms_task.doc_to_visual(doc) == [it.video]
        letter = lmms_task.doc_to_target(doc)
        assert lmms_task.process_results(doc, [f"The answer is ({letter})."]) == {"accuracy": 1.0}
        wrong = "ABCDEFGH"[(it.answer + 1) % len(it.candidates)]
        assert lmms_task.process_results(doc, [wrong]) == {"accuracy": 0.0}
        assert lmms_task.process_results(doc, ["no idea"]) == {"accuracy": 0.0}


def test_task_refuses_bad_input(tmp_path):
    mc = Item("q", "/v.mp4", "Which?", ["a", "b"], 0, "t")
    with pytest.raises(ValueError, match="task name"):
        lmms_task.write_task([mc], str(tmp_path), "Bad-Name", "synthetic")
    with pytest.raises(ValueError, match="no items"):
        lmms_task.write_task([], str(tmp_path), "ok", "synthetic")
    with pytest.raises(ValueError, match="open-ended"):
        lmms_task.write_task([Item("o", "/v.mp4", "What?", [], "ref", "t")], str(tmp_path), "ok", "synthetic")


def test_cli_writes_the_task(synth_dir, tmp_path, capsys):
    assert lmms_task.main(["--benchmark", "synthetic", "--data", str(synth_dir), "--out", str(tmp_path), "--limit", "3"]) == 0
    assert capsys.readouterr().out.strip().endswith("kangaroo_synthetic.yaml")
    assert len((tmp_path / "kangaroo_synthetic.jsonl").read_text().splitlines()) == 3
