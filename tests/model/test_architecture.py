import pytest
import torch
from transformers import LlamaForCausalLM

from kangaroo.model import KangarooConfig, KangarooForConditionalGeneration, count_parameters, kangaroo_8b_config, tiny_config
from kangaroo.model.patchify import SpatialTemporalPatchify
from kangaroo.model.temporal import TemporalEmbedding
from kangaroo.model.vision import EVAVisionTower


def test_default_is_8b_on_meta():
    with torch.device("meta"):
        m = KangarooForConditionalGeneration(kangaroo_8b_config())
    n = count_parameters(m)
    assert 8.30e9 < n["total"] < 8.40e9
    assert 0.29e9 < n["vision_tower"] < 0.32e9  # EVA02-CLIP-L
    cfg = m.config
    assert cfg.text_config.hidden_size == 4096 and cfg.text_config.vocab_size == 128256
    assert cfg.text_config.rope_theta == 500000.0 if hasattr(cfg.text_config, "rope_theta") else True
    assert cfg.vision.grid == 32 and cfg.patchify_kernel == [2, 2, 2]
    # 160 frames at 448 px: 80 slots x 256 tokens + markers ~ 20.6k tokens (~22k with text)
    assert cfg.num_visual_tokens(160, 448, 448) == 80 * 256 + 80 + 2


def test_config_round_trip(tmp_path):
    cfg = tiny_config(tpe="learned")
    cfg.save_pretrained(tmp_path)
    back = KangarooConfig.from_pretrained(tmp_path)
    assert back.tpe == "learned" and back.vision == cfg.vision and back.text_config.hidden_size == 64
    from transformers import AutoConfig

    import kangaroo.model  # noqa: F401  (registers the Auto classes)

    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "KangarooConfig"


@pytest.mark.parametrize("bad", [dict(tpe="rotary"), dict(projector_type="linear"), dict(patchify_kernel=[2, 2]),
                                 dict(vision_config={"widht": 3})])
def test_bad_config(bad):
    with pytest.raises(Exception):
        tiny_config(**bad)


def test_vision_interpolation_sizes():
    cfg = tiny_config(image_size=112).vision
    torch.manual_seed(0)
    tower = EVAVisionTower(cfg).eval()
    tower.init_weights()
    for h, w in [(112, 112), (56, 56), (224, 224), (56, 112), (84, 140)]:
        out = tower(torch.randn(2, 3, h, w))
        assert out.shape == (2, h // 14, w // 14, cfg.width)
        assert torch.isfinite(out).all()
    # at the native size the position embedding is used as is
    assert torch.equal(tower.pos_embed_for(8, 8), tower.pos_embed)


def test_rope_interpolation_spans_pretrain_grid():
    from kangaroo.model.vision import rope_2d

    c16, _ = rope_2d(16, 16, 64, 16, 10000.0)
    c32, _ = rope_2d(32, 32, 64, 16, 10000.0)
    # position (2k, 2l) on the 32-grid equals (k, l) on the 16-grid: same span, finer steps
    assert torch.allclose(c32.view(32, 32, 64)[::2, ::2], c16.view(16, 16, 64), atol=1e-5)


def test_patchify_counts_every_frame_count():
    p = SpatialTemporalPatchify(8, (2, 2, 2))
    cfg = tiny_config()
    for t in range(1, 161):
        y = p(torch.randn(t, 4, 4, 8))
        assert y.shape == ((t + 1) // 2, 2, 2, 8)
        assert cfg.num_visual_tokens(t, 56, 56) == y.shape[0] * 4 + y.shape[0] + 2
    assert p(torch.randn(3, 5, 7, 8)).shape == (2, 3, 4, 8)  # odd spatial grid padded


def test_odd_frame_count_pads_with_last_frame():
    p = SpatialTemporalPatchify(4, (2, 1, 1))
    x = torch.randn(3, 1, 1, 4)
    y = p(x)
    assert torch.allclose(y[1], x[2])  # mean of (frame 2, its copy)


def test_full_video_block_lengths(tiny):
    for t in (1, 2, 5, 16):
        rows = tiny.visual_rows([(torch.randn(t, 3, 56, 56), torch.arange(t).float())])
        assert rows.shape[0] == tiny.config.num_visual_tokens(t, 56, 56)
    rows = tiny.visual_rows([(torch.randn(3, 3, 56, 84), torch.arange(3).float())])  # non-square
    assert rows.shape[0] == tiny.config.num_visual_tokens(3, 56, 84)


def test_tpe_depends_on_timestamps_not_index():
    e = TemporalEmbedding("sincos", 16)
    a = e(torch.tensor([0.0, 5.0, 9.0]))
    b = e(torch.tensor([5.0, 7.0]))
    assert torch.allclose(a[1], b[0])  # same second, different index: same embedding
    assert not torch.allclose(e(torch.tensor([1.0]))[0], e(torch.tensor([2.0]))[0])
    i = TemporalEmbedding("index", 16)
    assert torch.allclose(i(torch.tensor([0.0, 5.0]))[1], i(torch.tensor([1.0, 99.0]))[1])
    assert TemporalEmbedding("none", 16)(torch.tensor([1.0])) is None
    lr = TemporalEmbedding("learned", 16, max_seconds=10)
    mid = lr(torch.tensor([2.5]))[0]
    assert torch.allclose(mid, (lr.table.weight[2] + lr.table.weight[3]) / 2)


def test_switch_tpe_keeps_gain_and_changes_encoding(tiny):
    px, ts = torch.randn(4, 3, 56, 56), torch.tensor([0.0, 4.0, 9.0, 30.0])
    with torch.no_grad():
        tiny.temporal_embed.gain.mul_(2.0)
    before = tiny.encode_video(px, ts)
    tiny.switch_tpe("index")
    assert tiny.config.tpe == "index" and torch.allclose(tiny.temporal_embed.gain, torch.full((tiny.temporal_embed.width,), 2.0))
    assert not torch.allclose(tiny.encode_video(px, ts), before)  # frame indices, not seconds
    tiny.switch_tpe("none")
    plain = tiny.encode_video(px, ts)
    assert torch.allclose(plain, tiny.encode_video(px, ts * 7))  # no time information left
    with pytest.raises(ValueError, match="learned"):
        tiny.switch_tpe("learned")


def test_video_embedding_changes_with_timestamps(tiny):
    px = torch.randn(4, 3, 56, 56)
    a = tiny.encode_video(px, torch.tensor([0.0, 1.0, 2.0, 3.0]))
    b = tiny.encode_video(px, torch.tensor([0.0, 10.0, 20.0, 30.0]))
    assert not torch.allclose(a, b)


def test_chunked_encoding_matches_unchunked(tiny):
    px, ts = torch.randn(10, 3, 56, 56), torch.arange(10).float()
    full = tiny.encode_video(px, ts)
    tiny.config.frame_chunk = 2
    assert torch.allclose(tiny.encode_video(px, ts), full, atol=1e-5)


def test_llm_path_equals_llama(tiny):
    ids = torch.randint(0, 256, (2, 12))
    ours = tiny(ids)["logits"]
    ref = LlamaForCausalLM.forward(tiny.language_model, inputs_embeds=tiny.get_input_embeddings()(ids)).logits
    assert torch.allclose(ours, ref, atol=1e-5)


def _sample(tiny, t, n_text, seed):
    """(ids, labels, video) with ``video`` = (pixels, timestamps) or None."""
    g = torch.Generator().manual_seed(seed)
    video = (torch.randn(t, 3, 56, 56, generator=g), torch.arange(t).float()) if t else None
    v = tiny.config.num_visual_tokens(t, 56, 56) if t else 0
    ids = torch.cat([torch.randint(3, 256, (3,), generator=g), torch.full((v,), tiny.config.video_token_id),
                     torch.randint(3, 256, (n_text,), generator=g)])
    labels = ids.clone()
    labels[: len(ids) - n_text + 2] = -100
    return ids, labels, video


@pytest.mark.parametrize("impl,checkpointing", [("kangaroo_packed_sdpa", False), ("kangaroo_packed_sdpa", True),
                                                ("sdpa", False), ("eager", False)])
def test_packed_forward_equals_separate(tiny, impl, checkpointing):
    """Loss and gradients of a packed row equal the sum over the samples run alone: with the
    per-sample (variable-length) attention path, and with the dense block-diagonal mask."""
    from kangaroo.model.attention import NAME

    cfg = tiny.language_model.config
    assert cfg._attn_implementation == NAME  # the default
    cfg._attn_implementation = impl
    if checkpointing:
        tiny.gradient_checkpointing_enable()
    try:
        _packed_equals_separate(tiny)
    finally:
        cfg._attn_implementation = NAME
        if checkpointing:
            tiny.gradient_checkpointing_disable()


def test_packed_attention_pads_and_rows():
    """Two rows with padding in the middle and at the end: spans and zeros where no span is."""
    from kangaroo.model.attention import packed_sdpa_attention, segments_of

    seg = torch.tensor([[1, 1, 2, 2, 2, 0], [0, 3, 3, 3, 4, 0]])
    spans = segments_of(seg)
    assert spans == [(0, 0, 2), (0, 2, 5), (1, 1, 4), (1, 4, 5)]
    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    mod = torch.nn.Module()
    out, _ = packed_sdpa_attention(mod, q, k, v, None, kangaroo_segments=spans)
    assert out.shape == (2, 6, 4, 8)
    assert out[0, 5].abs().sum() == 0 and out[1, 0].abs().sum() == 0 and out[1, 5].abs().sum() == 0
    kk, vv = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    ref = torch.nn.functional.scaled_dot_product_attention(q[1:, :, 1:4], kk[1:, :, 1:4], vv[1:, :, 1:4], is_causal=True)
    assert torch.allclose(out[1, 1:4], ref[0].transpose(0, 1), atol=1e-6)


@pytest.mark.parametrize("lens", [(100, 150, 40), (300, 20, 5, 200), (7,)])
def test_flex_block_mask_packed_equals_separate(lens):
    """The FlexAttention path (one kernel per row; eager and forward-only on the CPU) gives each
    sample its own causal attention, with padding (at the start of row 1, the end of both) zero;
    its block mask is built block by block, skipping the blocks across samples."""
    import warnings

    from kangaroo.model.attention import BLOCK, flex_packed_attention, packed_block_mask, packed_sdpa_attention, segments_of

    seg = torch.cat([torch.full((n,), i + 1) for i, n in enumerate(lens)] + [torch.zeros(10, dtype=torch.long)])
    seg = seg[None].repeat(2, 1)
    seg[1, :3] = 0
    L = seg.shape[1]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, L, 16, generator=g) for h in (4, 2, 2))
    bm = packed_block_mask(seg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager FlexAttention warns that it is not compiled
        flex = flex_packed_attention(q, k, v, bm)
    ref, _ = packed_sdpa_attention(torch.nn.Module(), q, k, v, None, kangaroo_segments=segments_of(seg))
    assert flex.shape == (2, L, 4, 16)
    assert torch.allclose(flex, ref, atol=1e-5)
    assert flex[1, :3].abs().sum() == 0 and flex[:, -10:].abs().sum() == 0
    nb = -(-L // BLOCK)
    visited = int(bm.kv_num_blocks.sum() + bm.full_kv_num_blocks.sum())
    causal = 2 * nb * (nb + 1) // 2
    assert visited <= causal
    if len(lens) == 4:  # sample 4 fills block 3 alone: block (3, 0) holds only sample 1 and is skipped
        assert visited < causal
    if lens[0] >= 2 * BLOCK:  # blocks inside one long sample below the diagonal run without a mask
        assert int(bm.full_kv_num_blocks.sum()) > 0


def _packed_equals_separate(tiny):
    samples = [_sample(tiny, 3, 6, 1), _sample(tiny, 0, 9, 2), _sample(tiny, 2, 4, 3)]
    tiny.train()
    tiny.zero_grad()
    total = 0.0
    for ids, labels, video in samples:
        out = tiny(ids[None], videos=[video] if video else None, labels=labels[None])
        out["loss_sum"].backward()
        total += out["loss_sum"].item()
    sep_grads = {k: p.grad.clone() for k, p in tiny.named_parameters() if p.grad is not None}
    tiny.zero_grad()
    ids_p, lab_p, seg, videos = [], [], [], []
    for k, (ids, labels, video) in enumerate(samples):
        ids_p.append(ids)
        lab_p.append(labels)
        seg.append(torch.full_like(ids, k + 1))
        if video is not None:
            videos.append(video)
    pad = 5
    ids_p.append(torch.zeros(pad, dtype=torch.long))
    lab_p.append(torch.full((pad,), -100))
    seg.append(torch.zeros(pad, dtype=torch.long))
    out = tiny(torch.cat(ids_p)[None], videos=videos, labels=torch.cat(lab_p)[None], segment_ids=torch.cat(seg)[None])
    out["loss_sum"].backward()
    assert out["loss_sum"].item() == pytest.approx(total, rel=1e-5)
    assert out["n_tokens"] == sum(int((lab[1:] != -100).sum()) for _, lab, _ in samples)
    for k, p in tiny.named_parameters():
        if k in sep_grads:
            assert torch.allclose(p.grad, sep_grads[k], atol=1e-5, rtol=1e-4), k


def test_packing_position_ids():
    seg = torch.tensor([[1, 1, 1, 2, 2, 3, 0, 0]])
    mask, pos = KangarooForConditionalGeneration.packing_mask(seg, torch.float32)
    assert pos.tolist() == [[0, 1, 2, 0, 1, 0, 0, 1]]
    allowed = mask[0, 0] == 0
    assert allowed[4, 3] and not allowed[3, 2] and not allowed[2, 3] and allowed[6, 6] and not allowed[7, 6]


def test_gradient_checkpointing_same_loss_and_grads(tiny):
    ids, labels, video = _sample(tiny, 2, 5, 7)
    tiny.train()
    a = tiny(ids[None], videos=[video], labels=labels[None])["loss"]
    a.backward()
    ga = {k: p.grad.clone() for k, p in tiny.named_parameters() if p.grad is not None}
    tiny.zero_grad()
    tiny.gradient_checkpointing_enable()
    b = tiny(ids[None], videos=[video], labels=labels[None])["loss"]
    b.backward()
    assert torch.allclose(a, b, atol=1e-6)
    for k, p in tiny.named_parameters():
        if k in ga:
            assert torch.allclose(p.grad, ga[k], atol=1e-6), k


def test_visual_row_errors(tiny):
    with pytest.raises(ValueError, match="no media was given"):
        tiny(torch.tensor([[1, tiny.config.video_token_id, 2]]))
    with pytest.raises(ValueError, match="one timestamp per frame"):
        tiny.encode_video(torch.randn(3, 3, 56, 56), torch.zeros(2))
