import pytest
import torch

from kangaroo.serve.testserver import LoopbackServer


@pytest.fixture(scope="session")
def serve_chat():
    from kangaroo.model import KangarooForConditionalGeneration, tiny_config
    from kangaroo.model.chat import KangarooChat
    from kangaroo.model.hub import load_smollm2

    tok = load_smollm2()[1]
    torch.manual_seed(0)
    cfg = tiny_config(vocab=len(tok))
    cfg.text_config.eos_token_id = tok.eos_token_id
    return KangarooChat(KangarooForConditionalGeneration(cfg).eval(), tok)


@pytest.fixture(scope="module")
def server(serve_chat, synth_dir, tmp_path_factory):
    from kangaroo.serve import ServeConfig, build_app

    cfg = ServeConfig(model="kangaroo-test", store=str(tmp_path_factory.mktemp("store")),
                      allowed_roots=[str(synth_dir)], max_request_bytes=2_000_000, max_upload_bytes=1_500_000,
                      max_frames=32, default_frames=8, max_new_tokens=8)
    with LoopbackServer(build_app(cfg, chat=serve_chat)) as s:
        yield s
