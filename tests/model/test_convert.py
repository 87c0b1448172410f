"""kangaroo convert, strictly: every official tensor mapped or listed; a part left at random init
fails the conversion (nothing written) unless --allow-partial, which marks it untrained."""

import json
import os

import torch

from kangaroo.cli import main
from kangaroo.model import KangarooForConditionalGeneration

from .test_weights import _official_layout


def _release(tiny, tmp_path, drop=(), extra=None):
    src = tmp_path / "official"
    src.mkdir()
    cfg = tiny.config
    raw = {**cfg.text_config.to_dict(), "model_type": "kangaroo", "vision_config": cfg.vision_config}
    (src / "config.json").write_text(json.dumps(raw))
    state = {k: v for k, v in _official_layout(tiny).items() if k not in drop}
    state.update(extra or {})
    torch.save(state, src / "pytorch_model.bin")
    return str(src)


def test_missing_parts_fail_loudly_and_write_nothing(tiny, tmp_path, capsys):
    src = _release(tiny, tmp_path, drop=("tpe_gain", "video_special_embeds"))
    out = tmp_path / "out"
    assert main(["convert", "--official", src, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "temporal_embed: ['temporal_embed.gain']" in err and "markers: ['markers']" in err
    assert "patchify" not in err.split("random init:")[1].split(". Supply")[0]  # found by shape
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["official"]


def test_ambiguous_shapes_are_reported_and_map_resolves_them(tiny, tmp_path, capsys):
    # two unnamed tensors of the TPE gain's shape, neither hinting at it: shape alone cannot decide
    g = tiny.temporal_embed.gain.detach()
    src = _release(tiny, tmp_path, drop=("tpe_gain",), extra={"w_a": g.clone() * 2, "w_b": g.clone() * 3})
    assert main(["convert", "--official", src, "--out", str(tmp_path / "x")]) == 2
    assert "'temporal_embed.gain': ['w_a', 'w_b']" in capsys.readouterr().err
    m = tmp_path / "map.json"
    m.write_text(json.dumps({"w_b": "temporal_embed.gain"}))
    assert main(["convert", "--official", src, "--out", str(tmp_path / "y"), "--map", str(m), "--dtype", "float32"]) == 0
    rep = json.loads((tmp_path / "y" / "conversion_report.json").read_text())
    assert rep["mapped_by_map"] == {"w_b": "temporal_embed.gain"} and rep["unmapped"] == ["w_a"]
    conv = KangarooForConditionalGeneration.from_pretrained(tmp_path / "y")
    assert torch.equal(conv.temporal_embed.gain, g * 3)


def test_allow_partial_marks_untrained_parts(tiny, tmp_path):
    src = _release(tiny, tmp_path, drop=("video_special_embeds", "st_patchify.bias"))
    out = tmp_path / "out"
    assert main(["convert", "--official", src, "--out", str(out), "--allow-partial", "--dtype", "float32"]) == 0
    rep = json.loads((out / "conversion_report.json").read_text())
    assert rep["untrained"] == ["markers", "patchify"] and rep["missing"] == ["markers", "patchify.conv.bias"]
    conv = KangarooForConditionalGeneration.from_pretrained(out)
    assert torch.equal(conv.patchify.conv.weight, tiny.patchify.conv.weight)  # what was found is kept
    assert torch.all(conv.patchify.conv.bias == 0) and conv.markers.abs().sum() > 0  # the rest: fresh init
    assert torch.equal(conv.vision_tower.blocks[0].mlp.w1.weight, tiny.vision_tower.blocks[0].mlp.w1.weight)


def test_release_tokenizer_gives_the_placeholders(tiny, tmp_path, smol_tokenizer):
    src = _release(tiny, tmp_path)
    smol_tokenizer.save_pretrained(src)
    out = tmp_path / "out"
    assert main(["convert", "--official", src, "--out", str(out), "--dtype", "float32"]) == 0
    rep = json.loads((out / "conversion_report.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["video_token_id"], cfg["image_token_id"]) == (rep["media_tokens"]["video"], rep["media_tokens"]["image"])
    assert (out / "tokenizer_config.json").exists()
