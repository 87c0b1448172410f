"""Serving: an OpenAI-compatible HTTP server and a web chat page (FastAPI + uvicorn)."""

from .engine import Engine, ServeConfig


def build_app(cfg: ServeConfig, chat=None):
    """The FastAPI app for ``cfg`` (loads ``cfg.model`` unless a ready ``KangarooChat`` is given)."""
    from ..model.chat import KangarooChat
    from .app import create_app

    chat = chat or KangarooChat.load(cfg.model, quantize=cfg.quantize)
    return create_app(Engine(cfg, chat), model_name=cfg.model.rstrip("/").split("/")[-1])


def serve(cfg: ServeConfig) -> None:
    import uvicorn

    uvicorn.run(build_app(cfg), host=cfg.host, port=cfg.port, log_level="info")


__all__ = ["Engine", "ServeConfig", "build_app", "serve"]
