import json
import os
import pickle

import pytest
import torch

from kangaroo.model import KangarooForConditionalGeneration
from kangaroo.model.weights import convert_official, load_model


def test_save_load_bit_exact_and_auto(tiny, tmp_path, smol_tokenizer):
    tiny.save_pretrained(tmp_path)
    assert os.path.exists(tmp_path / "model.safetensors") and not list(tmp_path.glob("*.bin"))
    back = KangarooForConditionalGeneration.from_pretrained(tmp_path, use_safetensors=True)
    a, b = tiny.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from transformers import AutoModelForCausalLM

    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path), KangarooForConditionalGeneration)


def _official_layout(model) -> dict:
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("language_model.model."):
            out["model." + k[len("language_model.model."):]] = v
        elif k.startswith("language_model.lm_head."):
            out["lm_head." + k[len("language_model.lm_head."):]] = v
        elif k.startswith("vision_tower.") or k.startswith("mm_projector."):
            out[k] = v
    out["vision_tower.rope.freqs_cos"] = torch.zeros(4)  # derived buffer in EVA-CLIP
    out["vision_tower.norm.weight"] = torch.ones(32)  # EVA-CLIP's final norm: unused here
    # names never published: found by shape (and, for equal shapes, by sibling / name hint)
    out["st_patchify.weight"] = model.patchify.conv.weight.detach().clone()
    out["st_patchify.bias"] = model.patchify.conv.bias.detach().clone()
    out["tpe_gain"] = model.temporal_embed.gain.detach().clone()
    out["video_special_embeds"] = model.markers.detach().clone()
    return out


def test_convert_official_round_trip(tiny, tmp_path):
    src = tmp_path / "official"
    src.mkdir()
    cfg = tiny.config
    with torch.no_grad():
        tiny.patchify.conv.weight.normal_()
        tiny.markers.normal_()
        tiny.temporal_embed.gain.uniform_()
    raw = {**cfg.text_config.to_dict(), "model_type": "kangaroo", "vision_config": cfg.vision_config}
    (src / "config.json").write_text(json.dumps(raw))
    torch.save(_official_layout(tiny), src / "pytorch_model.bin")
    report = convert_official(str(src), str(tmp_path / "out"), dtype=torch.float32)
    assert report["unmapped"] == [] and report["missing"] == [] and report["untrained"] == []
    assert report["matched_by_shape"] == {"st_patchify.weight": "patchify.conv.weight",
                                          "st_patchify.bias": "patchify.conv.bias", "tpe_gain": "temporal_embed.gain",
                                          "video_special_embeds": "markers"}
    assert report["derived_skipped"] == ["vision_tower.rope.freqs_cos"]
    assert report["unused_skipped"] == ["vision_tower.norm.weight"]
    conv = KangarooForConditionalGeneration.from_pretrained(tmp_path / "out")
    ref = tiny.state_dict()
    for k, v in conv.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert json.loads((tmp_path / "out" / "conversion_report.json").read_text())["mapped"] == report["mapped"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/kangaroo_pwned",))


def test_convert_refuses_code_in_pickle(tiny, tmp_path):
    src = tmp_path / "evil"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({**tiny.config.text_config.to_dict(),
                                                 "vision_config": tiny.config.vision_config}))
    with open(src / "pytorch_model.bin", "wb") as f:
        pickle.dump({"model.x": _Evil()}, f)
    if os.path.exists("/tmp/kangaroo_pwned"):
        os.remove("/tmp/kangaroo_pwned")
    with pytest.raises(ValueError, match="weights_only"):
        convert_official(str(src), str(tmp_path / "out"))
    assert not os.path.exists("/tmp/kangaroo_pwned")


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a built-in name"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(str(tmp_path))


def test_full_folder_drops_a_gguf_quantization_config(tmp_path, smol_tokenizer):
    """A GGUF-loaded LLM is de-quantised in memory but keeps `quantization_config: gguf`, which vLLM
    refuses: a full folder must not carry it; a real quantisation's config stays."""
    from kangaroo.model import tiny_config
    from kangaroo.model.weights import save_model

    tiny = KangarooForConditionalGeneration(tiny_config(vocab=len(smol_tokenizer)))

    tiny.config.text_config.quantization_config = {"quant_method": "gguf"}
    save_model(tiny, smol_tokenizer, str(tmp_path / "full"))
    cfg = json.loads((tmp_path / "full" / "config.json").read_text())
    assert "quantization_config" not in cfg and "quantization_config" not in cfg["text_config"]
    assert cfg["architectures"] == ["KangarooForConditionalGeneration"]
    from kangaroo.model.weights import drop_gguf_quantization

    tiny.config.text_config.quantization_config = {"quant_method": "torchao"}
    drop_gguf_quantization(tiny.config)
    assert tiny.config.text_config.quantization_config == {"quant_method": "torchao"}
