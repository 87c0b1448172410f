"""Weight-only quantisation of the LLM (torchao): what is quantised, what is not, and how close it stays."""

import copy

import pytest
import torch

from kangaroo.model import KangarooForConditionalGeneration, tiny_config

pytest.importorskip("torchao", reason="the optional quant extra (pip install -e .[quant])")

from kangaroo.model.quantize import head_is_tied, quantize_llm, storage_bytes  # noqa: E402


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return KangarooForConditionalGeneration(tiny_config(video_token_id=256, image_token_id=257)).eval()


def _logits(m, ids):
    with torch.inference_mode():
        return m(ids)["logits"][0, -1]


@pytest.mark.parametrize("mode,levels", [("int8", 256), ("int4", 16)])
def test_the_llm_is_quantised_and_the_vision_tower_is_not(model, mode, levels):
    ids = torch.randint(0, 256, (1, 12))
    ref = _logits(model, ids)
    tower = {k: v.clone() for k, v in model.vision_tower.state_dict().items()}
    before = storage_bytes(model.llm())
    rep = quantize_llm(model, mode)
    assert rep["quantize"] == mode and rep["layers"] == 2 * 7 + 1 and rep["lm_head"]  # 7 per layer + the head
    w = model.llm().model.layers[0].mlp.up_proj.weight
    assert type(w) is not torch.nn.Parameter or type(w.data) is not torch.Tensor  # a torchao tensor
    qdata = getattr(w, "qdata", None)
    assert qdata is not None and qdata.dtype == torch.int8 and len(qdata.unique()) <= levels
    assert all(type(p.data) is torch.Tensor for p in model.vision_tower.parameters())
    assert all(torch.equal(tower[k], v) for k, v in model.vision_tower.state_dict().items())
    assert storage_bytes(model.llm()) < 0.5 * before  # int8 (or int4 values in int8) against float32
    out = _logits(model, ids)
    assert torch.nn.functional.cosine_similarity(out, ref, dim=0) > (0.999 if mode == "int8" else 0.98)


def test_a_tied_head_is_left_alone(model):
    llm = model.llm()
    llm.lm_head.weight = llm.model.embed_tokens.weight
    assert head_is_tied(model)
    rep = quantize_llm(model, "int8")
    assert not rep["lm_head"] and head_is_tied(model)  # still one table, not a quantised copy beside it


def test_generation_and_bad_modes(model):
    q = copy.deepcopy(model)
    quantize_llm(q, "int8")
    ids = torch.randint(0, 256, (1, 8))
    a = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    b = q.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert b.shape == a.shape and (a[0, 8:] == b[0, 8:]).float().mean() >= 0.5
    assert quantize_llm(model, None) == {"quantize": None}
    with pytest.raises(ValueError, match="unknown quantisation"):
        quantize_llm(model, "int3")


def test_a_missing_torchao_is_a_clear_error(monkeypatch):
    import sys

    from kangaroo.model.quantize import quantize_config

    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # as if it were not installed
    with pytest.raises(ValueError, match=r"pip install -e '\.\[quant\]'"):
        quantize_config("int8", "cpu")
