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
