import json

from kangaroo.eval.niah import needle_suite
from kangaroo.model.chat import KangarooChat


def test_needle_suite_grid_and_heatmap(tmp_path, tiny_chat_model, smol_tokenizer):
    kc = KangarooChat(tiny_chat_model, smol_tokenizer)
    res = needle_suite(kc, str(tmp_path), frame_counts=(2, 8), depths=(0.2, 0.8), duration=16.0, per_cell=1,
                       progress=False)
    assert len(res["accuracy_grid"]) == 2 and len(res["accuracy_grid"][0]) == 2
    assert all(0 <= v <= 1 for row in res["accuracy_grid"] for v in row)
    assert (tmp_path / "niah.png").stat().st_size > 1000
    assert json.loads((tmp_path / "niah.json").read_text())["depths"] == [0.2, 0.8]


def test_needle_suite_likelihood_scores_each_case(tmp_path, tiny_chat_model, smol_tokenizer, monkeypatch):
    import pytest

    kc = KangarooChat(tiny_chat_model, smol_tokenizer)
    calls = []
    real = kc.score_options_many

    def spy(visual, questions, options):
        calls.append((visual.shape[0], questions[0], tuple(options[0])))
        return real(visual, questions, options)

    monkeypatch.setattr(kc, "score_options_many", spy)
    monkeypatch.setattr(kc, "ask_batch", lambda *a, **k: pytest.fail("likelihood scoring must not generate"))
    res = needle_suite(kc, str(tmp_path), frame_counts=(2, 4), depths=(0.5,), duration=16.0, per_cell=1,
                       progress=False, mc_scoring="likelihood")
    assert res["mc_scoring"] == "likelihood" and len(calls) == 2
    assert calls[0][0] < calls[1][0] and calls[0][1:] == calls[1][1:]  # more frames, the same question
    assert all(v in (0.0, 1.0) for row in res["accuracy_grid"] for v in row)
    with pytest.raises(ValueError, match="mc_scoring"):
        needle_suite(kc, str(tmp_path), mc_scoring="vote")
