import pytest
from kangaroo.serve.testserver import LoopbackServer


@pytest.fixture(scope="session")
def serve_chat(tiny_chat_model, smol_tokenizer):
    from kangaroo.model.chat import KangarooChat

    return KangarooChat(tiny_chat_model, smol_tokenizer)


@pytest.fixture(scope="module")
def server(serve_chat, synth_dir, tmp_path_factory):
    from kangaroo.serve import ServeConfig, build_app

    cfg = ServeConfig(model="kangaroo-test", store=str(tmp_path_factory.mktemp("store")),
                      allowed_roots=[str(synth_dir)], max_request_bytes=2_000_000, max_upload_bytes=1_500_000,
                      max_frames=32, default_frames=8, max_new_tokens=8)
    with LoopbackServer(build_app(cfg, chat=serve_chat)) as s:
        yield s


@pytest.fixture(scope="session")
def serve_chat64(tiny_chat_model, smol_tokenizer):
    """The same tiny model in float64: batched and solo logits agree to ~1e-12, so a greedy token can
    differ only through a logic error, never through float noise on a near tie."""
    import copy

    from kangaroo.model.chat import KangarooChat

    return KangarooChat(copy.deepcopy(tiny_chat_model).double(), smol_tokenizer)
