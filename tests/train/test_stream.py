"""Training data at scale: lazy records, one global row order, skipped samples, the over-long rule,
multi-media records (train/records.py, train/stream.py, train/data.py)."""

import json
import os

import numpy as np
import pytest
import torch

from kangaroo.model import tiny_config
from kangaroo.model.tokens import ensure_media_tokens
from kangaroo.prompts import ChatRenderer
from kangaroo.train import Recipe
from kangaroo.train.data import IGNORE, Encoded, Mixture, encode_sample, to_samples
from kangaroo.train.loader import SampleLoader
from kangaroo.train.recipe import DataSource
from kangaroo.train.records import BadRecord, Records, line_offsets
from kangaroo.train.stream import FAILURES, MIN_TRIED, RowStream, TooManyFailures, fit


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KANGAROO_RECORDS_CACHE", str(tmp_path / "cache" / "records"))


@pytest.fixture(scope="module")
def cfg(smol_tokenizer):
    c = tiny_config(vocab=len(smol_tokenizer))
    ensure_media_tokens(smol_tokenizer)
    return c


def _recipe(synth_dir, **kw):
    base = dict(name="s", image_size=56, min_frames=2, max_frames=4, seconds_per_frame=4.0, max_seq_len=300,
                data=[dict(path=str(synth_dir / "mcqa.json"), format="mcqa", weight=2.0),
                      dict(path=str(synth_dir / "captions.json"), format="captions", weight=1.0),
                      dict(path=str(synth_dir / "mcqa.json"), format="mcqa_fact", weight=1.0)])
    base.update(kw)
    return Recipe.from_dict(base)


def _stream(recipe, tok, cfg, rank=0, world=1):
    mix = Mixture(recipe)
    loader = SampleLoader(recipe, mix, tok, cfg, workers=0)
    return RowStream(loader, recipe, {cfg.video_token_id, cfg.image_token_id}, rank=rank, world=world)


def _steps(streams, n):
    """{global row index: the row's token ids} for n steps, over all the streams (ranks) given."""
    rows = {}
    for _ in range(n):
        for s in streams:
            for samples, j in s.next_rows():
                assert j not in rows
                rows[j] = [list(x.ids) for x in samples]
    return rows


def test_rows_do_not_depend_on_world_size_and_resume_anywhere(synth_dir, smol_tokenizer, cfg):
    r = _recipe(synth_dir, global_rows=4)
    one = _steps([_stream(r, smol_tokenizer, cfg)], 3)
    two = _steps([_stream(r, smol_tokenizer, cfg, rank=k, world=2) for k in range(2)], 3)
    assert sorted(one) == list(range(12)) and one == two
    assert all(sum(len(x) for x in row) <= r.max_seq_len for row in one.values())
    assert len({tuple(map(tuple, row)) for row in one.values()}) == 12  # rows differ
    # the data position after step 1 on one rank resumes steps 2-3 on two ranks (and back)
    a = _stream(r, smol_tokenizer, cfg)
    _steps([a], 1)
    state = json.loads(json.dumps(a.state_dict()))  # JSON-able
    assert state["row"] == 4
    b = [_stream(r, smol_tokenizer, cfg, rank=k, world=2) for k in range(2)]
    for s in b:
        s.load_state_dict(state)
    assert _steps(b, 2) == {j: one[j] for j in range(4, 12)}
    with pytest.raises(ValueError, match="dealt evenly"):
        _stream(_recipe(synth_dir, global_rows=3), smol_tokenizer, cfg, world=2)
    # rows_per_step without global_rows keeps its meaning: rows per process
    assert _stream(_recipe(synth_dir, rows_per_step=3), smol_tokenizer, cfg, world=2).global_rows == 6


def test_over_long_rule():
    vid = 7
    # media early, answers before the cut: truncated
    e = Encoded([1, vid, vid, 2, 3, 4, 5, 6], [IGNORE] * 3 + [3, 4, 5, 6, 6], None, None)
    got, why = fit(e, 6, {vid})
    assert why == "truncated" and got.ids == e.ids[:6] and got.labels == e.labels[:6]
    # a media run crosses the cut: dropped
    e = Encoded([1, 2, 3, 4, 5, vid, vid, 9], [IGNORE] * 7 + [9], None, None)
    assert fit(e, 6, {vid}) == (None, "too_long")
    # no answer token left before the cut: dropped
    e = Encoded([1, 2, 3, 4, 5, 6, 7, 9], [IGNORE] * 7 + [9], None, None)
    assert fit(e, 6, {vid}) == (None, "too_long")
    e = Encoded([1, 2], [IGNORE, 2], None, None)
    assert fit(e, 6, {vid}) == (e, None)


def test_over_long_samples_counted_and_rows_stay_in_bounds(synth_dir, smol_tokenizer, cfg):
    # samples here are 90-106 tokens; a caption's answer starts early (cut), a letter's is at the end (dropped)
    r = _recipe(synth_dir, max_seq_len=95, global_rows=2)
    s = _stream(r, smol_tokenizer, cfg)
    rows = _steps([s], 4)
    assert all(row and sum(len(x) for x in row) <= 95 for row in rows.values())
    t = s.totals()
    assert t["skipped"].get("too_long", 0) > 0 and t["skipped"].get("truncated", 0) > 0


def _fault_set(tmp_path, synth_dir):
    """A captions data set with every kind of bad video of the fault corpus, a missing image, a
    broken JSON line and a record without its field, next to good synthetic videos."""
    from tests.video.media import bad_inputs

    bad = bad_inputs(tmp_path / "bad")
    good = json.load(open(synth_dir / "captions.json"))
    lines = [json.dumps({"video": p, "caption": f"bad {k}"}) for k, p in bad.items()]
    lines += [json.dumps({"video": str(synth_dir / g["video"]), "caption": g["caption"]}) for g in good]
    lines += ["{not json", json.dumps({"caption": "no video"})]
    path = tmp_path / "faulty.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, bad


def test_fault_corpus_is_skipped_and_counted(tmp_path, synth_dir, smol_tokenizer, cfg):
    path, bad = _fault_set(tmp_path, synth_dir)
    mixed = [dict(path=str(path), format="captions", weight=1.0),
             dict(path=str(synth_dir / "captions.json"), format="captions", weight=3.0)]
    r = _recipe(synth_dir, data=mixed, global_rows=2, max_failed_fraction=0.5)
    s = _stream(r, smol_tokenizer, cfg)
    rows = _steps([s], 12)
    assert all(row for row in rows.values())  # every row has good samples
    t = s.totals()
    sk = t["skipped"]
    assert len(set(sk) & set(FAILURES)) >= 4 and "not_a_video" in sk and "error" not in sk, sk  # by reason
    assert sum(sk.values()) > 5
    # a data set that fails more than the fraction stops with a message that says why
    r = _recipe(synth_dir, data=[dict(path=str(path), format="captions")], global_rows=2)
    s = _stream(r, smol_tokenizer, cfg)
    with pytest.raises(TooManyFailures, match=r"samples failed .* max_failed_fraction 0.01"):
        _steps([s], 50)
    assert s.local.tried >= MIN_TRIED


def test_trainer_logs_skips_and_stops_on_too_many(tmp_path, synth_dir, smol_tokenizer):
    from kangaroo.model import KangarooForConditionalGeneration
    from kangaroo.train import Trainer

    path, _ = _fault_set(tmp_path, synth_dir)
    d = tmp_path / "tiny"
    torch.manual_seed(0)
    c = tiny_config(vocab=len(smol_tokenizer))
    c.text_config.eos_token_id = smol_tokenizer.eos_token_id
    KangarooForConditionalGeneration(c).save_pretrained(d)
    smol_tokenizer.save_pretrained(d)
    mixed = [dict(path=str(path), format="captions", weight=1.0),
             dict(path=str(synth_dir / "captions.json"), format="captions", weight=3.0)]
    r = _recipe(synth_dir, init=str(d), data=mixed, max_steps=3, warmup_steps=1, train=["projector"],
                max_failed_fraction=0.5, save_every=2)
    t = Trainer(r, str(tmp_path / "run"), progress=False)
    last = t.train()
    rows = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert len(rows) == 3 and all("skipped" in x and "samples_tried" in x for x in rows)
    assert sum(rows[-1]["skipped"].values()) > 0 and last["skipped"] == rows[-1]["skipped"]
    # resume from step 2: the counts continue from the checkpoint's, the rows from its position
    again = Trainer(r, str(tmp_path / "run"), progress=False)
    assert again.load_checkpoint()
    assert again.stream.row == 3 and again.stream.base.tried == rows[2]["samples_tried"]  # the last step's
    with pytest.raises(TooManyFailures):
        Trainer(Recipe.from_dict({**r.to_dict(), "data": [mixed[0]], "max_failed_fraction": 0.01, "max_steps": 60}),
                str(tmp_path / "stop"), progress=False).train()


def test_records_are_indexed_lazily(tmp_path):
    recs = [{"i": i, "family": "ab"[i % 2], "text": "x" * (i % 7)} for i in range(50)]
    lines = [json.dumps(x) for x in recs]
    lines.insert(10, "")  # blank lines are not records
    lines.insert(20, "   ")
    p = tmp_path / "r.jsonl"
    p.write_text("\n".join(lines))  # no newline at the end
    assert len(line_offsets(str(p))) == 50
    r = Records(str(p))
    assert len(r) == 50 and [r[i] for i in (0, 17, 49)] == [recs[0], recs[17], recs[49]]
    assert isinstance(r.offsets, np.memmap)  # shared pages, not a copy per process
    assert list(Records(str(p), families=["b"])) == [x for x in recs if x["family"] == "b"]
    cached = os.listdir(tmp_path / "cache" / "records")
    assert len(cached) == 2 and len(Records(str(p))) == 50 and len(os.listdir(tmp_path / "cache" / "records")) == 2
    q = tmp_path / "plain.jsonl"
    q.write_text("".join(json.dumps(x) + "\n" for x in recs))  # the fast path
    assert list(Records(str(q))) == recs
    j = tmp_path / "list.json"
    j.write_text(json.dumps(recs))
    assert list(Records(str(j))) == recs
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": \n[1, 2]\n')
    b = Records(str(bad))
    assert b[0] == {"a": 1}
    for i, msg in ((1, "not valid JSON"), (2, "a JSON object")):
        with pytest.raises(BadRecord, match=msg):
            b[i]


def test_several_images_and_videos_in_one_conversation(tmp_path, synth_dir, smol_tokenizer, cfg):
    from PIL import Image

    from kangaroo.train.packing import pack_row

    imgs = []
    for k in range(2):
        imgs.append(str(tmp_path / f"im{k}.png"))
        Image.fromarray(np.full((40, 60, 3), 80 * k, np.uint8)).save(imgs[-1])
    video = str(synth_dir / json.load(open(synth_dir / "captions.json"))[0]["video"])
    rec = {"image": imgs, "video": [video], "conversations": [
        {"from": "human", "value": "Here is <image> and then <video>. Which matches?"},
        {"from": "gpt", "value": "The video."},
        {"from": "human", "value": "And this one? <image>"},
        {"from": "gpt", "value": "No."}]}
    p = tmp_path / "multi.jsonl"
    p.write_text(json.dumps(rec) + "\n")
    (s,) = to_samples(DataSource(str(p), "llava"))
    assert s.all_media() == [(imgs[0], True), (video, False), (imgs[1], True)]
    r = _recipe(synth_dir)
    builder = ChatRenderer(smol_tokenizer, ensure_media_tokens(smol_tokenizer))
    enc = encode_sample(s, r, builder, cfg)
    media = enc.media()
    assert [m[0].shape[0] for m in media] == [1, media[1][0].shape[0], 1] and media[1][0].shape[0] >= 2
    ids = enc.ids
    img, vid = builder.media_ids["image"], builder.media_ids["video"]
    runs = []  # the media runs in order: (kind, length)
    for i, t in enumerate(ids):
        if t in (img, vid) and (i == 0 or ids[i - 1] != t):
            runs.append([t, 0])
        if t in (img, vid):
            runs[-1][1] += 1
    lengths = [cfg.num_visual_tokens(m[0].shape[0], m[0].shape[2], m[0].shape[3], m[1].tolist()) for m in media]
    assert runs == [[img, lengths[0]], [vid, lengths[1]], [img, lengths[2]]]
    text = smol_tokenizer.decode([t for t in ids if t not in (img, vid)])
    assert text.index("Here is") < text.index("and then") < text.index("Which matches") < text.index("And this one?")
    labelled = smol_tokenizer.decode([t for t, lab in zip(ids, enc.labels) if lab != IGNORE])
    assert "The video." in labelled and "No." in labelled and "Here is" not in labelled
    assert len(pack_row([enc])["videos"]) == 3
    with pytest.raises(BadRecord, match="no tag"):
        p.write_text(json.dumps({**rec, "image": imgs + imgs}) + "\n")
        to_samples(DataSource(str(p), "llava"))
