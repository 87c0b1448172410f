"""frames_per_slot (ours): one distinct frame per temporal slot, the trained kernel seeing it still."""

import pytest
import torch

from kangaroo.model import KangarooForConditionalGeneration, tiny_config


@pytest.mark.parametrize("labels", [False, True])
@pytest.mark.parametrize("frames", [1, 4, 5])
def test_one_frame_per_slot_equals_each_frame_shown_twice(frames, labels):
    torch.manual_seed(0)
    cfg = tiny_config(frame_chunk=4)
    if labels:
        cfg.time_labels = list(range(40, 52))
    pair = KangarooForConditionalGeneration(cfg).eval()
    torch.nn.init.normal_(pair.patchify.conv.weight)  # a trained kernel: frames weighted unequally
    single = KangarooForConditionalGeneration(tiny_config(frame_chunk=4, frames_per_slot=1)).eval()
    single.config.time_labels = cfg.time_labels
    single.load_state_dict(pair.state_dict())
    px, ts = torch.randn(frames, 3, 56, 56), torch.linspace(0.0, 9.5, frames)
    with torch.no_grad():
        want = pair.visual_rows([(px.repeat_interleave(2, 0), ts.repeat_interleave(2))])
        got = single.visual_rows([(px, ts)])
    assert torch.allclose(got, want, atol=1e-5)
    assert got.shape[0] == single.config.num_visual_tokens(frames, 56, 56, ts.tolist())
    assert single.encode_video(px, ts).shape[0] == frames  # a slot per frame
    assert single.config.slot_labels(ts.tolist()) == pair.config.slot_labels(ts.repeat_interleave(2).tolist())


def test_frames_per_slot_must_divide_the_kernel():
    tiny_config(frames_per_slot=2)
    for bad in (0, 3):
        with pytest.raises(ValueError, match="frames_per_slot"):
            tiny_config(frames_per_slot=bad)
    m = KangarooForConditionalGeneration(tiny_config())
    m.set_frames_per_slot(1)
    with pytest.raises(ValueError, match="frames_per_slot"):
        m.set_frames_per_slot(3)
    assert m.config.slot_frames == 1  # a refused value leaves the model as it was
