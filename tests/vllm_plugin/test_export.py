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


def test_int4_groups_pack_eight_to_an_int32_lowest_bits_first():
    from kangaroo.vllm_plugin.export import pack_int4, quantize_int4_groups

    w = torch.randn(4, 64) * torch.linspace(0.1, 2.0, 64)  # groups of very different ranges
    q, scale = quantize_int4_groups(w, 32)
    assert q.dtype == torch.int8 and int(q.min()) >= -8 and int(q.max()) <= 7 and scale.shape == (4, 2)
    deq = q.float().reshape(4, 2, 32) * scale[:, :, None]
    assert ((deq.reshape(4, 64) - w).abs() <= scale.repeat_interleave(32, dim=1) / 2 + 1e-6).all()
    packed = pack_int4(q)
    assert packed.dtype == torch.int32 and packed.shape == (4, 8)
    nibbles = torch.stack([(packed >> (4 * j)) & 0xF for j in range(8)], dim=2).reshape(4, 64)  # unpack
    assert torch.equal(nibbles - 8, q.to(torch.int32))
    with pytest.raises(ValueError, match="divisible by 32"):
        quantize_int4_groups(torch.zeros(2, 48), 32)


def test_w4a16_export_layout(tiny_chat_model, smol_tokenizer, tmp_path):
    from kangaroo.model.weights import save_model

    save_model(tiny_chat_model, smol_tokenizer, str(tmp_path / "src"))
    export_quantized(str(tmp_path / "src"), str(tmp_path / "w4"), "w4a16", progress=False)
    src, out = load_file(str(tmp_path / "src" / "model.safetensors")), load_file(str(tmp_path / "w4" / "model.safetensors"))
    k = "language_model.model.layers.0.mlp.down_proj."
    out_f, in_f = src[k + "weight"].shape
    assert k + "weight" not in out and out[k + "weight_packed"].shape == (out_f, in_f // 8)
    assert out[k + "weight_shape"].tolist() == [out_f, in_f]
    cfg = json.loads((tmp_path / "w4" / "config.json").read_text())["quantization_config"]
    group = cfg["config_groups"]["group_0"]["weights"]["group_size"]
    assert cfg["format"] == "pack-quantized" and in_f % group == 0 and out[k + "weight_scale"].shape == (out_f, in_f // group)
    assert torch.equal(out["markers"], src["markers"])


def test_w4a16_is_refused_up_front_where_vllms_cpu_build_has_no_int4_kernel(monkeypatch):
    import platform

    import torch

    from kangaroo.vllm_plugin.export import cpu_kernel_missing

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda: False)
    assert "no int4 kernel" in cpu_kernel_missing("w4a16") and cpu_kernel_missing("w8a8") is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda: True)
    assert cpu_kernel_missing("w4a16") is None
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda: False)
    assert cpu_kernel_missing("w4a16") is None  # the check is about vLLM's x86 libraries only
