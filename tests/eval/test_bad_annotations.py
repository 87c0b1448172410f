"""Malformed benchmark annotations are refused in one line naming the file and the record/key;
unreadable videos are counted apart from wrong answers."""

import json
import os
import subprocess
import sys

import pytest

from kangaroo.eval.benchmarks import BENCHMARKS
from kangaroo.eval.harness import EvalConfig, run_eval
from kangaroo.model.chat import KangarooChat

from .test_benchmarks import make_fixture, wj

MV = {"video": "b.webm", "question": "What is happening?", "candidates": ["pulling", "pushing"], "answer": "pushing"}
EGO = {"q_uid": "u1", "question": "What is C doing?", **{f"option {k}": f"option text {k}" for k in range(5)}}


def write(root, name, text):
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text if isinstance(text, str) else json.dumps(text))
    return path


CASES = [
    ("mvbench", {"json/action_antonym.json": '[{"video": "b.webm",'}, "json/action_antonym.json",
     "not valid JSON (Expecting property name enclosed in double quotes at line 1, column 21)"),
    ("mvbench", {"json/action_antonym.json": {"video": "b.webm"}}, "json/action_antonym.json",
     "expected a list of records at the top level, got dict"),
    ("mvbench", {"json/action_antonym.json": [MV, {k: v for k, v in MV.items() if k != "candidates"}]},
     "json/action_antonym.json", "record 1: missing key 'candidates'"),
    ("mvbench", {"json/action_antonym.json": [{**MV, "answer": "waving"}]}, "json/action_antonym.json",
     "record 0: answer 'waving' is not one of the candidates ['pulling', 'pushing']"),
    ("mvbench", {"json/action_antonym.json": [{**MV, "candidates": "pushing"}]}, "json/action_antonym.json",
     "record 0: candidates: expected a non-empty list of options, got 'pushing'"),
    ("mvbench", {"json/action_antonym.json": ["b.webm"]}, "json/action_antonym.json", "record 0: malformed record"),
    ("egoschema", {"questions.json": "[{]", "subset_answers.json": {"u1": 3}}, "questions.json", "not valid JSON"),
    ("egoschema", {"questions.json": [EGO], "subset_answers.json": "{\"u1\": 3,}"}, "subset_answers.json",
     "not valid JSON"),
    ("egoschema", {"questions.json": [{k: v for k, v in EGO.items() if k != "option 4"}],
                   "subset_answers.json": {"u1": 3}}, "questions.json", "record 0: missing key 'option 4'"),
    ("egoschema", {"questions.json": [EGO], "subset_answers.json": {"u1": "three"}}, "subset_answers.json",
     "record 'u1': u1: expected an option index, got 'three'"),
    ("egoschema", {"questions.json": [EGO], "subset_answers.json": {"u1": 7}}, "subset_answers.json",
     "record 'u1': u1: 7 is not an option index (0..4)"),
    ("egoschema", {"questions.json": [EGO], "subset_answers.json": [3]}, "subset_answers.json",
     "expected a mapping at the top level, got list"),
    ("synthetic", {"mcqa.json": [{"video": "v.mp4", "question": "q", "candidates": ["a", "b"], "family": "count"}]},
     "mcqa.json", "record 0: missing key 'answer_index'"),
    ("longvideobench", {"lvb_val.json": "[{\"id\": 1},\n {\"id\": 2,\n"}, "lvb_val.json",
     "not valid JSON (Expecting property name enclosed in double quotes at line 2, column 11)"),
    ("lvbench", {"video_info.meta.jsonl": '{"key": "k1", "qa": []}\n{"key": "k2", "qa": [}\n'},
     "video_info.meta.jsonl", "line 2: not valid JSON"),
]


@pytest.mark.parametrize("bench,files,bad,message", CASES)
def test_malformed_annotations_name_the_file_and_record(bench, files, bad, message, tmp_path):
    for name, content in files.items():
        write(tmp_path, name, content)
    with pytest.raises(ValueError) as e:
        BENCHMARKS.get(bench)(str(tmp_path))
    assert str(e.value).startswith(os.path.join(str(tmp_path), bad) + ": ") and message in str(e.value), str(e.value)


@pytest.mark.parametrize("case", [0, 2, 9])
def test_cli_eval_refuses_before_loading_a_model_and_writes_nothing(case, tmp_path):
    bench, files, bad, message = CASES[case]
    for name, content in files.items():
        write(tmp_path / "data", name, content)
    r = subprocess.run([sys.executable, "-m", "kangaroo.cli", "eval", "--benchmark", bench, "--data",
                        str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "no_model")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"error: {tmp_path / 'data' / bad}: ") and message in r.stderr
    assert not (tmp_path / "out").exists()


def test_unreadable_videos_are_counted_apart(tmp_path, synth_video, tiny_chat_model, smol_tokenizer):
    make_fixture("mvbench", tmp_path / "d", synth_video)
    os.remove(tmp_path / "d" / "video" / "ssv2_video" / "b.webm")
    kc = KangarooChat(tiny_chat_model, smol_tokenizer)
    res = run_eval(kc, EvalConfig("mvbench", str(tmp_path / "d"), str(tmp_path / "o"), frames=2), "tiny",
                   progress=False)
    recs = {json.loads(x)["qid"]: json.loads(x) for x in (tmp_path / "o" / "predictions.rank0.jsonl").read_text().splitlines()}
    seen = recs["action_sequence/0"]
    assert recs["action_antonym/0"]["unreadable"] == "not_found" and "error" not in seen
    assert res["n"] == 2 and res["unreadable"] == res["errors"] == 1 and res["answered"] == 1
    assert res["unreadable_reasons"] == {"not_found": 1}
    assert res["unreadable_examples"][0]["qid"] == "action_antonym/0"
    assert res["accuracy"] == seen["correct"] / 2 and res["accuracy_answered"] == float(seen["correct"])
    saved = json.loads((tmp_path / "o" / "results.json").read_text())
    assert saved["unreadable"] == 1 and saved["accuracy_answered"] == res["accuracy_answered"]
    md = (tmp_path / "o" / "results.md").read_text()
    assert "**unreadable: 1** of 2 items (not_found 1; e.g. action_antonym/0: VideoNotFoundError:" in md
    assert f"over the 1 answered: {res['accuracy_answered']}" in md


def test_cli_eval_warns_about_unreadable_items(tmp_path, synth_video, tiny_chat_model, smol_tokenizer):
    model = tmp_path / "m"
    tiny_chat_model.save_pretrained(model)
    smol_tokenizer.save_pretrained(model)
    make_fixture("longvideobench", tmp_path / "d", synth_video)
    os.remove(tmp_path / "d" / "videos" / "v1.mp4")
    r = subprocess.run([sys.executable, "-m", "kangaroo.cli", "eval", "--benchmark", "longvideobench", "--data",
                        str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--model", str(model), "--frames", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "warning: unreadable: 1 of 1 items (not_found 1" in r.stderr
    assert "**unreadable: 1** of 1 items" in r.stdout
