"""The Kangaroo model: config, EVA02 tower, TPE, patchify, projector, assembly, chat."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .config import KangarooConfig, VisionConfig, kangaroo_8b_config, tiny_config
from .modeling import KangarooForConditionalGeneration, count_parameters

AutoModel.register(KangarooConfig, KangarooForConditionalGeneration, exist_ok=True)
AutoModelForCausalLM.register(KangarooConfig, KangarooForConditionalGeneration, exist_ok=True)

__all__ = ["AutoConfig", "KangarooConfig", "VisionConfig", "kangaroo_8b_config", "tiny_config",
           "KangarooForConditionalGeneration", "count_parameters"]
