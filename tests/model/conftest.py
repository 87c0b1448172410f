import pytest
import torch

from kangaroo.model import KangarooForConditionalGeneration, tiny_config


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    return KangarooForConditionalGeneration(tiny_config()).eval()
