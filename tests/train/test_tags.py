"""Stage 0 (objective: tags): vision pre-training on caption tags."""

import json
import os

import pytest
import torch

from kangaroo.model import KangarooForConditionalGeneration, tiny_config
from kangaroo.train import Recipe, make_trainer
from kangaroo.train.tags import TagTrainer, build_vocab, caption_terms


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    from kangaroo.synth import generate_dataset

    out = tmp_path_factory.mktemp("synth_images")
    generate_dataset(out, num_videos=3, min_seconds=8, max_seconds=12, seed=5, progress=False, images_per_video=6)
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smol_tokenizer):
    d = tmp_path_factory.mktemp("tinymodel_tags")
    torch.manual_seed(0)
    cfg = tiny_config(vocab=len(smol_tokenizer))
    KangarooForConditionalGeneration(cfg).save_pretrained(d)
    smol_tokenizer.save_pretrained(d)
    return str(d)


def tag_recipe(tiny_dir, image_data, **kw):
    base = dict(name="tags", init=tiny_dir, objective="tags", image_size=56, batch_size=8, train=["vision"],
                data=[dict(path=str(image_data / "images.json"), format="llava"),
                      dict(path=str(image_data / "mcqa.json"), format="mcqa")],  # videos: ignored here
                lr=1e-3, warmup_steps=2, max_steps=6, save_every=3)
    base.update(kw)
    return Recipe.from_dict(base)


def test_caption_terms_and_vocab():
    assert caption_terms("A red circle and a blue square.") == ["red", "circle", "blue", "square", "red circle",
                                                               "blue square"]
    assert caption_terms("Nothing, an empty scene.") == ["empty"]
    vocab = build_vocab(["A red circle.", "A red circle and a cyan star.", "A red square."], min_count=2)
    assert vocab == ["red", "circle", "red circle"]


def test_objective_is_checked():
    with pytest.raises(ValueError, match="objective"):
        Recipe(objective="clip")
    with pytest.raises(ValueError, match="batch_size"):
        Recipe(batch_size=0)


def test_tag_stage_trains_only_the_tower_and_resumes_exactly(tmp_path, tiny_dir, image_data):
    r = tag_recipe(tiny_dir, image_data)
    full = make_trainer(r, str(tmp_path / "full"), progress=False)
    assert isinstance(full, TagTrainer)
    # the targets are the caption's terms: every image of the set has at least one
    vocab = json.load(open(tmp_path / "full" / "tags.json"))
    assert vocab == full.vocab and {"circle", "square", "triangle"} & set(vocab)
    before = {k: v.clone() for k, v in full.model.state_dict().items()}
    full.train()
    after = full.model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"vision_tower"}
    ref = [json.loads(x)["loss"] for x in open(tmp_path / "full" / "metrics.jsonl")]
    assert len(ref) == 6

    part = TagTrainer(r, str(tmp_path / "part"), progress=False)
    part.train(stop_at=4)  # the last checkpoint is step 3
    os.remove(tmp_path / "part" / "metrics.jsonl")
    again = TagTrainer(r, str(tmp_path / "part"), progress=False)
    again.train(resume=True)
    got = [json.loads(x)["loss"] for x in open(tmp_path / "part" / "metrics.jsonl")]
    assert got == pytest.approx(ref[3:], rel=1e-5, abs=1e-7)

    # the exported model is a whole Kangaroo (the tag head is not part of it) and the next stage starts from it
    from kangaroo.model.weights import load_model

    m, _ = load_model(str(tmp_path / "full" / "model"))
    assert torch.equal(m.vision_tower.patch_embed.proj.weight, after["vision_tower.patch_embed.proj.weight"].cpu())  # trained on CUDA where there is one
    assert not any("tag_head" in k for k in m.state_dict())


def test_vision_lr_sets_the_towers_rate_and_the_new_head_keeps_lr(tmp_path, tiny_dir, image_data):
    """A tag stage on a tower that already sees (vision_lr) must not let the random head's first steps undo it."""
    t = TagTrainer(tag_recipe(tiny_dir, image_data, vision_lr=1e-5), str(tmp_path / "a"), progress=False)
    tower, head = t.opt.param_groups
    assert tower["initial_lr"] == 1e-5 and head["initial_lr"] == 1e-3
    assert {id(p) for p in head["params"]} == {id(p) for p in t.head.parameters()}
    assert all(p.requires_grad for p in tower["params"]) and len(tower["params"]) == len(
        [p for p in t.model.vision_tower.parameters()])
    same = TagTrainer(tag_recipe(tiny_dir, image_data), str(tmp_path / "b"), progress=False)
    assert [g["initial_lr"] for g in same.opt.param_groups] == [1e-3, 1e-3]


def test_images_beyond_the_cache_are_decoded_per_step(tmp_path, tiny_dir, image_data):
    """With image_cache_mb=0 nothing is kept in memory; every batch (and so the losses) stays the same."""
    cached = TagTrainer(tag_recipe(tiny_dir, image_data), str(tmp_path / "a"), progress=False)
    streamed = TagTrainer(tag_recipe(tiny_dir, image_data, image_cache_mb=0), str(tmp_path / "b"), progress=False)
    assert cached.images.cached and not streamed.images.cached and streamed.images.arr is None
    for step in (0, 1, 5):
        xa, ta = cached.batch(step)
        xb, tb = streamed.batch(step)
        assert torch.equal(xa, xb) and torch.equal(ta, tb)


def test_tag_stage_refuses_what_it_cannot_do(tmp_path, tiny_dir, image_data, synth_dir):
    with pytest.raises(ValueError, match="only the vision tower"):
        TagTrainer(tag_recipe(tiny_dir, image_data, train=["vision", "projector"]), str(tmp_path / "a"), progress=False)
    no_images = tag_recipe(tiny_dir, image_data, data=[dict(path=str(synth_dir / "mcqa.json"), format="mcqa")])
    with pytest.raises(ValueError, match="no image-caption records"):
        TagTrainer(no_images, str(tmp_path / "b"), progress=False)


def test_synth_writes_every_mc_question_as_one_conversation(image_data):
    convs = json.load(open(image_data / "mc_conversations.json"))
    mcqa = json.load(open(image_data / "mcqa.json"))
    for c in convs:
        mine = [q for q in mcqa if q["video"] == c["video"]]
        asks = [t["value"] for t in c["conversations"] if t["from"] == "human"]
        answers = [t["value"] for t in c["conversations"] if t["from"] == "gpt"]
        assert len(asks) == len(mine) and asks[0].startswith("<video>\n")
        by_q = {q["question"]: "ABCD"[q["answer_index"]] for q in mine}
        for a, ans in zip(asks, answers):
            assert by_q[a.replace("<video>\n", "").split("\nOptions:")[0]] == ans
    # still frames: captioned, and the same pictures as multiple choice whose answer is in the caption
    imgs = json.load(open(image_data / "images.json"))
    assert len(imgs) == 18
    caption = {r["image"]: r["conversations"][1]["value"].lower() for r in imgs}
    mc = json.load(open(image_data / "image_mcqa.json"))
    assert 9 <= len(mc) <= 18  # every picture with something in it
    for r in mc:
        ask, letter = r["conversations"][0]["value"], r["conversations"][1]["value"]
        options = [line[4:] for line in ask.splitlines() if line.startswith("(")]
        assert len(options) == 4 and len(set(options)) == 4
        assert options["ABCD".index(letter)] in caption[r["image"]]
        assert sum(o in caption[r["image"]] for o in options) == 1
