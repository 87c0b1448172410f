"""kangaroo assemble: an EVA02 vision checkpoint (three layouts) + an HF Llama folder -> a model folder."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from kangaroo.cli import main
from kangaroo.model.assemble import ASSEMBLY, INIT_RULES, assemble
from kangaroo.model.eva_checkpoint import VisionCheckpointError, load_vision_checkpoint, resize_pos_embed
from kangaroo.model.weights import load_model

from .parts import eva_clip_state, tiny_llama_dir, to_timm


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return tiny_llama_dir(tmp_path_factory.mktemp("llama") / "llm", dtype=torch.bfloat16, shard="1MB")


@pytest.fixture(scope="module")
def vision(tmp_path_factory):
    path = tmp_path_factory.mktemp("vision") / "EVA02_CLIP_L_psz14_s4B.pt"
    torch.save(eva_clip_state(), path)
    return str(path)


def _all_tensors(folder):
    out = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            out.update(load_file(os.path.join(folder, f)))
    return out


def test_assembled_folder_is_complete_and_exact(vision, llama, tmp_path):
    out = tmp_path / "kangaroo-8b-init"
    rep = assemble(vision, llama, str(out), image_size=112, max_shard_size="1MB")
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja", "generation_config.json", ASSEMBLY} <= files
    assert not [f for f in os.listdir(tmp_path) if ".part-" in f]
    ours, src = _all_tensors(out), _all_tensors(llama)
    # every LLM tensor bit for bit, in the LLM's own dtype (auto)
    assert rep["dtype"] == "bfloat16"
    for k, v in src.items():
        got = ours[f"language_model.{k}"]
        assert got.dtype == v.dtype and torch.equal(got, v), k
    # the vision tower: tensors as stored (cast to the dtype), pos_embed resized 4x4 -> 8x8
    ck = torch.load(vision, weights_only=True)
    assert torch.equal(ours["vision_tower.blocks.1.mlp.w3.weight"], ck["visual.blocks.1.mlp.w3.weight"].bfloat16())
    assert torch.equal(ours["vision_tower.blocks.0.attn.q_bias"], ck["visual.blocks.0.attn.q_bias"].bfloat16())
    want = resize_pos_embed(ck["visual.pos_embed"], 1, 8).bfloat16()
    assert ours["vision_tower.pos_embed"].shape == (1, 65, 64) and torch.equal(ours["vision_tower.pos_embed"], want)
    assert not [k for k in ours if "rope" in k or "head" in k.split(".")[1:2]]
    # config: tower shape from the tensors, placeholders from tokens.py, vocabulary as released
    cfg = json.load(open(out / "config.json"))
    v = cfg["vision_config"]
    assert (v["width"], v["depth"], v["mlp_hidden"], v["heads"], v["image_size"], v["rope_pretrain_grid"]) == \
        (64, 2, 170, 1, 112, 4)
    model, tok = load_model(str(out))
    assert model.config.video_token_id == tok.convert_tokens_to_ids("<|kangaroo_video|>")
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|kangaroo_image|>")
    assert model.config.text_config.vocab_size == 49152 == model.get_input_embeddings().weight.shape[0]
    assert tok.chat_template
    # the new parts follow their written rules
    meta = json.load(open(out / ASSEMBLY))
    assert set(meta["init"]) == set(INIT_RULES) and meta["untrained"] == ["temporal_embed", "patchify",
                                                                           "mm_projector", "markers"]
    assert torch.all(model.patchify.conv.weight == 1 / 8) and torch.all(model.patchify.conv.bias == 0)
    assert torch.all(model.temporal_embed.gain == 0)
    emb_std = float(model.get_input_embeddings().weight.detach().float().std())
    assert 0.5 * emb_std < float(model.markers.detach().float().std()) < 1.5 * emb_std
    # and it runs
    with torch.no_grad():
        rows = model.visual_rows([(torch.randn(3, 3, 112, 112), torch.tensor([0.0, 1.0, 2.0]))])
    assert rows.shape == (model.config.num_visual_tokens(3, 112, 112), 64) and torch.isfinite(rows).all()


def test_dtype_float32_upcasts_exactly_and_seed_repeats(vision, llama, tmp_path):
    a = assemble(vision, llama, str(tmp_path / "a"), image_size=56, dtype="float32")
    assemble(vision, llama, str(tmp_path / "b"), image_size=56, dtype="float32")
    assert a["dtype"] == "float32" and a["vision"]["pos_embed"] == "as stored"
    ta, tb, src = _all_tensors(tmp_path / "a"), _all_tensors(tmp_path / "b"), _all_tensors(llama)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)  # the new parts' init is seeded
    k = "model.layers.1.mlp.down_proj.weight"
    assert ta[f"language_model.{k}"].dtype == torch.float32 and torch.equal(ta[f"language_model.{k}"], src[k].float())


@pytest.mark.parametrize("layout", ["open_clip", "timm_split", "timm_fused", "safetensors"])
def test_other_layouts_read_the_same(vision, tmp_path, layout):
    state = eva_clip_state()
    if layout == "open_clip":
        sd = to_timm(state, fused=False, prefix="visual.trunk.")
        sd["visual.head.proj.weight"] = torch.zeros(32, 64)
        sd.update({k: v for k, v in state.items() if k.startswith("text.")})
    else:
        sd = to_timm(state, fused=layout == "timm_fused") if layout != "safetensors" else state
    path = tmp_path / ("v.safetensors" if layout == "safetensors" else "v.pth")
    if layout == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, path)
    else:
        torch.save({"state_dict": sd}, path)
    cfg, got, rep = load_vision_checkpoint(str(path), image_size=112)
    ref_cfg, ref, _ = load_vision_checkpoint(vision, image_size=112)
    assert cfg == ref_cfg and sorted(got) == sorted(ref)
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert rep["layout"] == {"open_clip": "open_clip", "safetensors": "eva_clip"}.get(layout, "timm")


def test_heads_given(vision):
    cfg, _, _ = load_vision_checkpoint(vision, heads=4)
    assert cfg.heads == 4
    with pytest.raises(VisionCheckpointError, match="heads"):
        load_vision_checkpoint(vision, heads=3)


def test_incomplete_checkpoint_is_refused_naming_every_key(llama, tmp_path, capsys):
    state = eva_clip_state()
    for k in ("visual.blocks.1.attn.k_proj.weight", "visual.blocks.0.mlp.ffn_ln.bias", "visual.cls_token"):
        del state[k]
    state["visual.blocks.1.norm2.weight"] = torch.ones(63)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    out = tmp_path / "out"
    rc = main(["assemble", "--vision", str(path), "--llm", llama, "--out", str(out), "--image-size", "112"])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists() and os.listdir(tmp_path) == ["broken.pt"]
    # without cls_token the tower would have no prefix: it is named as missing like the others
    for k in ("blocks.1.attn.k_proj.weight", "blocks.0.mlp.ffn_ln.bias", "cls_token", "blocks.1.norm2.weight (63,)"):
        assert k in err, err


def test_cli_assemble_and_refuses_existing(vision, llama, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["assemble", "--vision", vision, "--llm", llama, "--out", str(out), "--image-size", "56",
                 "--dtype", "bfloat16"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["vision_layout"] == "eva_clip" and rep["media_tokens"]["video"]["token"] == "<|kangaroo_video|>"
    assert main(["assemble", "--vision", vision, "--llm", llama, "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_reserved_tokens_are_the_placeholders_and_nothing_is_added(vision, tmp_path):
    # a Llama-3-style tokenizer: reserved special tokens inside the embedding table
    llm = tiny_llama_dir(tmp_path / "llm3", dtype=torch.bfloat16, reserved=4)
    from transformers import AutoTokenizer

    before = len(AutoTokenizer.from_pretrained(llm))
    rep = assemble(vision, llm, str(tmp_path / "m"), image_size=56)
    model, tok = load_model(str(tmp_path / "m"))
    assert len(tok) == before == model.config.text_config.vocab_size  # the vocabulary is not enlarged
    r0, r1 = (tok.convert_tokens_to_ids(f"<|reserved_special_token_{i}|>") for i in (0, 1))
    assert (model.config.video_token_id, model.config.image_token_id) == (r0, r1)
    assert r1 < model.get_input_embeddings().weight.shape[0]
    assert rep["media_tokens"]["video"]["token"] == "<|reserved_special_token_0|>"


def test_unsharded_llm_folder(vision, tmp_path):
    llm = tiny_llama_dir(tmp_path / "one", dtype=torch.float32, shard="10GB")
    assert "model.safetensors" in os.listdir(llm) and "model.safetensors.index.json" not in os.listdir(llm)
    rep = assemble(vision, llm, str(tmp_path / "m"), image_size=56)
    assert rep["dtype"] == "float32" and rep["llm"]["files"] == ["model.safetensors"]
    src, ours = _all_tensors(llm), _all_tensors(tmp_path / "m")
    assert all(torch.equal(ours[f"language_model.{k}"], v) for k, v in src.items())


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/kangaroo_vision_pwned",))


def test_vision_checkpoint_with_code_is_refused(llama, tmp_path, capsys):
    import pickle

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"visual.patch_embed.proj.weight": _Evil()}, f)
    if os.path.exists("/tmp/kangaroo_vision_pwned"):
        os.remove("/tmp/kangaroo_vision_pwned")
    assert main(["assemble", "--vision", str(path), "--llm", llama, "--out", str(tmp_path / "m")]) == 2
    assert "weights_only" in capsys.readouterr().err
    assert not os.path.exists("/tmp/kangaroo_vision_pwned") and not (tmp_path / "m").exists()
