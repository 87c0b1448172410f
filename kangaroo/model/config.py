"""Kangaroo configuration (SPEC section 1).

``KangarooConfig`` is a transformers config (itself a dataclass in transformers 5) so
that the model saves as an HF-style folder and loads through the Auto classes.
``VisionConfig`` describes our EVA02 tower; the LLM is any ``LlamaConfig``. The
default is the full 8B model: EVA02-CLIP-L/14 at 448 px + Llama-3-8B-Instruct.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, LlamaConfig
from transformers.configuration_utils import PreTrainedConfig

from ..compat import SubConfigSpec

from ..dataclass_io import strict_from_dict


@dataclass
class VisionConfig:
    """EVA02-CLIP-L/14 by default: patch 14, 24 blocks, width 1024, 16 heads, SwiGLU + sub-LN."""

    image_size: int = 448
    patch_size: int = 14
    width: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_hidden: int = 2730  # SwiGLU hidden size (mlp_ratio 8/3 in EVA02-L: 1024 * 8/3)
    rope_pretrain_grid: int = 16  # 2-D RoPE interpolated from this grid (EVA02's pt_seq_len)
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-6
    use_cls: bool = True  # cls token kept inside the tower, dropped from the features

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @classmethod
    def from_dict(cls, d: dict | None) -> "VisionConfig":
        return strict_from_dict(cls, d, "vision config keys")


def llama3_8b_instruct() -> dict:
    return dict(
        model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=14336, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192,
        rms_norm_eps=1e-5, bos_token_id=128000, eos_token_id=[128001, 128009], tie_word_embeddings=False,
    )


TPE_TYPES = ("sincos", "index", "learned", "none")
TIME_LABEL_CHARS = "0123456789.s"  # what a time label is written with, one token each


def time_label(seconds: float) -> str:
    """A slot's start time as text, e.g. '12.5s' (time labels, ``KangarooConfig.time_labels``)."""
    return f"{max(float(seconds), 0.0):.1f}s"


@dataclass
class VisualLayout:
    """How many embedding positions a medium of T frames of H x W pixels takes:
    ``<vi_start> [label] G1 <eof> ... [label] Gn <eov> <vi_end>``."""

    patch_size: int
    patchify_kernel: list[int]
    slot_frames: int  # distinct frames per temporal slot
    time_labels: bool  # every slot preceded by its start time as text, one token per character

    def tokens_per_slot(self, height: int, width: int) -> int:
        _, kh, kw = self.patchify_kernel
        gh, gw = height // self.patch_size, width // self.patch_size
        return -(-gh // kh) * -(-gw // kw)

    def slot_labels(self, timestamps) -> list[str]:
        return [time_label(t) for t in list(timestamps)[:: self.slot_frames]]

    def length(self, frames: int, height: int, width: int, timestamps=None) -> int:
        slots = -(-frames // self.slot_frames)
        n = slots * self.tokens_per_slot(height, width) + slots + 2  # <eof>/<eov> per slot, start, end
        if self.time_labels:
            if timestamps is None or len(timestamps) != frames:
                raise ValueError("a model with time labels needs one timestamp per frame to count its tokens")
            n += sum(len(s) for s in self.slot_labels(timestamps))
        return n


@strict
class KangarooConfig(PreTrainedConfig):
    model_type = "kangaroo"
    if SubConfigSpec is not None:
        sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}
    else:  # transformers < 5.2x (vLLM's CPU build): __post_init__ builds the text config itself
        sub_configs = {"text_config": AutoConfig}

    vision_config: dict | None = None
    text_config: dict | PreTrainedConfig | None = None
    tpe: str = "sincos"  # sincos: sin-cos of seconds; index: of the frame index; learned; none
    tpe_scale: float = 1.0  # sincos: positions are seconds * tpe_scale
    tpe_max_seconds: int = 3600  # learned: table size (seconds, linearly interpolated)
    patchify_kernel: list[int] | None = None  # (t, h, w); default (2, 2, 2)
    projector_type: str = "mlp2x_gelu"
    frame_chunk: int = 16  # frames encoded at once by the vision tower
    markers: list[str] | None = None  # names of the learned marker embeddings, in order
    # Ours, not the paper's: token ids of TIME_LABEL_CHARS. When set, every temporal slot is
    # preceded by its start time written as text ("12.5s"), next to the TPE; None = the paper's block.
    time_labels: list[int] | None = None
    # Ours: distinct frames per temporal slot (None = the patchify's temporal kernel, the paper's
    # 2). 1 gives every frame a slot of its own: its features are repeated to fill the kernel, so
    # the trained convolution sees a still slot; twice the tokens, nothing averaged across frames.
    frames_per_slot: int | None = None
    tie_word_embeddings: bool = False
    # The media placeholders (kangaroo/model/tokens.py): the processor expands each to a run of this
    # id, one per embedding position of the medium, and the model writes the medium's block there.
    video_token_id: int | None = None
    image_token_id: int | None = None

    def __post_init__(self, **kwargs):
        if self.text_config is None:
            self.text_config = llama3_8b_instruct()
        if SubConfigSpec is None and isinstance(self.text_config, dict):
            from transformers import CONFIG_MAPPING

            self.text_config = CONFIG_MAPPING[self.text_config.get("model_type", "llama")](**self.text_config)
        if self.vision_config is None:
            self.vision_config = dataclasses.asdict(VisionConfig())
        if self.patchify_kernel is None:
            self.patchify_kernel = [2, 2, 2]
        if self.markers is None:
            self.markers = ["<vi_start>", "<eof>", "<eov>", "<vi_end>"]
        super().__post_init__(**kwargs)
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))
        self.validate_kangaroo()

    def validate_kangaroo(self) -> None:
        if self.tpe not in TPE_TYPES:
            raise ValueError(f"tpe must be one of {TPE_TYPES}, got {self.tpe!r}")
        if self.projector_type != "mlp2x_gelu":
            raise ValueError(f"projector_type must be 'mlp2x_gelu', got {self.projector_type!r}")
        if len(self.patchify_kernel) != 3 or min(self.patchify_kernel) < 1:
            raise ValueError(f"patchify_kernel must be three positive ints, got {self.patchify_kernel}")
        if self.frame_chunk < 1:
            raise ValueError("frame_chunk must be >= 1")
        kt = self.patchify_kernel[0]
        if self.frames_per_slot is not None and (self.frames_per_slot < 1 or kt % self.frames_per_slot):
            raise ValueError(f"frames_per_slot must divide the temporal kernel {kt}, got {self.frames_per_slot}")
        if list(self.markers) != ["<vi_start>", "<eof>", "<eov>", "<vi_end>"]:
            raise ValueError("markers must be ['<vi_start>', '<eof>', '<eov>', '<vi_end>']")
        if self.time_labels is not None and (len(self.time_labels) != len(TIME_LABEL_CHARS)
                                             or min(self.time_labels) < 0):
            raise ValueError(f"time_labels must be {len(TIME_LABEL_CHARS)} token ids (of {TIME_LABEL_CHARS!r})")
        VisionConfig.from_dict(self.vision_config)

    @property
    def vision(self) -> VisionConfig:
        return VisionConfig.from_dict(self.vision_config)

    @property
    def slot_frames(self) -> int:
        """Distinct frames in one temporal slot."""
        return self.frames_per_slot or self.patchify_kernel[0]

    def layout(self) -> "VisualLayout":
        """What fixes how many embedding positions a medium takes (shared with the processor)."""
        v = self.vision
        return VisualLayout(v.patch_size, list(self.patchify_kernel), self.slot_frames, self.time_labels is not None)

    def tokens_per_slot(self, height: int, width: int) -> int:
        """Visual tokens for one temporal slot of frames of height x width pixels."""
        return self.layout().tokens_per_slot(height, width)

    def num_visual_tokens(self, frames: int, height: int, width: int, timestamps=None) -> int:
        """Embedding positions one video takes, markers (and time labels) included."""
        return self.layout().length(frames, height, width, timestamps)

    def slot_labels(self, timestamps) -> list[str]:
        """The time label of every temporal slot: the start time of its first frame."""
        return self.layout().slot_labels(timestamps)

    def label_ids(self, label: str) -> list[int]:
        return [self.time_labels[TIME_LABEL_CHARS.index(c)] for c in label]


AutoConfig.register("kangaroo", KangarooConfig)


def kangaroo_8b_config() -> KangarooConfig:
    """The paper's model: EVA02-CLIP-L/14 at 448 px and Llama-3-8B-Instruct (~8.35B parameters);
    the placeholders are Llama-3's <|reserved_special_token_0|> / _1|> (kangaroo/model/tokens.py)."""
    return KangarooConfig(video_token_id=128002, image_token_id=128003)


def tiny_config(llm_hidden: int = 64, vocab: int = 256, image_size: int = 56, **kw) -> KangarooConfig:
    """A few-MB configuration for tests."""
    vision = dataclasses.asdict(VisionConfig(image_size=image_size, patch_size=14, width=32, depth=2, heads=4,
                                             mlp_hidden=64, rope_pretrain_grid=2))
    text = dict(model_type="llama", hidden_size=llm_hidden, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=2 * llm_hidden, vocab_size=vocab, max_position_embeddings=4096,
                rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    return KangarooConfig(vision_config=vision, text_config=text, **kw)


__all__ = ["KangarooConfig", "VisionConfig", "LlamaConfig", "kangaroo_8b_config", "tiny_config", "TPE_TYPES",
           "TIME_LABEL_CHARS", "time_label"]
