"""The Kangaroo model: EVA02 tower -> + TPE -> 3-D patchify -> projector -> Llama.

Data flow for one video (shapes for the 8B default at 448 px, 64 frames):

    pixels     [T=64, 3, 448, 448]
    tower      [64, 32, 32, 1024]      per chunk of ``frame_chunk`` frames
    + TPE      [64, 1, 1, 1024]        from each frame's timestamp in seconds
    patchify   [32, 16, 16, 1024]      3-D depthwise conv, kernel = stride = (2, 2, 2)
    projector  [32, 256, 4096]         mlp2x_gelu
    block      [32*256 + 32 + 2, 4096] <vi_start> G1 <eof> ... Gn <eov> <vi_end>

With ``config.time_labels`` (ours) each slot is preceded by its start time as text, embedded
with the LLM's own token embeddings: <vi_start> "0.5s" G1 <eof> "2.5s" G2 ... Gn <eov> <vi_end>.

The LLM is transformers' ``LlamaForCausalLM``, reused as is. ``input_ids`` are ordinary
token ids; each medium is a run of its placeholder id (``config.video_token_id`` /
``image_token_id``, kangaroo/model/tokens.py) as long as its block, written by the processor
(processing.py), and the embedding step writes the blocks into those runs in order. Marker
embeddings are learned vectors outside the vocabulary, so no text can produce them. The model
inherits ``GenerationMixin``: ``model.generate(**processor(...))`` encodes the media once, in
the prefill, and decodes with the KV cache.

Packing: ``segment_ids`` [B, L] (0 = padding, 1.. = sample) give position ids that
restart per sample and keep attention inside each sample (one causal SDPA call per
sample, ``attention.py``; a dense block-diagonal mask for other attention
implementations), so a packed row computes exactly what its samples compute alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig, GenerationMixin, LlamaForCausalLM, PreTrainedModel
from transformers.utils import ModelOutput

from ..compat import CACHE_ARG
from ..prompts import IGNORE_INDEX
from . import attention as packed_attention
from .config import TIME_LABEL_CHARS, KangarooConfig
from .patchify import SpatialTemporalPatchify
from .projector import build_projector
from .temporal import TemporalEmbedding
from .vision import EVAVisionTower

VI_START, EOF, EOV, VI_END = range(4)  # rows of ``markers``


def _output_class():
    """The output dataclass, its cache field named as this transformers version names it (compat.py)."""
    fields = [("loss", torch.Tensor | None, None), ("logits", torch.Tensor | None, None),
              (CACHE_ARG, object, None), ("loss_sum", torch.Tensor | None, None), ("n_tokens", int | None, None)]
    from dataclasses import field, make_dataclass

    cls = make_dataclass("KangarooOutput", [(n, t, field(default=d)) for n, t, d in fields], bases=(ModelOutput,))
    cls.__doc__ = """With labels: ``loss`` (mean over answer tokens), ``loss_sum`` and ``n_tokens`` (for a mean over a
    whole step); logits are computed only where a label is set and not returned. Without labels: ``logits``
    [B, logits_to_keep or L, vocab] and the KV cache (``cache``, or ``past_key_values`` before transformers 5.2x)."""
    cls.__module__ = __name__
    return cls


KangarooOutput = _output_class()


class KangarooForConditionalGeneration(PreTrainedModel, GenerationMixin):
    config_class = KangarooConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["Block", "LlamaDecoderLayer"]

    def __init__(self, config: KangarooConfig):
        super().__init__(config)
        v = config.vision
        d = config.text_config.hidden_size
        self.vision_tower = EVAVisionTower(v)
        self.temporal_embed = TemporalEmbedding(config.tpe, v.width, config.tpe_scale, config.tpe_max_seconds)
        self.patchify = SpatialTemporalPatchify(v.width, tuple(config.patchify_kernel))
        self.mm_projector = build_projector(config.projector_type, v.width, d)
        self.markers = nn.Parameter(torch.zeros(4, d))
        self.language_model = LlamaForCausalLM(config.text_config)
        if self.language_model.config._attn_implementation in (None, "sdpa"):
            # the same SDPA, plus a variable-length path for packed rows (kangaroo/model/attention.py)
            self.language_model.config._attn_implementation = packed_attention.NAME
        if config.tie_word_embeddings:
            self._tied_weights_keys = {"language_model.lm_head.weight": "language_model.model.embed_tokens.weight"}
        self.post_init()
        tc = config.text_config
        self.generation_config = GenerationConfig(bos_token_id=tc.bos_token_id, eos_token_id=tc.eos_token_id,
                                                  pad_token_id=getattr(tc, "pad_token_id", None))

    def switch_tpe(self, kind: str) -> None:
        """Change the temporal position embedding's kind in place (the tpe ablation forks here).

        Between sincos, index and none the learned gain carries over (or starts at one);
        a 'learned' table has no counterpart, so switching to or from it is refused."""
        if kind == self.config.tpe:
            return
        if "learned" in (kind, self.config.tpe):
            raise ValueError(f"cannot switch the temporal embedding from {self.config.tpe!r} to {kind!r}")
        old = self.temporal_embed
        new = TemporalEmbedding(kind, old.width, old.scale, old.max_seconds).to(self.markers.device)
        if hasattr(old, "gain") and hasattr(new, "gain"):
            new.gain.data.copy_(old.gain.data)
        self.temporal_embed, self.config.tpe = new, kind

    def set_time_labels(self, tokenizer) -> None:
        """Turn time labels on (with this tokenizer's ids for their characters) or off (None)."""
        if tokenizer is None:
            self.config.time_labels = None
            return
        ids = []
        for c in TIME_LABEL_CHARS:
            got = tokenizer.encode(c, add_special_tokens=False)
            if len(got) != 1:
                raise ValueError(f"time labels need {c!r} to be one token; this tokenizer gives {got}")
            ids.append(got[0])
        self.config.time_labels = ids

    def set_frames_per_slot(self, n: int | None) -> None:
        """Distinct frames per temporal slot (1: a slot per frame; None: the temporal kernel's)."""
        old, self.config.frames_per_slot = self.config.frames_per_slot, n
        try:
            self.config.validate_kangaroo()
        except ValueError:
            self.config.frames_per_slot = old
            raise

    # ---- weights -------------------------------------------------------------------------
    def _init_weights(self, module):
        if module is self.vision_tower:
            module.init_weights()
        elif isinstance(module, SpatialTemporalPatchify):
            module.reset_parameters()
        elif module is self.mm_projector:
            for m in module:
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
        elif module is self:
            nn.init.normal_(self.markers, std=0.02)
        # TemporalEmbedding initialises its own table; the LLM's modules keep Llama's init.

    def llm(self):
        """The ``LlamaForCausalLM`` itself, also when PEFT has wrapped it (LoRA layers live inside)."""
        lm = self.language_model
        return lm.get_base_model() if hasattr(lm, "get_base_model") else lm

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self.vision_tower.gradient_checkpointing = True
        lm = self.language_model  # transformers renamed it activation checkpointing (the old name warns)
        kw = gradient_checkpointing_kwargs or {"use_reentrant": False}
        if hasattr(lm, "activation_checkpointing_enable"):
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)

    def gradient_checkpointing_disable(self):
        self.vision_tower.gradient_checkpointing = False
        lm = self.language_model
        (getattr(lm, "activation_checkpointing_disable", None) or lm.gradient_checkpointing_disable)()

    activation_checkpointing_enable = gradient_checkpointing_enable
    activation_checkpointing_disable = gradient_checkpointing_disable

    # ---- video -> embeddings -------------------------------------------------------------
    def tower_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [T, 3, H, W] -> the tower's patch tokens [T, H/14, W/14, C], ``frame_chunk`` frames at a time
        (frames are independent here: a per-frame encoder cache can keep these)."""
        dtype = self.vision_tower.patch_embed.proj.weight.dtype
        c = max(1, self.config.frame_chunk)
        return torch.cat([self.vision_tower(pixels[s: s + c].to(dtype)) for s in range(0, pixels.shape[0], c)])

    def encode_video(self, pixels: torch.Tensor, timestamps: torch.Tensor,
                     features: torch.Tensor | None = None) -> torch.Tensor:
        """pixels [T, 3, H, W], timestamps [T] seconds -> [slots, tokens_per_slot, d].

        Frames go through the tower in chunks (a multiple of the temporal kernel), each
        chunk patchified and projected at once, so memory holds one chunk's features.
        ``features`` ([T, gh, gw, C], from ``tower_features``) skips the tower.
        """
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be [T, 3, H, W], got {tuple(pixels.shape)}")
        if timestamps.shape != (pixels.shape[0],):
            raise ValueError(f"need one timestamp per frame: {tuple(timestamps.shape)} vs {pixels.shape[0]} frames")
        kt = self.patchify.kernel[0]
        per_slot = self.config.slot_frames
        repeat = kt // per_slot  # > 1: each frame's features fill `repeat` places of the kernel
        chunk = self.video_chunk()
        dtype = self.vision_tower.patch_embed.proj.weight.dtype
        out = []
        for s in range(0, pixels.shape[0], chunk):
            px, ts = pixels[s : s + chunk].to(dtype), timestamps[s : s + chunk]
            feats = self.vision_tower(px) if features is None else features[s : s + chunk]  # [t, gh, gw, C]
            tpe = self.temporal_embed(ts.to(feats.device))
            if tpe is not None:
                if self.config.tpe == "index":  # index of the frame in the whole video
                    tpe = self.temporal_embed(torch.arange(s, s + len(ts), device=feats.device).float())
                feats = feats + tpe.to(feats.dtype)[:, None, None, :]
            if repeat > 1:
                feats = feats.repeat_interleave(repeat, dim=0)  # [t * repeat, gh, gw, C]
            x = self.patchify(feats)  # [t', h', w', C]
            out.append(self.mm_projector(x.flatten(1, 2)))  # [t', h'*w', d]
        return torch.cat(out, dim=0)

    def video_chunk(self) -> int:
        """Frames ``encode_video`` sends through the tower at once (a multiple of the frames per slot)."""
        per_slot = self.config.slot_frames
        return max(per_slot, self.config.frame_chunk // per_slot * per_slot)

    def tower_calls(self, frames: int) -> int:
        """How many times ``encode_video`` runs the vision tower on a medium of ``frames`` frames."""
        return -(-frames // self.video_chunk())

    def media_padding(self, n: int) -> torch.Tensor | None:
        """0 * the visual path on ``n`` blank one-frame media (one tower call each), or None for 0.
        Sharded training pads every rank to the same number of tower calls with it (the tower's
        blocks are FSDP units: train/distributed.py); adding it to the loss changes no value but
        gives every visual parameter a (zero) gradient, so the backward's collectives match too."""
        if n <= 0:
            return None
        p = self.config.vision.patch_size * 2
        dev = self.markers.device
        blank = (torch.zeros(1, 3, p, p, device=dev), torch.zeros(1, device=dev))
        return self.visual_rows([blank] * n).sum() * 0.0

    def video_block(self, slots: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """[S, P, d] -> [S*P + S + 2 (+ label tokens), d]: <vi_start> G1 <eof> ... Gn <eov> <vi_end>.

        ``timestamps`` (of the frames, [T]) are needed with time labels: [label_i] precedes G_i."""
        S, P, d = slots.shape
        m = self.markers.to(slots.dtype)
        sep = m[EOF].expand(S, 1, d).clone()
        sep[-1, 0] = m[EOV]
        body = torch.cat([slots, sep], dim=1)  # [S, P + 1, d]
        if self.config.time_labels is None:
            parts = [body.reshape(S * (P + 1), d)]
        else:
            if timestamps is None:
                raise ValueError("a model with time labels needs the frames' timestamps")
            labels = self.config.slot_labels(timestamps.tolist())
            if len(labels) != S:
                raise ValueError(f"{len(labels)} slot labels for {S} slots")
            ids = [torch.tensor(self.config.label_ids(s), device=slots.device) for s in labels]
            emb = self.get_input_embeddings()(torch.cat(ids)).to(slots.dtype).split([len(i) for i in ids])
            parts = [x for pair in zip(emb, body) for x in pair]
        return torch.cat([m[VI_START][None], *parts, m[VI_END][None]], dim=0)

    def visual_rows(self, videos: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor | None:
        """[(pixels, timestamps), ...] -> all video blocks concatenated [N, d]."""
        if not videos:
            return None
        return torch.cat([self.video_block(self.encode_video(p, t), t) for p, t in videos], dim=0)

    @staticmethod
    def split_media(pixel_values: torch.Tensor, frame_timestamps: torch.Tensor,
                    media_frames: torch.Tensor | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The processor's flat [sum T, ...] tensors -> [(pixels, timestamps)] per medium."""
        if frame_timestamps is None or frame_timestamps.shape[0] != pixel_values.shape[0]:
            raise ValueError("pixel_values need frame_timestamps, one per frame")
        sizes = [int(n) for n in media_frames] if media_frames is not None else [pixel_values.shape[0]]
        if sum(sizes) != pixel_values.shape[0] or min(sizes, default=1) < 1:
            raise ValueError(f"media_frames {sizes} do not add up to the {pixel_values.shape[0]} frames given")
        return list(zip(pixel_values.split(sizes), frame_timestamps.split(sizes)))

    def media_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, L] bool: the positions of media placeholders."""
        ids = [i for i in (self.config.video_token_id, self.config.image_token_id) if i is not None]
        if not ids:
            return torch.zeros_like(input_ids, dtype=torch.bool)
        return torch.isin(input_ids, torch.tensor(ids, device=input_ids.device))

    def dummy_visual_loss(self) -> torch.Tensor:
        """0 * the visual path on one blank frame: gives every visual parameter a (zero)
        gradient, which sharded training needs on a rank whose batch has no video."""
        return self.media_padding(1)

    # ---- sequences -----------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, visual: torch.Tensor | None) -> torch.Tensor:
        """input_ids [B, L] -> [B, L, d], the media blocks ``visual`` [N, d] written into the placeholder
        runs in order. With fewer placeholders than rows (one sequence whose start is in the KV cache),
        the last rows fill them: the uncached part of a sequence is always its end."""
        emb = self.get_input_embeddings()
        is_vis = self.media_mask(input_ids)
        x = emb(input_ids.masked_fill(is_vis, 0))  # placeholders may lie past the table: never looked up
        n = int(is_vis.sum())
        if n:
            if visual is None:
                raise ValueError(f"input_ids hold {n} media placeholder positions but no media was given")
            if n > visual.shape[0] or (n < visual.shape[0] and input_ids.shape[0] != 1):
                raise ValueError(f"{n} media placeholder positions for {visual.shape[0]} visual rows: the processor "
                                 "and the model disagree on the media's length (frames per slot, time labels?)")
            x = x.masked_scatter(is_vis[..., None], visual[visual.shape[0] - n:].to(x.dtype))
        return x

    @staticmethod
    def packing_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """segment_ids [B, L] -> (additive 4-D mask [B, 1, L, L], position_ids [B, L]).

        Position ids restart at 0 for each sample; attention stays inside a sample and is
        causal; padding (segment 0) attends only to itself so no row is empty.
        """
        B, L = segment_ids.shape
        same = segment_ids[:, :, None] == segment_ids[:, None, :]
        causal = torch.ones(L, L, dtype=torch.bool, device=segment_ids.device).tril()
        allowed = same & causal & (segment_ids[:, None, :] > 0)
        allowed |= torch.eye(L, dtype=torch.bool, device=segment_ids.device)
        mask = torch.zeros(B, 1, L, L, dtype=dtype, device=segment_ids.device)
        mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
        return mask, KangarooForConditionalGeneration.packed_positions(segment_ids)

    @staticmethod
    def packed_positions(segment_ids: torch.Tensor) -> torch.Tensor:
        """Position ids [B, L] that restart at 0 at the start of every sample."""
        B, L = segment_ids.shape
        starts = torch.ones_like(segment_ids, dtype=torch.bool)
        starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
        idx = torch.arange(L, device=segment_ids.device).expand(B, L)
        first = torch.cummax(torch.where(starts, idx, torch.zeros_like(idx)), dim=1).values
        return idx - first

    def forward(self, input_ids: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                frame_timestamps: torch.Tensor | None = None, media_frames: torch.Tensor | None = None,
                media_embeds: torch.Tensor | None = None, videos: list | None = None,
                attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                past_key_values=None, cache=None, labels: torch.Tensor | None = None,
                segment_ids: torch.Tensor | None = None,
                use_cache: bool | None = None, cache_position: torch.Tensor | None = None, logits_to_keep: int = 0,
                media_pad: int = 0, **kwargs) -> KangarooOutput:
        """Media come as the processor's ``pixel_values`` + ``frame_timestamps`` + ``media_frames``, as a
        list ``videos`` of (pixels [T, 3, H, W], timestamps [T]) (training), or already encoded as
        ``media_embeds`` [N, d] (every block in order, from ``visual_rows``: a video asked about many
        times is encoded once).

        With ``labels``: loss = mean over answer tokens (also ``loss_sum``, ``n_tokens``); logits are
        computed only where a label is set (a 22k-token sequence never materialises [L, vocab]).
        Without: logits for the last ``logits_to_keep`` positions (0 = all) and ``past_key_values``.
        ``segment_ids`` [B, L] (0 = padding) pack several samples in a row (module docstring).
        ``media_pad``: blank media run through the visual path after the real ones, before the LLM,
        their output times zero added to the loss (``media_padding``; sharded training only).
        """
        cache = cache if cache is not None else past_key_values  # the name depends on the version (compat.py)
        visual = media_embeds
        if visual is None and self.media_mask(input_ids).any():
            if pixel_values is not None:
                videos = self.split_media(pixel_values, frame_timestamps, media_frames)
            visual = self.visual_rows(videos or [])
        pad = self.media_padding(media_pad)  # here, in the same place on every rank: the collectives' order
        x = self.embed(input_ids, visual)
        llm = self.llm()
        extra = {}
        if segment_ids is not None:
            if llm.config._attn_implementation == packed_attention.NAME:  # no dense mask (attention.py)
                position_ids = self.packed_positions(segment_ids)
                extra["kangaroo_segments"] = packed_attention.segments_of(segment_ids)
                if x.is_cuda:  # one FlexAttention kernel per row; built once, shared by every layer
                    extra["kangaroo_block_mask"] = packed_attention.packed_block_mask(segment_ids)
            else:  # eager or another implementation: the dense block-diagonal mask
                attention_mask, position_ids = self.packing_mask(segment_ids, x.dtype)
        extra[CACHE_ARG] = cache
        out = llm.model(inputs_embeds=x, attention_mask=attention_mask, position_ids=position_ids,
                        use_cache=use_cache, cache_position=cache_position, **extra)
        h = out.last_hidden_state
        head = llm.lm_head
        if labels is None:
            h = h[:, -logits_to_keep:] if logits_to_keep else h
            return KangarooOutput(logits=head(h).float(), **{CACHE_ARG: getattr(out, CACHE_ARG)})
        tgt = labels[:, 1:]
        sel = tgt != IGNORE_INDEX
        n = int(sel.sum())
        if n == 0:
            zero = h.sum() * 0.0 + (0.0 if pad is None else pad)
            return KangarooOutput(loss=zero, loss_sum=zero, n_tokens=0)
        logits = head(h[:, :-1][sel]).float()
        loss_sum = F.cross_entropy(logits, tgt[sel], reduction="sum")
        if pad is not None:
            loss_sum = loss_sum + pad
        return KangarooOutput(loss=loss_sum / n, loss_sum=loss_sum, n_tokens=n)

    def prepare_inputs_for_generation(self, input_ids, pixel_values=None, frame_timestamps=None, media_frames=None,
                                      media_embeds=None, **kwargs):
        """transformers' own preparation; the media go along only to a step whose input holds their
        placeholders (the prefill, or the uncached rest of a prompt), never to decoding steps."""
        inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        ids = inputs.get("input_ids")
        if ids is not None and self.media_mask(ids).any():
            inputs.update(pixel_values=pixel_values, frame_timestamps=frame_timestamps, media_frames=media_frames,
                          media_embeds=media_embeds)
        return inputs


def count_parameters(model: nn.Module) -> dict[str, int]:
    parts = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_children()}
    parts["markers"] = model.markers.numel()
    parts["total"] = sum(p.numel() for p in model.parameters())
    return parts
