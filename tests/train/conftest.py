"""Fixtures shared by the training tests."""

import pytest
import torch

from kangaroo.model import KangarooForConditionalGeneration, tiny_config


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smol_tokenizer):
    """A tiny random Kangaroo with SmolLM2's tokenizer, saved as a model folder (one per test module)."""
    d = tmp_path_factory.mktemp("tinymodel")
    torch.manual_seed(0)
    cfg = tiny_config(vocab=len(smol_tokenizer))
    cfg.text_config.eos_token_id = smol_tokenizer.eos_token_id
    KangarooForConditionalGeneration(cfg).save_pretrained(d)
    smol_tokenizer.save_pretrained(d)
    return str(d)
