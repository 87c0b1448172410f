"""Open answers scored against the synthetic set's known truth (issue #27): "when" within 1 s,
descriptions by event recall and precision, the rest by the answer's words."""

import json

import pytest

from kangaroo.eval.benchmarks import BENCHMARKS
from kangaroo.eval.harness import EvalConfig, predict, report
from kangaroo.eval.open_scoring import caption_events, read_seconds, score_caption, score_open, summarise
from kangaroo.model.chat import KangarooChat


@pytest.mark.parametrize("text,want", [("4.5 seconds", 4.5), ("At 12 s.", 12.0), ("It first appears at 0:04.5", 4.5),
                                       ("1:05", 65.0), ("3", 3.0), ("around 7.25s in", 7.25), ("never", None),
                                       ("", None)])
def test_read_seconds(text, want):
    assert read_seconds(text) == want


def test_when_is_right_within_one_second():
    rec = {"answer_seconds": 5.855}
    assert score_open("when", "5.9 seconds", "5.9 seconds", rec) == {"correct": True, "seconds": 5.9, "abs_err_s": 0.045}
    assert score_open("when", "6.8 seconds", "5.9 seconds", rec)["correct"] is True  # 0.945 s off
    assert score_open("when", "7.0 seconds", "5.9 seconds", rec)["correct"] is False  # 1.145 s off
    assert score_open("when", "at the start", "5.9 seconds", rec) == {"correct": False, "seconds": None, "abs_err_s": None}


def test_named_answers_must_name_the_object_and_no_other():
    assert score_open("appear_at", "The blue circle.", "blue circle", {})["correct"]
    assert not score_open("appear_at", "a light blue square", "blue circle", {})["correct"]
    assert not score_open("appear_at", "the blue circle or the red square", "blue circle", {})["correct"]  # a hedge
    assert score_open("needle", "A green star flashes briefly.", "a green star flashes briefly", {})["correct"]
    assert not score_open("needle", "a green ring flashes briefly", "a green star flashes briefly", {})["correct"]
    assert score_open("count", "2", "2", {})["correct"] and score_open("count", "It appears two times.", "2", {})["correct"]
    assert not score_open("count", "3 times, not 2", "2", {})["correct"]  # the first number stated counts
    assert not score_open("count", "", "2", {})["correct"]


def test_caption_event_recall_and_precision():
    ref = "A blue circle appears. The blue circle turns orange. The orange circle leaves. The scene cuts."
    assert sum(caption_events(ref).values()) == 4
    s = score_caption("A blue circle appears. The blue circle turns green. The orange circle leaves.", ref)
    assert (s["events_matched"], s["recall"], s["precision"]) == (2, 0.5, round(2 / 3, 4))
    assert score_caption(ref, ref)["recall"] == score_caption(ref, ref)["precision"] == 1.0
    assert score_caption("", ref) == {"events_matched": 0, "events_reference": 4, "events_output": 0,
                                      "recall": 0.0, "precision": 0.0}
    # a repeated event counts as often as it happened, no more
    twice = "A red circle appears. A red circle appears."
    assert score_caption(twice + " " + twice, twice)["precision"] == 0.5


def test_summary_micro_averages_captions_and_reports_when_errors():
    recs = [{"task": "when", "correct": True, "seconds": 1.0, "abs_err_s": 0.2},
            {"task": "when", "correct": False, "seconds": None, "abs_err_s": None},
            {"task": "when", "correct": False, "seconds": 9.0, "abs_err_s": 3.0},
            {"task": "caption", "correct": None, "events_matched": 1, "events_reference": 4, "events_output": 2},
            {"task": "caption", "correct": None, "events_matched": 3, "events_reference": 4, "events_output": 3}]
    s = summarise(recs)
    assert s["when"] == {"n": 3, "accuracy": 0.3333, "within_s": 1.0, "unparsed": 1, "median_abs_err_s": 3.0}
    assert s["caption"] == {"n": 2, "event_recall": 0.5, "event_precision": 0.8}


def test_synthetic_open_benchmark_end_to_end(tmp_path, synth_dir, tiny_chat_model, smol_tokenizer):
    items = BENCHMARKS.get("synthetic_open")(str(synth_dir))
    truth = json.loads((synth_dir / "openqa.json").read_text())
    assert len(items) == len(truth) and {it.task for it in items} == {r["family"] for r in truth}
    assert all(it.open_ended for it in items)
    kc = KangarooChat(tiny_chat_model, smol_tokenizer)
    cfg = EvalConfig("synthetic_open", str(synth_dir), str(tmp_path), frames=2, limit=8)
    predict(kc, cfg, progress=False)
    res = report(kc, cfg, "tiny")
    recs = [json.loads(x) for x in (tmp_path / "predictions.rank0.jsonl").read_text().splitlines()]
    assert res["n"] == len(recs) == 8
    for r in recs:  # every record carries its rule score, recomputable from its output
        it = next(i for i in items if i.qid == r["qid"])
        assert {k: r[k] for k in score_open(it.task, r["output"], it.answer, it.extra["record"])} == \
            score_open(it.task, r["output"], it.answer, it.extra["record"])
    assert set(res["open"]) == {r["task"] for r in recs} and "caption" not in res["per_task"]
    scored = [r for r in recs if r["task"] != "caption"]
    assert res["accuracy"] == round(sum(bool(r["correct"]) for r in scored) / max(1, len(scored)), 4)


def test_synthetic_open_refuses_a_when_question_without_its_time(tmp_path):
    (tmp_path / "openqa.json").write_text(json.dumps([{"video": "v.mp4", "family": "when", "question": "When?",
                                                        "answer": "1.0 seconds"}]))
    with pytest.raises(ValueError, match="answer_seconds"):
        BENCHMARKS.get("synthetic_open")(str(tmp_path))
