import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from kangaroo.model import KangarooForConditionalGeneration, tiny_config
from kangaroo.model.tokens import ensure_media_tokens
from kangaroo.prompts import ChatRenderer
from kangaroo.train import Recipe, Trainer, greedy_rows
from kangaroo.train.data import IGNORE, Mixture, tokenize


def recipe(tiny_dir, synth_dir, **kw):
    base = dict(name="t", init=tiny_dir, image_size=56, min_frames=2, max_frames=6, seconds_per_frame=3.0,
                max_seq_len=400, max_steps=6, warmup_steps=2, save_every=3, lr=1e-3, rows_per_step=2,
                train=["vision", "temporal", "patchify", "projector", "markers", "llm"],
                data=[dict(path=str(synth_dir / "conversations.json"), format="llava", weight=1.0),
                      dict(path=str(synth_dir / "mcqa.json"), format="mcqa", weight=2.0),
                      dict(path=str(synth_dir / "captions.json"), format="captions", weight=1.0)])
    base.update(kw)
    return Recipe.from_dict(base)


def test_recipe_yaml_round_trip(tmp_path, tiny_dir, synth_dir):
    r = recipe(tiny_dir, synth_dir, lora={"r": 4, "alpha": 8})
    r.save(tmp_path / "r.yaml")
    assert Recipe.load(str(tmp_path / "r.yaml")) == r
    with pytest.raises(ValueError, match="unknown recipe keys"):
        Recipe.from_dict({"lr": 1, "frames": 3})
    with pytest.raises(ValueError, match="unknown modules"):
        Recipe(train=["eyes"])
    with pytest.raises(ValueError, match="not both"):
        Recipe(train=["llm", "lora"])


def test_recipe_folder_groups_expand_in_order(tmp_path):
    flat = [dict(path=f"d/{f}/{n}", format=fmt, weight=w) for f in ("a", "b2", "c")
            for n, fmt, w in (("qa.json", "openqa", 0.5), ("conv.json", "llava", 0.25))]
    group = {"folders": ["d/a", "d/b2/", "d/c"],
             "sources": [{"path": "qa.json", "format": "openqa", "weight": 0.5},
                         {"path": "conv.json", "format": "llava", "weight": 0.25}]}
    extra = {"path": "e/one.json", "format": "mcqa", "weight": 1.0}
    assert Recipe.from_dict({"data": [group, extra]}) == Recipe.from_dict({"data": flat + [extra]})
    # in a file, the expanded paths are relative to the recipe, like plain ones
    (tmp_path / "r.yaml").write_text("data:\n  - folders: [d/a]\n    sources:\n      - {path: qa.json}\n")
    assert Recipe.load(str(tmp_path / "r.yaml")).data[0].path == str(tmp_path / "d/a/qa.json")
    for bad, msg in (({"folders": ["d/a"]}, "'sources' must be"), ({"sources": [{"path": "x"}]}, "'folders' must be"),
                     ({**group, "weight": 2}, "only 'folders' and 'sources'"),
                     ({**group, "folders": ["d/a", "d/a"]}, "listed twice"),
                     ({**group, "sources": [{"format": "llava"}]}, "with a 'path'")):
        with pytest.raises(ValueError, match=msg):
            Recipe.from_dict({"data": [bad]})


def test_labels_cover_assistant_turns_only(smol_tokenizer):
    b = ChatRenderer(smol_tokenizer, ensure_media_tokens(smol_tokenizer))
    msgs = [{"role": "user", "content": "q1", "video": True}, {"role": "assistant", "content": "answer one"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "B"}]
    ids, labels = tokenize(b, msgs, 4)
    labelled = smol_tokenizer.decode([i for i, lab in zip(ids, labels) if lab != IGNORE])
    assert labelled.replace("\n", "") == "answer one<|im_end|>B<|im_end|>"
    vid = b.media_ids["video"]
    assert ids.count(vid) == 4 and all(lab == IGNORE for i, lab in zip(ids, labels) if i == vid)


def test_greedy_rows():
    assert greedy_rows([3, 4, 2, 5, 1], 7) == [[0, 1], [2, 3], [4]]
    assert greedy_rows([9, 2], 7) == [[0], [1]]


def test_mixture_is_deterministic(tiny_dir, synth_dir):
    r = recipe(tiny_dir, synth_dir)
    a, b = Mixture(r), Mixture(r)
    assert [a.draw(i).messages for i in (5, 0, 17)] == [b.draw(i).messages for i in (5, 0, 17)]


def test_data_source_keeps_only_named_families(synth_dir):
    from kangaroo.train.data import to_samples
    from kangaroo.train.recipe import DataSource

    path = str(synth_dir / "openqa.json")
    records = json.load(open(path))
    when = [r["question"] for r in records if r["family"] == "when"]
    assert when and len(when) < len(records)
    got = to_samples(DataSource(path, "openqa", families=["when"]))
    assert [s.messages[0]["content"] for s in got] == when
    with pytest.raises(ValueError, match="no records of the families"):
        to_samples(DataSource(path, "openqa", families=["juggling"]))


def test_shuffled_options_move_the_letter_with_the_answer(synth_dir):
    from kangaroo.train.data import Mixture
    from kangaroo.train.recipe import DataSource, Recipe

    path = str(synth_dir / "mcqa.json")
    records = json.load(open(path))
    r = Recipe(data=[DataSource(path, "mcqa", shuffle_options=True), DataSource(path, "mcqa_fact", shuffle_options=True)])
    m = Mixture(r)
    letters, facts = set(), 0
    for i in range(60):
        s = m.draw(i)
        q, cands, ans = s.mc
        rec = next(x for x in records if q.endswith(x["question"]) and sorted(x["candidates"]) == sorted(cands))
        assert cands[ans] == rec["answer"]  # the reply names the answer, wherever it moved
        assert s.messages[-1]["content"] == "ABCDEFGH"[ans] and f"({'ABCDEFGH'[ans]}) {rec['answer']}" in s.messages[0]["content"]
        letters.add(ans)
        if s.media is None:
            facts += 1
            assert s.messages[0]["content"].startswith(f"Fact: {rec['answer']}.")
    assert letters == {0, 1, 2, 3} and 0 < facts < 60
    assert [m.draw(i).messages for i in (3, 9)] == [Mixture(r).draw(i).messages for i in (3, 9)]  # deterministic


def test_text_letter_reply_names_the_text_then_the_letter_that_labels_it(synth_dir):
    from kangaroo.eval.extract import extract_choice
    from kangaroo.train.data import Mixture
    from kangaroo.train.recipe import DataSource, Recipe

    path = str(synth_dir / "mcqa.json")
    r = Recipe(data=[DataSource(path, "mcqa", shuffle_options=True, reply="text_letter"),
                     DataSource(path, "mcqa_fact", reply="text_letter")])
    m = Mixture(r)
    seen = set()
    for i in range(40):
        s = m.draw(i)
        q, cands, ans = s.mc
        reply = s.messages[-1]["content"]
        assert reply == f"{cands[ans]} ({'ABCDEFGH'[ans]})"
        assert f"({'ABCDEFGH'[ans]}) {cands[ans]}" in s.messages[0]["content"]  # the letter it copies
        assert extract_choice(reply, cands) == ans  # the evaluation reads the letter it names
        seen.add((s.media is None, ans))
    assert {a for _, a in seen} == {0, 1, 2, 3} and {f for f, _ in seen} == {True, False}


def shuffled_pair(path, **change):
    """Two mixtures over one mcqa file with shuffled options and "text (letter)" replies, the same
    seed: without and with ``change`` (DataSource keys)."""
    from kangaroo.train.data import Mixture
    from kangaroo.train.recipe import DataSource, Recipe

    kw = dict(shuffle_options=True, reply="text_letter")
    return (Mixture(Recipe(data=[DataSource(path, "mcqa", **kw)], seed=5)),
            Mixture(Recipe(data=[DataSource(path, "mcqa", **kw, **change)], seed=5)))


def test_time_jitter_moves_time_options_and_keeps_the_right_one_nearest(synth_dir):
    from kangaroo.train.recipe import DataSource

    path = str(synth_dir / "mcqa.json")
    records = json.load(open(path))
    m0, m1 = shuffled_pair(path, time_jitter_s=0.8)
    changed = 0
    for i in range(80):
        a, b = m0.draw(i), m1.draw(i)
        (q, c0, ans), (_, c1, ans1) = a.mc, b.mc
        assert ans1 == ans and b.media == a.media  # the same record, options and letter
        if not c0[0].endswith(" seconds"):
            assert b == a  # only time options move
            continue
        old, new = [float(c.split()[0]) for c in c0], [float(c.split()[0]) for c in c1]
        assert all(abs(n - o) <= 0.8 + 1e-9 for n, o in zip(new, old)) and len(set(new)) == 4
        assert min(range(4), key=lambda j: abs(new[j] - old[ans])) == ans  # the right one is the nearest
        assert b.messages[-1]["content"] == f"{c1[ans]} ({'ABCDEFGH'[ans]})" and f"(B) {c1[1]}" in b.messages[0]["content"]
        changed += c1 != c0
    assert changed >= 5 and any(r["family"] == "when" for r in records)
    assert [shuffled_pair(path, time_jitter_s=0.8)[1].draw(i).mc for i in range(20)] == [m1.draw(i).mc for i in range(20)]  # deterministic
    with pytest.raises(ValueError, match="time_jitter_s: only mcqa"):
        DataSource(path, "openqa", time_jitter_s=0.5)
    with pytest.raises(ValueError, match="time_jitter_s"):
        DataSource(path, "mcqa", time_jitter_s=-1.0)


def test_near_distractors_offer_what_is_on_screen_just_before_or_after(synth_dir, tmp_path):
    import shutil

    from kangaroo.synth.qa import near_names
    from kangaroo.train.data import Mixture
    from kangaroo.train.recipe import DataSource, Recipe

    path = str(synth_dir / "mcqa.json")
    objects = {t["video"]: t["objects"] for t in json.load(open(synth_dir / "timelines.json"))}
    m0, m1 = shuffled_pair(path, near_distractors=1.0)
    changed = 0
    for i in range(80):
        a, b = m0.draw(i), m1.draw(i)
        (q, c0, ans), (_, c1, ans1) = a.mc, b.mc
        assert ans1 == ans and c1[ans] == c0[ans] and b.media == a.media  # the same record, answer and letter
        if not q.startswith("Which object is on screen at"):
            assert b == a  # only appear_at questions change
            continue
        t = float(q.split(" at ")[1].split()[0])
        video = os.path.relpath(b.media, synth_dir)
        wrong = {c for j, c in enumerate(c1) if j != ans}
        nearest = near_names(objects[video], t, {c1[ans]}, 3)
        assert set(nearest) <= wrong and len(set(c1)) == 4  # the nearest in time are offered, no repeats
        assert b.messages[-1]["content"] == f"{c1[ans]} ({'ABCDEFGH'[ans]})" and f"(B) {c1[1]}" in b.messages[0]["content"]
        changed += c1 != c0
    assert changed >= 3
    assert [shuffled_pair(path, near_distractors=1.0)[1].draw(i).mc for i in range(20)] == [m1.draw(i).mc for i in range(20)]  # deterministic
    with pytest.raises(ValueError, match="near_distractors: only mcqa"):
        DataSource(path, "openqa", near_distractors=0.5)
    with pytest.raises(ValueError, match="near_distractors"):
        DataSource(path, "mcqa", near_distractors=1.5)
    alone = tmp_path / "mcqa.json"  # no timelines.json beside it: refused, naming the file
    shutil.copy(path, alone)
    with pytest.raises(ValueError, match="timelines.json is missing"):
        Mixture(Recipe(data=[DataSource(str(alone), "mcqa", near_distractors=0.5)]))


def test_uniform_frames_sample_a_video_as_an_evaluation_at_that_count_does(synth_dir, tiny_dir):
    from kangaroo.model import KangarooConfig
    from kangaroo.train.data import encode_sample
    from kangaroo.train.recipe import DataSource
    from kangaroo.video import SamplingConfig, load_video

    path = str(synth_dir / "mcqa.json")
    base = dict(image_size=56, min_frames=2, max_frames=6, seconds_per_frame=3.0, max_seq_len=4000, seed=3)
    plain = Recipe(data=[DataSource(path, "mcqa", shuffle_options=True)], **base)
    mixed = Recipe(data=[DataSource(path, "mcqa", shuffle_options=True, uniform_frames=[9, 11], uniform_share=0.5)],
                   **base)
    m0, m1 = Mixture(plain), Mixture(mixed)
    drawn = [m1.draw(i) for i in range(40)]
    counts = [s.frames for s in drawn]
    assert None in counts and {9, 11} <= set(counts)  # about half, both counts
    for i, s in enumerate(drawn):  # the same record and options: only the frame count is added
        assert dataclasses.replace(s, frames=None) == m0.draw(i)
    assert [Mixture(mixed).draw(i).frames for i in range(40)] == counts  # deterministic (resume replays it)

    from transformers import AutoTokenizer

    config, tok = KangarooConfig.from_pretrained(tiny_dir), AutoTokenizer.from_pretrained(tiny_dir)
    builder = ChatRenderer(tok, ensure_media_tokens(tok))
    s = next(x for x in drawn if x.frames == 11)
    enc = encode_sample(s, mixed, builder, config)
    want = load_video(s.media, SamplingConfig(num_frames=11))  # what `kangaroo eval --frames 11` reads
    assert enc.pixels.shape[0] == 11 and torch.allclose(enc.timestamps, torch.as_tensor(want.timestamps).float())
    s = next(x for x in drawn if x.frames is None)
    assert encode_sample(s, mixed, builder, config).pixels.shape[0] <= 6  # the stage's dynamic rate
    with pytest.raises(ValueError, match="needs uniform_frames"):
        DataSource(path, "mcqa", uniform_share=0.2)
    with pytest.raises(ValueError, match="uniform_share"):
        DataSource(path, "mcqa", uniform_frames=[16], uniform_share=1.5)


def _losses(out):
    return [json.loads(x)["loss"] for x in open(os.path.join(out, "metrics.jsonl"))]


def test_train_and_resume_exactly(tmp_path, tiny_dir, synth_dir):
    r = recipe(tiny_dir, synth_dir)
    full = Trainer(r, str(tmp_path / "full"), progress=False)
    full.train()
    ref = _losses(tmp_path / "full")
    assert len(ref) == 6 and all(l == l for l in ref)
    part = Trainer(r, str(tmp_path / "part"), progress=False)
    part.train(stop_at=4)  # interrupted after step 4; the last checkpoint is step 3
    # a save that crashed half-way (its folder never renamed) is ignored: resume from step 3
    (tmp_path / "part" / "checkpoints" / "step_0000006.part").mkdir()
    again = Trainer(r, str(tmp_path / "part"), progress=False)
    again.train(resume=True)
    assert again.step == 6
    # bitwise the same losses, and each step once in metrics.jsonl (step 4 was logged twice before)
    steps = [json.loads(x)["step"] for x in open(tmp_path / "part" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert _losses(tmp_path / "part") == ref
    rows = [json.loads(x) for x in open(tmp_path / "full" / "metrics.jsonl")]
    assert all(x["tok_s_per_gpu"] > 0 and x["tflops_per_gpu"] > 0 for x in rows)
    assert os.path.exists(tmp_path / "full" / "loss.png")
    assert os.path.exists(tmp_path / "full" / "model" / "config.json")


def test_export_checkpoint_equals_the_runs_own_export(tmp_path, tiny_dir, synth_dir):
    """A checkpoint exported by ``kangaroo export`` is the model the run itself exports at that
    step; an earlier step is another model; a step with no checkpoint is refused with the list."""
    from kangaroo.model.weights import load_model
    from kangaroo.train import export_checkpoint

    r = recipe(tiny_dir, synth_dir, name="e", init="previous", max_steps=2, save_every=1, train=["projector", "lora"],
               lora={"r": 4, "alpha": 8})
    run = tmp_path / "run"
    Trainer(r, str(run), previous=tiny_dir, progress=False).train()
    got = export_checkpoint(str(run), str(tmp_path / "last"), previous=tiny_dir)
    assert got["step"] == 2
    first = export_checkpoint(str(run), str(tmp_path / "first"), step=1, previous=tiny_dir)
    assert first["step"] == 1
    ref, mid, last = (load_model(str(p))[0].state_dict() for p in (run / "model", tmp_path / "first", tmp_path / "last"))
    assert ref.keys() == last.keys() == mid.keys()
    assert all(torch.equal(ref[k], last[k]) for k in ref)
    assert not all(torch.equal(ref[k], mid[k]) for k in ref)
    with pytest.raises(FileNotFoundError, match=r"steps \[1, 2\]"):
        export_checkpoint(str(run), str(tmp_path / "x"), step=7, previous=tiny_dir)
    with pytest.raises(ValueError, match="no previous stage"):
        export_checkpoint(str(run), str(tmp_path / "x"))
    other = tmp_path / "other"  # the same checkpoints under a recipe that trains other modules
    os.makedirs(other)
    os.symlink(run / "checkpoints", other / "checkpoints")
    dataclasses.replace(r, train=["patchify", "lora"]).save(str(other / "recipe.yaml"))
    with pytest.raises(ValueError, match="does not match the recipe's trainable parameters"):
        export_checkpoint(str(other), str(tmp_path / "x"), previous=tiny_dir)
    out = subprocess.run([sys.executable, "-m", "kangaroo.cli", "export", str(run), "--out", str(tmp_path / "cli"),
                          "--step", "1", "--init-from", tiny_dir], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["step"] == 1 and (tmp_path / "cli" / "config.json").exists()


def test_lora_stage_exports_compact_and_continues(tmp_path, tiny_dir, synth_dir):
    from kangaroo.train import run_curriculum

    stages = [recipe(tiny_dir, synth_dir, name="s1", max_steps=2, train=["projector", "patchify"]),
              recipe(tiny_dir, synth_dir, name="s2", init="previous", max_steps=2, train=["projector", "lora"],
                     lora={"r": 4, "alpha": 8})]
    res = run_curriculum(stages, str(tmp_path), progress=False)
    assert [x["stage"] for x in res] == ["s1", "s2"]
    from kangaroo.model.weights import load_model

    m, _ = load_model(str(tmp_path / "2_s2" / "model"))
    assert not hasattr(m.language_model, "peft_config")  # merged for inference


@pytest.mark.timeout(600)
def test_fsdp_two_processes_gloo(tmp_path, tiny_dir, synth_dir):
    import socket

    for name, train in (("full", ["projector", "llm"]), ("lora", ["projector", "lora"])):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = str(sock.getsockname()[1])
        r = recipe(tiny_dir, synth_dir, name=name, max_steps=2, save_every=1, rows_per_step=1, train=train)
        path = tmp_path / f"{name}.yaml"
        r.save(path)
        out = tmp_path / name
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
               "-m", "kangaroo.cli", "train", "--recipe", str(path), "--out", str(out), "--quiet"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=280, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert p.returncode == 0, p.stderr[-3000:]
        assert len(_losses(out)) == 2
        assert (out / "checkpoints" / "latest").read_text().strip() == "step_0000002"
        assert (out / "model" / "config.json").exists()


def test_shipped_recipes_parse(monkeypatch):
    import glob

    monkeypatch.setenv("KANGAROO_DATA", "/data")  # the 8B recipes read their folders from the environment
    monkeypatch.setenv("KANGAROO_INIT", "/models/kangaroo-8b-init")

    files = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "**", "*.yaml"), recursive=True))
    files = [f for f in files if os.path.basename(f) not in ("curriculum.yaml", "data.yaml")]  # lists, not recipes
    assert len(files) >= 10
    for f in files:
        r = Recipe.load(f)
        assert r.max_steps >= 1 and r.data


def test_pack_bench_samples_account_for_every_token():
    from kangaroo.train.bench import make_samples
    from kangaroo.train.packing import pack_row, pad_batch

    cfg = tiny_config()
    s = make_samples(cfg, 6, size=56)
    row = pack_row(s)
    pad = pad_batch(s)
    n = sum(len(x) for x in s)
    assert row["input_ids"].shape[1] == n and int((pad["segment_ids"] > 0).sum()) == n
    vis = row["input_ids"] == cfg.video_token_id
    assert int(vis.sum()) == sum(cfg.num_visual_tokens(x.pixels.shape[0], 56, 56) for x in s)
    assert len(row["videos"]) == len(s)  # every sample's video, in order


def test_prefetching_workers_give_the_same_losses(tmp_path, tiny_dir, synth_dir):
    """Samples encoded ahead by a worker process are the samples the stream defines: same losses."""
    ref = Trainer(recipe(tiny_dir, synth_dir, max_steps=3, data_workers=0), str(tmp_path / "a"), progress=False)
    ref.train()
    pre = Trainer(recipe(tiny_dir, synth_dir, max_steps=3, data_workers=1), str(tmp_path / "b"), progress=False)
    assert pre.loader.pool is not None
    pre.train()
    assert pre.loader.pool is None  # closed at the end
    assert _losses(tmp_path / "b") == pytest.approx(_losses(tmp_path / "a"), rel=1e-6, abs=1e-7)


def test_ablation_variants_at_equal_compute(tiny_dir, synth_dir):
    from kangaroo.train.ablate import ABLATIONS

    stages = [recipe(tiny_dir, synth_dir, name="a", max_steps=4, max_seq_len=256, train=["projector"]),
              recipe(tiny_dir, synth_dir, name="b", max_steps=2, max_seq_len=512, train=["projector", "lora"],
                     lora={"r": 4, "alpha": 8})]
    v = ABLATIONS.get("curriculum")(stages)
    [final] = v["final_only"]
    tokens = lambda r: r.max_steps * r.rows_per_step * r.max_seq_len  # noqa: E731
    assert tokens(final) == sum(tokens(r) for r in stages)  # the same token budget
    assert final.init == tiny_dir and set(final.train) == {"projector", "lora"} and final.lora.r == 4
    # a leading vision pre-training stage (objective: tags) is shared and outside the token budget
    tags = recipe(tiny_dir, synth_dir, name="tags", objective="tags", train=["vision"])
    v2 = ABLATIONS.get("curriculum")([tags] + stages)
    assert v2["curriculum"][0] is tags and v2["final_only"][0] is tags and len(v2["final_only"]) == 2
    assert v2["final_only"][1].init == "previous" and tokens(v2["final_only"][1]) == tokens(final)
    with pytest.raises(ValueError, match="init"):
        ABLATIONS.get("tpe")(stages)
    smol = [dataclasses.replace(r, init="smol") for r in stages]
    assert {k: [r.tpe for r in rs] for k, rs in ABLATIONS.get("tpe")(smol).items()} == {
        "sincos": ["sincos"] * 2, "index": ["index"] * 2, "none": ["none"] * 2}
    # the tpe variants share the tags stage and fork at the first language-model stage
    tags0 = dataclasses.replace(tags, init="smol")
    tv = ABLATIONS.get("tpe")([tags0] + [dataclasses.replace(r, init="previous") for r in stages])
    assert all(rs[0] is tags0 and rs[0].tpe is None and rs[1].tpe == k for k, rs in tv.items())


def test_time_labels_ablation_and_stage(tmp_path, tiny_dir, synth_dir):
    """The time_labels ablation forks at the final stage; a stage with time_labels: true trains and
    saves a model whose blocks carry the labels."""
    from kangaroo.train.ablate import ABLATIONS
    from kangaroo.train.trainer import run_curriculum

    a = recipe(tiny_dir, synth_dir, name="a", max_steps=1, train=["projector"], time_labels=True)
    b = recipe(tiny_dir, synth_dir, name="b", init="previous", max_steps=1, train=["projector"])
    v = ABLATIONS.get("time_labels")([a, b])
    assert v["labels"][0] == v["tpe_only"][0] and v["labels"][0].time_labels is False
    assert (v["labels"][1].time_labels, v["tpe_only"][1].time_labels) == (True, False)
    run_curriculum(v["labels"], str(tmp_path), progress=False)
    first = json.loads((tmp_path / "1_a/model/config.json").read_text())
    last = json.loads((tmp_path / "2_b/model/config.json").read_text())
    assert first.get("time_labels") is None and len(last["time_labels"]) == 12


def test_scale_steps_keeps_tags_stages(tiny_dir, synth_dir):
    from kangaroo.train.ablate import scale_steps

    tags = recipe(tiny_dir, synth_dir, name="tags", objective="tags", train=["vision"], max_steps=100)
    lm = recipe(tiny_dir, synth_dir, name="lm", max_steps=90, warmup_steps=20, save_every=30)
    a, b = scale_steps([tags, lm], 1 / 3)
    assert a is tags and (b.max_steps, b.warmup_steps, b.save_every) == (30, 7, 10)
    assert scale_steps([lm], 0.001)[0].max_steps == 1
    with pytest.raises(ValueError):
        scale_steps([lm], 0)
    with pytest.raises(ValueError, match="tpe"):
        recipe(tiny_dir, synth_dir, tpe="rotary")


def test_ablation_variants_train_shared_stages_once(tmp_path, tiny_dir, synth_dir):
    """A variant copies the leading stages it shares with one trained before it, and does not retrain them."""
    from kangaroo.train.ablate import _shared
    from kangaroo.train.trainer import run_curriculum

    first = recipe(tiny_dir, synth_dir, name="a", max_steps=1, train=["projector"])
    v1 = [first, recipe(tiny_dir, synth_dir, name="b", init="previous", max_steps=1, train=["projector"])]
    v2 = [first, recipe(tiny_dir, synth_dir, name="b", init="previous", max_steps=1, train=["patchify"], tpe="index")]
    run_curriculum(v1, str(tmp_path / "v1"), progress=False)
    assert _shared([(str(tmp_path / "nowhere"), v1)], str(tmp_path / "v0"), v2) == 0  # unfinished: not shared
    n = _shared([(str(tmp_path / "v1"), v1)], str(tmp_path / "v2"), v2)
    assert n == 1 and not (tmp_path / "v2" / "1_a" / "checkpoints").exists()
    res = run_curriculum(v2, str(tmp_path / "v2"), progress=False, reuse=n)
    assert res[0] == {"stage": "a", "skipped": "already finished"} and res[1].get("skipped") != "already finished"
    assert (tmp_path / "v2/1_a/metrics.jsonl").read_text() == (tmp_path / "v1/1_a/metrics.jsonl").read_text()
    assert json.loads((tmp_path / "v2/2_b/model/config.json").read_text())["tpe"] == "index"  # switched at the fork
    assert json.loads((tmp_path / "v1/2_b/model/config.json").read_text())["tpe"] == "sincos"


def test_ablation_runs_end_to_end(tmp_path, tiny_dir, synth_dir):
    from kangaroo.train.ablate import run_ablation

    stages = [recipe(tiny_dir, synth_dir, name="a", max_steps=1, train=["projector"]),
              recipe(tiny_dir, synth_dir, name="b", max_steps=1, train=["projector"])]
    rep = run_ablation("curriculum", stages, str(tmp_path), str(synth_dir), frames=4, limit=4, progress=False)
    assert set(rep["variants"]) == {"curriculum", "final_only"}
    for v in rep["variants"].values():
        assert 0.0 <= v["accuracy"] <= 1.0 and v["train_tokens"] > 0
    assert (tmp_path / "ablation.png").exists() and (tmp_path / "results.md").exists()
    v = rep["variants"]["curriculum"]
    assert sum(v["per_task_n"].values()) == v["n"] == 4 and "±" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize("train", [["projector"], ["projector", "llm"]])
def test_stage_from_kangaroo_smol_keeps_or_merges_its_lora(tmp_path, synth_dir, train):
    """kangaroo-smol carries LoRA adapters: a stage that does not train them keeps them (frozen) in
    its compact export; a stage that trains the whole LLM merges them first and saves it whole."""
    from kangaroo.model.weights import META, load_model

    r = recipe("kangaroo-smol", synth_dir, name="from_smol", image_size=56, max_frames=2, max_steps=1,
               rows_per_step=1, max_seq_len=300, train=train, save_every=1)
    t = Trainer(r, str(tmp_path), progress=False)
    assert hasattr(t.model.language_model, "peft_config") == ("llm" not in train)
    t.train()
    out = tmp_path / "model"
    assert (out / META).exists() == ("llm" not in train)  # compact (our weights + LoRA) or whole
    m, _ = load_model(str(out))
    assert m is not None


def test_bench_pack_attention_case_agrees():
    """The pack benchmark's attention timing compares two paths that compute the same thing."""
    from kangaroo.train.bench import attention_case

    r = attention_case(segments=(20, 30, 14), repeats=1)
    assert r["row_tokens"] == 64 and r["fp32"]["max_abs_diff"] < 1e-5
    assert r["fp32"]["dense_mask_ms"] > 0 and r["bf16"]["per_sample_ms"] > 0


def test_bench_pack_row_lengths_place_every_sample():
    """The row-length sweep packs the same samples into fewer, longer rows; the random-LLM model has
    kangaroo-smol's shape and needs no LLM package."""
    from kangaroo.train.bench import _smol_model, row_length_case

    model = KangarooForConditionalGeneration(tiny_config(vocab=1024)).train()
    out = row_length_case(model, (256, 2048), torch.device("cpu"), n=5, frames=(4, 8), size=56)
    assert [x["max_len"] for x in out] == [256, 2048]
    assert out[0]["rows"] > out[1]["rows"] == 1 and all(x["real_tok_s"] > 0 for x in out)
    smol = _smol_model(random_llm=True)
    assert smol.config.text_config.hidden_size == 576 and smol.config.text_config.num_hidden_layers == 30


def test_ci95():
    from kangaroo.train.ablate import ci95

    assert ci95(0.5, 100) == pytest.approx(0.098, abs=1e-3) and ci95(1.0, 10) == 0.0


def test_old_format_checkpoints_resume_export_or_are_refused(tmp_path, tiny_dir, synth_dir):
    """A checkpoint of the format before sharded ones (trainable.safetensors + optim.pt) exports; it
    cannot resume (its data position is a per-rank sample cursor, not a place in the global row
    order), and resuming is refused saying why, also when another number of processes wrote it."""
    from kangaroo.train import export_checkpoint
    from kangaroo.train.loop import write_checkpoint

    r = recipe(tiny_dir, synth_dir, max_steps=4, train=["projector", "patchify"])
    t = Trainer(r, str(tmp_path / "old"), progress=False)
    state = {k: (v.detach() + 1).clone() for k, v in t.model.named_parameters() if v.requires_grad}
    blob = {"optimizer": t.opt.state_dict(), "scheduler": t.sched.state_dict(), "torch_rng": torch.get_rng_state()}
    write_checkpoint(str(tmp_path / "old"), 2, state, blob, {"step": 2, "cursor": 5, "world": 1})
    again = Trainer(r, str(tmp_path / "old"), progress=False)
    with pytest.raises(ValueError, match="no data position in the global row order"):
        again.load_checkpoint()
    assert export_checkpoint(str(tmp_path / "old"), str(tmp_path / "exp"))["step"] == 2
    write_checkpoint(str(tmp_path / "old"), 3, state, blob, {"step": 3, "cursor": 7, "world": 2})
    with pytest.raises(ValueError, match="old, unsharded format\\) was written with 2 processes"):
        Trainer(r, str(tmp_path / "old"), progress=False).load_checkpoint()


def test_a_stage_whose_longest_videos_cannot_fit_a_row_says_so():
    from kangaroo.train.data import frames_fit_warning

    config = tiny_config()
    r = Recipe(image_size=56, min_frames=2, max_frames=64, seconds_per_frame=1.0)
    n = config.num_visual_tokens(64, 56, 56, [float(i) for i in range(64)])
    assert frames_fit_warning(dataclasses.replace(r, max_seq_len=n + 64), config, text_tokens=64) is None
    w = frames_fit_warning(dataclasses.replace(r, max_seq_len=n + 63), config, text_tokens=64)
    assert w is not None and "too_long" in w and f"max_seq_len to {n + 64}" in w
    # a source's fixed frame count counts too, beyond the stage's max_frames
    wide = dataclasses.replace(r, max_seq_len=n + 64, max_frames=8,
                               data=[dict(path="x.json", format="mcqa", uniform_frames=[80], uniform_share=0.1)])
    assert "at 80 frames" in frames_fit_warning(Recipe.from_dict(wide.to_dict()), config, text_tokens=64)
