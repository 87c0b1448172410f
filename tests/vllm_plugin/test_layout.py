"""The vLLM plugin's pieces that need no vLLM: the prompt replacement (one placeholder per video,
expanded by vLLM) must give exactly our processor's token ids, pixels and timestamps."""

import numpy as np
import pytest
import torch

from kangaroo.model import tiny_config
from kangaroo.model.config import TIME_LABEL_CHARS
from kangaroo.model.processing import KangarooProcessor
from kangaroo.model.tokens import ADDED
from kangaroo.vllm_plugin.layout import (
    expand_placeholders,
    frame_timestamps,
    kangaroo_prompt,
    replace_subsequence,
    video_features,
)


def _processor(tok, time_labels: bool, frames_per_slot):
    labels = [tok.encode(c, add_special_tokens=False)[0] for c in TIME_LABEL_CHARS] if time_labels else None
    cfg = tiny_config(vocab=len(tok), image_size=56, time_labels=labels, frames_per_slot=frames_per_slot)
    return KangarooProcessor.from_config(cfg, tok)


@pytest.mark.parametrize("time_labels,frames_per_slot", [(False, None), (True, 1)])
def test_replacement_gives_the_processors_ids_pixels_and_timestamps(smol_tokenizer, synth_video, time_labels,
                                                                      frames_per_slot):
    proc = _processor(smol_tokenizer, time_labels, frames_per_slot)
    conv = [{"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "video", "video": synth_video},
                                         {"type": "text", "text": "What happens?"}]}]
    want = proc.apply_chat_template(conv, num_frames=6)
    frames = proc.load_frames(synth_video, "video", proc.sampling(None, 6))
    ids, items = kangaroo_prompt(proc, conv, [frames])
    assert ids.count(proc.video_token_id) == 1  # vLLM's prompt: one placeholder per video
    video, meta = items[0]
    assert video.dtype == np.uint8 and video.shape[0] == 6
    px, ts, n = video_features(proc, video, frame_timestamps(meta, len(video)))  # what the plugin's processor does
    assert expand_placeholders(ids, proc.video_token_id, [n]) == want["input_ids"][0].tolist()
    assert torch.equal(px, want["pixel_values"]) and torch.equal(ts, want["frame_timestamps"])


def test_timestamps_from_vllms_metadata():
    assert frame_timestamps({"fps": 4.0, "frames_indices": [0, 2, 8]}, 3) == [0.0, 0.5, 2.0]
    assert frame_timestamps({"timestamps": [0.1, 0.7], "fps": 30.0, "frames_indices": [3, 21]}, 2) == [0.1, 0.7]
    with pytest.raises(ValueError, match="needs its metadata"):
        frame_timestamps(None, 2)
    with pytest.raises(ValueError, match="neither timestamps"):
        frame_timestamps({"fps": 4.0}, 2)
    with pytest.raises(ValueError, match="3 timestamps for 2 frames"):
        frame_timestamps({"timestamps": [0, 1, 2]}, 2)


def test_expansion_errors_and_several_videos():
    assert expand_placeholders([5, 9, 6, 9], 9, [2, 3]) == [5, 9, 9, 6, 9, 9, 9]
    with pytest.raises(ValueError, match="more video placeholders"):
        expand_placeholders([9, 9], 9, [2])
    with pytest.raises(ValueError, match="2 videos given"):
        expand_placeholders([9], 9, [2, 2])
    with pytest.raises(ValueError, match="at least one position"):
        expand_placeholders([9], 9, [0])


def test_chat_placeholder_text_becomes_a_reserved_token():
    """A Llama-3-style tokenizer (reserved tokens) splits the chat placeholder's text into pieces;
    the plugin maps those pieces back to its reserved video token."""
    from transformers import AutoTokenizer

    from kangaroo.model.hub import smollm2_dir

    tok = AutoTokenizer.from_pretrained(smollm2_dir())  # a fresh one: the shared one has the added tokens
    tok.add_special_tokens({"additional_special_tokens": [f"<|reserved_special_token_{i}|>" for i in range(2)]})
    proc = KangarooProcessor.from_config(tiny_config(vocab=len(tok)), tok)
    pieces = tok.encode(ADDED["video"], add_special_tokens=False)
    assert len(pieces) > 1 and proc.video_token == "<|reserved_special_token_0|>"
    prompt = [7] + pieces + [8] + pieces
    assert replace_subsequence(prompt, pieces, [proc.video_token_id]) == [7, proc.video_token_id, 8,
                                                                          proc.video_token_id]


def test_serve_media_io_kwargs_follow_our_servers_decode():
    from kangaroo.vllm_plugin.layout import serve_media_io_kwargs

    kw = serve_media_io_kwargs(tiny_config(image_size=56), 8)
    assert kw == {"video": {"video_backend": "kangaroo", "num_frames": 8, "max_side": 448}}  # max(448, 2 * 56)
    assert serve_media_io_kwargs(tiny_config(image_size=448), 4)["video"]["max_side"] == 896
    with pytest.raises(ValueError, match="num_frames"):
        serve_media_io_kwargs(tiny_config(), 0)
