"""Time labels (ours): each temporal slot preceded by its start time as text."""

import pytest
import torch

from kangaroo.model import KangarooConfig, KangarooForConditionalGeneration, tiny_config
from kangaroo.model.config import TIME_LABEL_CHARS, time_label


def test_label_text():
    assert time_label(0) == "0.0s" and time_label(12.46) == "12.5s" and time_label(-0.01) == "0.0s"


def test_block_layout_and_length(tiny):
    ids = list(range(40, 40 + len(TIME_LABEL_CHARS)))
    tiny.config.time_labels = ids
    px, ts = torch.randn(5, 3, 56, 56), torch.tensor([0.0, 1.25, 2.5, 10.0, 12.5])
    slots = tiny.encode_video(px, ts)  # [3, 4, d]: slots start at 0.0, 2.5, 12.5 s
    rows = tiny.visual_rows([(px, ts)])
    assert rows.shape[0] == tiny.config.num_visual_tokens(5, 56, 56, ts.tolist()) == 3 * 4 + 3 + 2 + 4 + 4 + 5
    emb = tiny.get_input_embeddings()
    want = [emb(torch.tensor(tiny.config.label_ids(s))) for s in ("0.0s", "2.5s", "12.5s")]
    assert torch.allclose(rows[1:5], want[0]) and torch.allclose(rows[5:9], slots[0])
    assert torch.allclose(rows[9], tiny.markers[1])  # <eof>
    assert torch.allclose(rows[10:14], want[1]) and torch.allclose(rows[14:18], slots[1])
    assert torch.allclose(rows[19:24], want[2]) and torch.allclose(rows[-2], tiny.markers[2])  # ... <eov>
    with pytest.raises(ValueError, match="timestamp"):
        tiny.config.num_visual_tokens(5, 56, 56)


def test_off_is_the_paper_block(tiny):
    px, ts = torch.randn(4, 3, 56, 56), torch.arange(4).float()
    before = tiny.visual_rows([(px, ts)])
    tiny.config.time_labels = list(range(12))
    assert tiny.visual_rows([(px, ts)]).shape[0] > before.shape[0]
    tiny.set_time_labels(None)
    assert torch.equal(tiny.visual_rows([(px, ts)]), before)


def test_real_tokenizer_ids_and_round_trip(smol_tokenizer, tmp_path):
    m = KangarooForConditionalGeneration(tiny_config(vocab=len(smol_tokenizer)))
    m.set_time_labels(smol_tokenizer)
    ids = m.config.label_ids("12.5s")
    assert smol_tokenizer.decode(ids) == "12.5s" and ids == smol_tokenizer.encode("12.5s", add_special_tokens=False)
    m.config.save_pretrained(tmp_path)
    assert KangarooConfig.from_pretrained(tmp_path).time_labels == m.config.time_labels
    with pytest.raises(ValueError, match="time_labels"):
        tiny_config(time_labels=[1, 2])


def test_packed_equals_separate_with_labels(tiny):
    """The packing invariant holds with labelled blocks too (rows counted from the timestamps)."""
    tiny.config.time_labels = list(range(40, 52))
    g = torch.Generator().manual_seed(0)
    samples = []
    for t in (2, 5):
        px, ts = torch.randn(t, 3, 56, 56, generator=g), torch.linspace(0, 11, t)
        v = tiny.config.num_visual_tokens(t, 56, 56, ts.tolist())
        ids = torch.cat([torch.randint(3, 256, (3,), generator=g), torch.full((v,), tiny.config.video_token_id),
                         torch.randint(3, 256, (6,), generator=g)])
        samples.append((ids, (px, ts), v))
    lab = lambda ids: torch.where(torch.arange(len(ids)) >= len(ids) - 5, ids, -100)[None]  # noqa: E731
    sep = [tiny(ids[None], videos=[vid], labels=lab(ids))["loss_sum"] for ids, vid, _ in samples]
    a, b = samples
    ids = torch.cat([a[0], b[0]])
    seg = torch.tensor([1] * len(a[0]) + [2] * len(b[0]))
    labels = torch.cat([lab(a[0]), lab(b[0])], dim=1)
    packed = tiny(ids[None], videos=[a[1], b[1]], labels=labels, segment_ids=seg[None])["loss_sum"]
    assert torch.allclose(packed, sep[0] + sep[1], atol=1e-3)
