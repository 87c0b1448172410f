"""Our processing registered with vLLM's multimodal registry (imports vLLM).

- ``KangarooProcessingInfo``: one video per prompt (the model takes several; raise
  ``--limit-mm-per-prompt`` for more), our ``KangarooProcessor`` built from the model folder.
- ``KangarooDummyInputsBuilder``: for vLLM's memory profiling, the longest video that fits the
  context (capped at ``MAX_DUMMY_FRAMES`` frames), at the model's resolution.
- ``KangarooMultiModalProcessor``: frames -> our pixels and timestamps (the processor's own resize,
  normalisation and layout); the prompt replacement turns the one placeholder token of a video
  into its run (``layout.py``), every position of which the model fills with the block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property

import numpy as np
import torch
from transformers import BatchFeature
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import MultiModalDataItems, MultiModalDataParser
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
)

from ..model.tokens import ADDED
from .layout import frame_timestamps, placeholder_run, replace_subsequence, video_features

MAX_DUMMY_FRAMES = 64


class KangarooProcessingInfo(BaseProcessingInfo):
    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"video": None}

    def get_data_parser(self) -> MultiModalDataParser:
        # the frames' timestamps travel in the metadata (the TPE and time labels need them)
        return MultiModalDataParser(video_needs_metadata=True,
                                    expected_hidden_size=self._get_expected_hidden_size(),
                                    allow_missing_mm_embeddings=self.allow_missing_mm_embeddings)

    def get_supported_mm_processor_kwargs(self) -> dict[str, set[str]]:
        return {"text_kwargs": set(), "videos_kwargs": set()}

    @cached_property
    def kangaroo_processor(self):
        """Our processor for this folder's config and tokenizer (resize, normalisation, layout)."""
        from ..model.processing import KangarooProcessor

        return KangarooProcessor.from_config(self.get_hf_config(), self.get_tokenizer())

    def get_hf_processor(self, **kwargs: object):
        return self.kangaroo_processor

    @property
    def video_token_id(self) -> int:
        return int(self.get_hf_config().video_token_id)

    @cached_property
    def placeholder_text_ids(self) -> list[int]:
        return list(self.get_tokenizer().encode(ADDED["video"], add_special_tokens=False))

    def dummy_frames(self, seq_len: int) -> int:
        """The most frames (up to MAX_DUMMY_FRAMES) whose block fits in ``seq_len`` positions."""
        proc = self.kangaroo_processor
        size = proc.image_size
        n = 1
        while n < MAX_DUMMY_FRAMES:
            ts = [float(i) for i in range(n + 1)]
            if proc.layout.length(n + 1, size, size, ts) > seq_len:
                break
            n += 1
        return n


class KangarooDummyInputsBuilder(BaseDummyInputsBuilder[KangarooProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return self.info.kangaroo_processor.video_token * mm_counts.get("video", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options=None):
        n_videos = mm_counts.get("video", 0)
        size = self.info.kangaroo_processor.image_size
        frames = self.info.dummy_frames(seq_len // max(n_videos, 1))
        video = np.full((frames, size, size, 3), 255, dtype=np.uint8)
        meta = {"timestamps": [float(i) for i in range(frames)], "total_num_frames": frames}
        return {"video": [(video.copy(), dict(meta)) for _ in range(n_videos)]}


class KangarooMultiModalProcessor(BaseMultiModalProcessor[KangarooProcessingInfo]):
    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        """The videos (``hf_data["videos"]``: (frames, metadata) each) -> our tensors; the text is
        tokenized by vLLM, the placeholders expanded by ``_get_prompt_updates``."""
        proc = self.info.kangaroo_processor
        pixels, stamps, frames, lengths = [], [], [], []
        for item in hf_data.get("videos", []):
            video, meta = item if isinstance(item, tuple) else (item, None)
            video = video.numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
            px, ts, n = video_features(proc, video, frame_timestamps(meta, len(video)))
            pixels.append(px)
            stamps.append(ts)
            frames.append(len(ts))
            lengths.append(n)
        if not pixels:
            return BatchFeature({})
        return BatchFeature({"pixel_values_videos": torch.cat(pixels), "frame_timestamps": torch.cat(stamps),
                             "video_frames": torch.tensor(frames, dtype=torch.long),
                             "video_positions": torch.tensor(lengths, dtype=torch.long)})

    def _postprocess_prompt(self, prompt: list[int]) -> list[int]:
        """A chat request's video placeholder is our added token's text (``get_placeholder_str``); a
        tokenizer with reserved tokens (Llama-3) splits that text into pieces: they become its
        reserved video token again."""
        seq = self.info.placeholder_text_ids
        if len(seq) <= 1:
            return prompt
        return replace_subsequence(prompt, seq, [self.info.video_token_id])

    def _get_mm_fields_config(self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]):
        sizes = hf_inputs.get("video_frames", torch.empty(0, dtype=torch.long))
        return dict(pixel_values_videos=MultiModalFieldConfig.flat_from_sizes("video", sizes),
                    frame_timestamps=MultiModalFieldConfig.flat_from_sizes("video", sizes),
                    video_frames=MultiModalFieldConfig.batched("video"),
                    video_positions=MultiModalFieldConfig.batched("video"))

    def _get_prompt_updates(self, mm_items: MultiModalDataItems, hf_processor_mm_kwargs: Mapping[str, object],
                            out_mm_kwargs) -> Sequence[PromptReplacement]:
        vid = self.info.video_token_id

        def replacement(i: int) -> list[int]:  # every position of the run is one of the block's embeddings
            return placeholder_run(vid, int(out_mm_kwargs["video"][i]["video_positions"].data))

        return [PromptReplacement(modality="video", target=[vid], replacement=replacement)]


__all__ = ["KangarooProcessingInfo", "KangarooDummyInputsBuilder", "KangarooMultiModalProcessor"]
