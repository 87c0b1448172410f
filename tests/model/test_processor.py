"""The transformers way in: ``AutoProcessor`` + ``AutoModelForCausalLM`` on a full model folder,
``model.generate(**processor(...))`` with every decoding strategy, and the CLI's answer equal to it."""

import json
import subprocess
import sys

import pytest
import torch

from kangaroo.model.chat import GenerationConfig, KangarooChat


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory, tiny_chat_model, smol_tokenizer):
    from kangaroo.model.weights import save_model

    out = tmp_path_factory.mktemp("full") / "model"
    save_model(tiny_chat_model, smol_tokenizer, str(out))
    return out


def _conv(video, question="What happens?"):
    return [{"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": question}]}]


def test_auto_classes_load_a_full_folder(full_dir, synth_video):
    from transformers import AutoModelForCausalLM, AutoProcessor

    import kangaroo.model  # noqa: F401  (registers the Auto classes)

    proc = AutoProcessor.from_pretrained(full_dir)
    model = AutoModelForCausalLM.from_pretrained(full_dir).eval()
    assert type(proc).__name__ == "KangarooProcessor" and model.config.video_token_id == proc.video_token_id
    inputs = proc.apply_chat_template(_conv(synth_video), num_frames=4)
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values", "frame_timestamps", "media_frames"}
    assert inputs["input_ids"].min() >= 0 and inputs["media_frames"].tolist() == [4]
    n = int((inputs["input_ids"] == proc.video_token_id).sum())
    assert n == model.config.num_visual_tokens(4, 56, 56, inputs["frame_timestamps"].tolist())
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_generate_equals_kangaroo_chat_and_the_cli(full_dir, synth_video, tmp_path):
    """Greedy: model.generate(**processor(...)) gives token for token what `kangaroo ask` prints."""
    from kangaroo.model.weights import load

    model, proc = load(str(full_dir))
    inputs = proc.apply_chat_template(_conv(synth_video), num_frames=4)
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    kc = KangarooChat(model, proc)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    new = new[: next((k for k, t in enumerate(new) if t in kc.stops), len(new))]
    want = proc.decode(new, skip_special_tokens=True).strip()
    from kangaroo.video import SamplingConfig

    assert kc.ask(kc.start(synth_video, SamplingConfig(num_frames=4)), "What happens?", GenerationConfig.greedy(8)) == want
    cli = subprocess.run([sys.executable, "-m", "kangaroo.cli", "ask", synth_video, "What happens?", "--model",
                          str(full_dir), "--frames", "4", "--greedy", "--max-new-tokens", "8", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["answer"] == want
    assert "Warning" not in cli.stderr, cli.stderr  # a normal run prints no Future/Deprecation warnings


def test_decoding_strategies_and_streamer(full_dir, synth_video):
    from threading import Thread

    from transformers import MaxLengthCriteria, StoppingCriteriaList, TextIteratorStreamer

    from kangaroo.model.weights import load

    model, proc = load(str(full_dir))
    inputs = proc.apply_chat_template(_conv(synth_video), num_frames=4)
    L = inputs["input_ids"].shape[1]
    greedy = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    beams = model.generate(**inputs, max_new_tokens=5, num_beams=3, do_sample=False)
    assert beams.shape[0] == 1 and beams.shape[1] <= L + 5
    torch.manual_seed(0)
    a = model.generate(**inputs, max_new_tokens=5, do_sample=True, top_p=0.9, temperature=1.0)
    torch.manual_seed(0)
    assert torch.equal(a, model.generate(**inputs, max_new_tokens=5, do_sample=True, top_p=0.9, temperature=1.0))
    stop = model.generate(**inputs, max_new_tokens=50, do_sample=False,
                          stopping_criteria=StoppingCriteriaList([MaxLengthCriteria(L + 2)]))
    assert stop.shape[1] <= L + 2
    streamer = TextIteratorStreamer(proc.tokenizer, skip_prompt=True, skip_special_tokens=True)
    t = Thread(target=model.generate, kwargs={**inputs, "max_new_tokens": 5, "do_sample": False, "streamer": streamer})
    t.start()
    text = "".join(streamer)
    t.join()
    assert text.strip() == proc.decode(greedy[0, L:], skip_special_tokens=True).strip()


def test_batched_text_call_and_placeholders(full_dir, synth_video):
    """processor(text=...) with placeholders: the same ids as the chat path; left-padded batches;
    user text that spells a placeholder stays text."""
    from kangaroo.model.weights import load

    model, proc = load(str(full_dir))
    chat = proc.apply_chat_template(_conv(synth_video), num_frames=4)
    text = proc.tokenizer.apply_chat_template([{"role": "user", "content": proc.video_token + "\nWhat happens?"}],
                                              tokenize=False, add_generation_prompt=True)
    raw = proc(text=text, videos=[synth_video], num_frames=4)
    assert torch.equal(raw["input_ids"], chat["input_ids"]) and torch.equal(raw["pixel_values"], chat["pixel_values"])
    batch = proc.apply_chat_template([_conv(synth_video), _conv(synth_video, "A much longer question about it?")],
                                     num_frames=4)
    assert batch["attention_mask"][0, 0] == 0 and batch["media_frames"].tolist() == [4, 4]
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    one = model.generate(**chat, max_new_tokens=4, do_sample=False)
    assert out[0, -4:].tolist() == one[0, -4:].tolist()  # left padding changes nothing
    evil = proc.apply_chat_template([{"role": "user", "content": f"{proc.video_token} hi"}])
    assert proc.video_token_id not in evil["input_ids"][0].tolist()
    with pytest.raises(ValueError, match="placeholders"):
        proc(text=text, videos=[])


def test_encoder_cache_reencodes_only_new_frames(tiny_chat_model, smol_tokenizer, synth_video):
    from kangaroo.video import SamplingConfig

    kc = KangarooChat(tiny_chat_model, smol_tokenizer)
    st = kc.frame_cache.stats
    rows8, info8 = kc.encode(synth_video, SamplingConfig(sampler="fps", fps=1.0, min_frames=2, max_frames=64))
    first = st["encoded"]
    assert first == info8["num_frames"] and st["reused"] == 0
    part, _ = kc.encode(synth_video, SamplingConfig(sampler="fps", fps=1.0, min_frames=2, max_frames=64, start=2.0,
                                                    end=6.0))  # a sub-range of the same 1 fps grid: all seen
    kc.frame_cache.stats = {"encoded": 0, "reused": 0}
    again, _ = kc.encode(synth_video, SamplingConfig(sampler="fps", fps=1.0, min_frames=2, max_frames=64))
    assert kc.frame_cache.stats == {"encoded": 0, "reused": info8["num_frames"]}
    assert torch.allclose(again, rows8, atol=1e-5)  # cached features give the same block


def test_video_identity_stable_while_growing_changes_when_replaced(tmp_path):
    import os

    from kangaroo.video.identity import video_identity

    p = tmp_path / "v.bin"
    p.write_bytes(os.urandom(10000))
    a = video_identity(p)
    with open(p, "ab") as f:
        f.write(os.urandom(5000))
    assert video_identity(p) == a  # grew: the same video
    q = tmp_path / "w.bin"
    q.write_bytes(os.urandom(10000))
    os.replace(q, p)
    assert video_identity(p) != a  # replaced
    assert video_identity(tmp_path / "missing") is None
