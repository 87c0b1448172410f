"""The Kangaroo architecture as an out-of-tree vLLM model plugin.

vLLM imports ``register`` through the ``vllm.general_plugins`` entry point (pyproject.toml) in
every process it starts; then ``vllm serve DIR`` and ``LLM(model=DIR)`` run any full Kangaroo
folder (assembled, converted, or exported with its LLM) with ``video_url`` requests:

    LLM(model=DIR, dtype="float32", limit_mm_per_prompt={"video": 1})

- ``layout.py``: the prompt replacement's arithmetic and the prompt builder (no vLLM needed);
- ``processing.py``: our processor in vLLM's multimodal registry;
- ``model.py``: the visual path on our modules, the LLM on vLLM's Llama layers;
- ``video.py``: the ``kangaroo`` video loader (our decoder and sampler, frames with their seconds).

Only this package imports vLLM; the rest of kangaroo never does. ``make vllm-test`` builds an
environment with vLLM's CPU build and runs tests/vllm (docs/serving.md).
"""

ARCHITECTURE = "KangarooForConditionalGeneration"


def register() -> None:
    """Register the architecture with vLLM (lazily: vLLM imports model.py when a folder needs it)."""
    from vllm import ModelRegistry

    from ..model import config as _config  # noqa: F401  (AutoConfig learns model_type "kangaroo")

    from .video import register_loader

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "kangaroo.vllm_plugin.model:KangarooForConditionalGeneration")
    register_loader()  # the "kangaroo" video loader: our decoder and sampler for video_url requests (video.py)
