import pytest

VIDEO = 256  # the placeholder id of the tiny model: just past its 256-row table, as tokens.py adds one
import torch

from kangaroo.model import KangarooForConditionalGeneration, tiny_config


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    return KangarooForConditionalGeneration(tiny_config(video_token_id=VIDEO, image_token_id=VIDEO + 1)).eval()
