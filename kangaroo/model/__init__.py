"""The Kangaroo model: config, EVA02 tower, TPE, patchify, projector, assembly, chat."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor

from .config import KangarooConfig, VisionConfig, kangaroo_8b_config, tiny_config
from .modeling import KangarooForConditionalGeneration, count_parameters

AutoModel.register(KangarooConfig, KangarooForConditionalGeneration, exist_ok=True)
AutoModelForCausalLM.register(KangarooConfig, KangarooForConditionalGeneration, exist_ok=True)
from .processing import KangarooProcessor  # noqa: E402

AutoProcessor.register(KangarooConfig, KangarooProcessor, exist_ok=True)

__all__ = ["AutoConfig", "KangarooConfig", "VisionConfig", "kangaroo_8b_config", "tiny_config",
           "KangarooForConditionalGeneration", "KangarooProcessor", "count_parameters"]
