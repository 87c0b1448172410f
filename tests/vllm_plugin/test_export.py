"""``kangaroo export-vllm --scheme w8a8``: a compressed-tensors int8 copy of a full folder for vLLM
(no vLLM needed: the layout; vLLM loading it runs in tests/vllm)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from kangaroo.vllm_plugin.export import export_quantized, quantize_channelwise


def test_channelwise_int8_round_trips_within_half_a_step():
    w = torch.randn(6, 40) * torch.linspace(0.01, 3.0, 6)[:, None]  # rows of very different ranges
    q, scale = quantize_channelwise(w)
    assert q.dtype == torch.int8 and scale.shape == (6, 1)
    assert q.abs().amax(dim=1).tolist() == [127] * 6  # each row uses its full range
    assert ((q.float() * scale - w).abs() <= scale / 2 + 1e-6).all()
    with pytest.raises(ValueError, match="out, in"):
        quantize_channelwise(torch.zeros(3))


def test_export_quantizes_only_the_llms_linear_layers(tiny_chat_model, smol_tokenizer, tmp_path):
    from kangaroo.cli import main
    from kangaroo.model.weights import save_model

    save_model(tiny_chat_model, smol_tokenizer, str(tmp_path / "src"))
    assert main(["export-vllm", str(tmp_path / "src"), str(tmp_path / "w8a8")]) == 0
    src, out = load_file(str(tmp_path / "src" / "model.safetensors")), load_file(str(tmp_path / "w8a8" / "model.safetensors"))
    linear = [k for k in src if k.startswith("language_model.model.layers.") and k.endswith("_proj.weight")]
    assert len(linear) == 7 * tiny_chat_model.config.text_config.num_hidden_layers
    for k in linear:
        assert out[k].dtype == torch.int8
        assert torch.allclose(out[k].float() * out[k[:-6] + "weight_scale"], src[k].float(),
                              atol=float(out[k[:-6] + "weight_scale"].max()) / 2 + 1e-6)
    for k in set(src) - set(linear):  # vision tower, projector, markers, embeddings, norms: as they were
        assert torch.equal(out[k], src[k]), k
    cfg = json.loads((tmp_path / "w8a8" / "config.json").read_text())
    q = cfg["quantization_config"]
    assert q["quant_method"] == "compressed-tensors" and q["format"] == "int-quantized"
    assert (tmp_path / "w8a8" / "tokenizer.json").exists()
    with pytest.raises(ValueError, match="already carries"):
        export_quantized(str(tmp_path / "w8a8"), str(tmp_path / "again"))
    with pytest.raises(ValueError, match="new folder"):
        export_quantized(str(tmp_path / "src"), str(tmp_path / "src"))
    with pytest.raises(ValueError, match="unknown scheme"):
        export_quantized(str(tmp_path / "src"), str(tmp_path / "x"), "w4a4")
