import pytest
import torch

from kangaroo.model import KangarooForConditionalGeneration, tiny_config


@pytest.fixture(scope="session")
def smol_tokenizer():
    from kangaroo.model.hub import load_smollm2

    _, tok = load_smollm2()
    return tok


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    return KangarooForConditionalGeneration(tiny_config()).eval()


@pytest.fixture(scope="session")
def tiny_chat_model(smol_tokenizer):
    """A tiny random model over SmolLM2's real tokenizer and chat template."""
    torch.manual_seed(0)
    cfg = tiny_config(vocab=len(smol_tokenizer))
    cfg.text_config.eos_token_id = smol_tokenizer.eos_token_id
    return KangarooForConditionalGeneration(cfg).eval()
