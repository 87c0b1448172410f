import json

import pytest
import torch

from ..model.parts import eva_clip_state, tiny_llama_dir


@pytest.fixture
def tiny_kangaroo(tmp_path) -> str:
    """A tiny assembled 8B-layout Kangaroo folder in float32 (head dim 32: vLLM refuses 16), 112 px."""
    from kangaroo.cli import main

    torch.save(eva_clip_state(), tmp_path / "eva.pt")
    llm = tiny_llama_dir(tmp_path / "llama", dtype=torch.float32, hidden=128)
    assert main(["assemble", "--vision", str(tmp_path / "eva.pt"), "--llm", llm, "--out", str(tmp_path / "init"),
                 "--image-size", "112"]) == 0
    cfg = json.loads((tmp_path / "init" / "config.json").read_text())
    assert cfg["architectures"] == ["KangarooForConditionalGeneration"] and "quantization_config" not in cfg
    return str(tmp_path / "init")
