"""Kangaroo inside vLLM's model runner (imports vLLM).

The visual path is our own modules (EVA tower, TPE, 3-D patchify, projector, the four learned
markers) run by ``embed_multimodal``; the LLM is vLLM's ``LlamaForCausalLM`` (paged KV cache,
continuous batching). Weights load by name from any full Kangaroo folder: ``vision_tower.*``,
``temporal_embed.*``, ``patchify.*``, ``mm_projector.*`` and ``markers`` as saved, and
``language_model.*`` handed to vLLM's Llama loader (which fuses q/k/v and gate/up itself).

The video block is built by the same code as ``model.generate()``:
``KangarooForConditionalGeneration.encode_video`` and ``video_block`` are called on this module,
which has the attributes they read (``config``, the visual modules, ``markers``,
``get_input_embeddings``), so the two engines cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.model_executor.models.interfaces import SupportsMultiModal
from vllm.model_executor.models.utils import AutoWeightsLoader, init_vllm_registered_model, maybe_prefix
from vllm.multimodal import MULTIMODAL_REGISTRY

from ..model.modeling import KangarooForConditionalGeneration as _HF
from ..model.patchify import SpatialTemporalPatchify
from ..model.projector import build_projector
from ..model.temporal import TemporalEmbedding
from ..model.tokens import ADDED
from ..model.vision import EVAVisionTower
from .processing import KangarooDummyInputsBuilder, KangarooMultiModalProcessor, KangarooProcessingInfo


@MULTIMODAL_REGISTRY.register_processor(KangarooMultiModalProcessor, info=KangarooProcessingInfo,
                                        dummy_inputs=KangarooDummyInputsBuilder)
class KangarooForConditionalGeneration(nn.Module, SupportsMultiModal):
    """vLLM's Kangaroo: ``vllm serve DIR`` / ``LLM(model=DIR)`` on a full Kangaroo folder."""

    # the LLM's fused layers and their parts, for a pre-quantised folder's per-layer scheme (export.py)
    packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("video"):
            # the added placeholder's text; with a tokenizer that holds reserved tokens instead (Llama-3) the
            # processor turns that text back into the reserved token (KangarooMultiModalProcessor._postprocess_prompt)
            return ADDED["video"]
        raise ValueError(f"Kangaroo in vLLM takes videos, not {modality}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.config = config
        v = config.vision
        d = config.text_config.hidden_size
        with self._mark_tower_model(vllm_config, "video"):
            self.vision_tower = EVAVisionTower(v)
            self.temporal_embed = TemporalEmbedding(config.tpe, v.width, config.tpe_scale, config.tpe_max_seconds)
            self.patchify = SpatialTemporalPatchify(v.width, tuple(config.patchify_kernel))
            self.mm_projector = build_projector(config.projector_type, v.width, d)
        self.markers = nn.Parameter(torch.zeros(4, d))
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(vllm_config=vllm_config, hf_config=config.text_config,
                                                             prefix=maybe_prefix(prefix, "language_model"),
                                                             architectures=["LlamaForCausalLM"])
        media = [i for i in (config.video_token_id, config.image_token_id) if i is not None]
        self.configure_mm_token_handling(config.text_config.vocab_size, media)  # SmolLM2's lie past the table
        self.make_empty_intermediate_tensors = self.language_model.model.make_empty_intermediate_tensors

    # what KangarooForConditionalGeneration.encode_video / video_block read
    def get_input_embeddings(self):
        return self.language_model.model.embed_tokens

    encode_video = _HF.encode_video
    video_block = _HF.video_block
    video_chunk = _HF.video_chunk  # encode_video calls it (tests/vllm_plugin/test_borrowed.py)

    def embed_multimodal(self, **kwargs: object):
        """Every video's block [positions, d], in the order of the prompt."""
        pixels = kwargs.get("pixel_values_videos")
        if pixels is None:
            return []
        stamps, frames = kwargs["frame_timestamps"], kwargs["video_frames"]
        sizes = [int(n) for n in (frames.tolist() if isinstance(frames, torch.Tensor) else frames)]
        if isinstance(pixels, (list, tuple)):
            pixels, stamps = torch.cat(list(pixels)), torch.cat(list(stamps))
        dtype = self.markers.dtype
        out = []
        for px, ts in zip(pixels.split(sizes), stamps.split(sizes)):
            ts = ts.float()
            out.append(self.video_block(self.encode_video(px.to(dtype), ts), ts))
        return out

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor, intermediate_tensors=None,
                inputs_embeds: torch.Tensor | None = None, **kwargs: object):
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return AutoWeightsLoader(self).load_weights(weights)
