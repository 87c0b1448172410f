"""WatchSession: appended slots == a one-shot prefill, thinning within the budget, answers not kept."""

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from kangaroo.compat import CACHE_ARG
from kangaroo.model import KangarooForConditionalGeneration, tiny_config
from kangaroo.model.chat import GenerationConfig, KangarooChat
from kangaroo.model.session import THINNING, WatchConfig, WatchSession
from kangaroo.video import Frames

GREEDY = GenerationConfig.greedy(6)


def frames(n, fps=1.0, seed=0, size=40):
    rng = np.random.default_rng(seed)
    return [((i + 0.5) / fps, rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for i in range(n)]


def make_chat(tok, frames_per_slot=None, labels=False):
    torch.manual_seed(0)
    cfg = tiny_config(vocab=len(tok), frames_per_slot=frames_per_slot)
    cfg.text_config.eos_token_id = tok.eos_token_id
    model = KangarooForConditionalGeneration(cfg).eval()
    if labels:
        model.set_time_labels(tok)
    return KangarooChat(model, tok)


@pytest.fixture(scope="module", params=["two_frame_slots", "frame_slots_with_labels"])
def chat(request, smol_tokenizer):
    if request.param == "two_frame_slots":
        return make_chat(smol_tokenizer)
    return make_chat(smol_tokenizer, frames_per_slot=1, labels=True)


@torch.inference_mode()
def one_shot_cache(chat, session, fr):
    """A fresh prefill of prefix + the one-shot block of ``fr`` without its <eov> <vi_end>."""
    m = chat.model
    px = torch.cat([chat.processor.features(Frames(np.stack([f]), np.array([t]), [t], None))[0] for t, f in fr])
    ts = torch.tensor([t for t, _ in fr])
    block = m.video_block(m.encode_video(px, ts), ts)[:-2]
    ids = session.prefix + [m.config.video_token_id] * block.shape[0]
    cache = DynamicCache(config=m.config.text_config)
    m(torch.tensor([ids]), media_embeds=block, **{CACHE_ARG: cache}, use_cache=True, logits_to_keep=1)
    return cache


def assert_same_cache(a, b):
    assert a.get_seq_length() == b.get_seq_length()
    for la, lb in zip(a.layers, b.layers):
        torch.testing.assert_close(la.keys, lb.keys, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(la.values, lb.values, atol=1e-4, rtol=1e-4)


def test_appended_slots_equal_a_one_shot_prefill_and_ask(chat):
    fr = frames(9)
    s = WatchSession(chat, WatchConfig())
    s.add_frames(fr[:3])  # in uneven batches: slots straddle them
    s.add_frames(fr[3:4])
    s.add_frames(fr[4:8])
    assert not s.pending
    assert_same_cache(s.cache, one_shot_cache(chat, s, fr[:8]))
    s.add_frames(fr[8:])  # 9 frames: with two-frame slots the last is incomplete, asked about uncached
    got = s.ask("What happens?", GREEDY)
    video = Frames(np.stack([f for _, f in fr]), np.array([t for t, _ in fr]), [t for t, _ in fr], None)
    conv = chat.start(video)
    assert got["answer"] == chat.ask(conv, "What happens?", GREEDY)
    assert got["prompt_tokens"] == conv.stats[0]["prompt_tokens"]
    assert got["frames"] == 9 and got["seen_until"] == 8.5
    assert got["reused_tokens"] == s.cache.get_seq_length() > 0


def test_the_answer_is_not_kept_unless_a_conversation(chat):
    fr = frames(4)
    s = WatchSession(chat)
    s.add_frames(fr)
    n = s.cache.get_seq_length()
    a, b = s.ask("What happens?", GREEDY), s.ask("What happens?", GREEDY)
    assert a["answer"] == b["answer"] and a["prompt_tokens"] == b["prompt_tokens"]
    assert s.cache.get_seq_length() == n
    c = WatchSession(chat, WatchConfig(conversation=True))
    c.add_frames(fr)
    first, second = c.ask("What happens?", GREEDY), c.ask("And then?", GREEDY)
    assert c.history[1]["content"] == first["answer"]
    assert second["prompt_tokens"] > first["prompt_tokens"]
    assert c.cache.get_seq_length() == n  # the rounds are prefilled after the video, never cached


@pytest.mark.parametrize("policy", sorted(THINNING.names()))
def test_thinning_stays_in_budget_keeps_seen_timestamps_and_equals_a_fresh_prefill(chat, policy):
    fr = frames(30)
    by_time = dict(fr)
    s = WatchSession(chat, WatchConfig(max_frames=8, policy=policy))
    for f in fr:
        s.add_frames([f])
        assert len(s.timestamps) <= 8 + s.slot_frames - 1  # kept slots within the budget, plus an incomplete one
    kept = [t for sl in s.slots for t in sl.timestamps]
    assert set(kept) <= set(by_time) and kept == sorted(kept)
    assert kept[0] == fr[0][0] and kept[-1] == fr[29 - len(s.pending)][0]  # the first and the newest stay
    assert s.stats["rebuilds"] > 0 and s.stats["frames_dropped"] == 30 - len(kept) - len(s.pending)
    assert_same_cache(s.cache, one_shot_cache(chat, s, [(t, by_time[t]) for t in kept]))


def test_events_policy_keeps_the_slots_around_a_change(smol_tokenizer):
    chat = make_chat(smol_tokenizer, frames_per_slot=1)
    still = np.full((40, 40, 3), 90, np.uint8)
    flash = np.full((40, 40, 3), 250, np.uint8)
    fr = [(i + 0.5, flash if i == 5 else still) for i in range(24)]
    s = WatchSession(chat, WatchConfig(max_frames=12, policy="events"))
    s.add_frames(fr)
    assert 5.5 in s.timestamps and 6.5 in s.timestamps  # the event and the slot after it (a change too)
    e = WatchSession(chat, WatchConfig(max_frames=12, policy="every_other"))
    e.add_frames(fr)
    assert 5.5 not in e.timestamps  # every other: the flash went


def test_nothing_seen_yet_is_a_text_prompt_and_bad_input_is_refused(chat):
    s = WatchSession(chat)
    got = s.ask("Hello?", GREEDY)
    assert got["frames"] == 0 and got["seen_until"] == 0.0 and got["reused_tokens"] == 0
    with pytest.raises(ValueError, match="empty"):
        s.ask("  ")
    with pytest.raises(ValueError, match="time order"):
        s.add_frames([(2.0, frames(1)[0][1]), (1.0, frames(1)[0][1])])
    with pytest.raises(ValueError, match="does not fit"):
        WatchSession(chat, WatchConfig(max_frames=10**6))
    with pytest.raises(KeyError):
        WatchConfig(policy="nope")
    assert WatchConfig.from_dict(WatchConfig(fps=2.0).to_dict()) == WatchConfig(fps=2.0)


def test_index_tpe_is_refused(smol_tokenizer):
    chat = make_chat(smol_tokenizer)
    chat.model.switch_tpe("index")
    with pytest.raises(ValueError, match="timestamps"):
        WatchSession(chat)


# ---- kangaroo-smol on a growing file -----------------------------------------------------------
def two_objects(fps=4):
    """16 s: a red circle until 8 s, then a blue square (the synthetic data's shapes)."""
    from kangaroo.synth.render import render_frame
    from kangaroo.synth.timeline import Appearance, SynthConfig, Timeline

    cfg = SynthConfig(duration=16, fps=fps, width=128, height=96, num_objects=0)
    objs = [Appearance("circle", "red", 0.0, 8.0, 0.5, (0.5, 0.5), (0.5, 0.5)),
            Appearance("square", "blue", 8.0, 16.0, 0.5, (0.5, 0.5), (0.5, 0.5))]
    tl = Timeline(cfg, 0, objs, [], [(30, 30, 30)])
    return lambda i: render_frame(tl, i / fps)


@pytest.fixture(scope="module")
def smol():
    return KangarooChat.load("kangaroo-smol")


def _wait_for(cond, timeout=120):
    import time

    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_smol_answer_changes_as_the_stream_passes_t_and_equals_ask_when_done(smol, tmp_path):
    import threading

    from kangaroo.video import SamplingConfig
    from tests.video.growing_media import BackgroundWriter

    path = tmp_path / "live.ts"
    resume = threading.Event()
    w = BackgroundWriter(path, seconds=16, fps=4, delay=0.0, w=128, h=96, frame_fn=two_objects(), gate=(30, resume))
    s = WatchSession(smol, WatchConfig(fps=1.0, idle_timeout_s=60)).open(str(path))  # outlasts the gate
    w.start()
    q = "Which object is on screen at 10 seconds?"
    try:
        # 0.5 .. 6.5 s: the writer waits after 7.25 s (the TS demuxer and H.264 parser hold back two frames)
        _wait_for(lambda: len(s.timestamps) == 7)
        before = s.ask(q, GREEDY)
        assert before["seen_until"] == 6.5 and before["frames"] == 7
        # only the red circle seen so far (the colour is what tells the two objects apart for the shipped
        # weights: 7v names the red circle "red square" here)
        assert "red" in before["answer"] and "blue" not in before["answer"]
        resume.set()
        w.join()
        s.reader.finish()  # the writer is done: end after what it wrote, not after the idle timeout
        assert s.wait(30) and s.error is None and s.state()["end_reason"] == "end of stream"
        after = s.ask(q, GREEDY)
        assert after["frames"] == 16 and after["seen_until"] == 15.5
        assert "blue" in after["answer"]
        assert "red" in s.ask("Which object is on screen at 2 seconds?", GREEDY)["answer"]
        # the finished stream == `kangaroo ask --fps 1` over the file (its sampling, greedy)
        conv = smol.start(str(path), SamplingConfig(sampler="fps", fps=1.0, min_frames=2, max_frames=160))
        assert conv.frames["timestamps"] == [round(t, 3) for t in s.timestamps]
        assert smol.ask(conv, q, GREEDY) == after["answer"]
    finally:
        resume.set()
        s.close()
        w.join()
