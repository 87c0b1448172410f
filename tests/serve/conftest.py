import socket
import threading
import time

import httpx
import pytest
import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(200):
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


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
    with Server(build_app(cfg, chat=serve_chat)) as s:
        yield s
