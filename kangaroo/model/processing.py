"""``KangarooProcessor``: a video and a question in, the model's tensors out.

Everything that turns media and text into tensors lives here (the model only sees tensors):
frame sampling (uniform / fps / range / token budget, ``kangaroo.video.SamplingConfig``),
decoding, resize and CLIP normalisation, timestamps, and the chat template with each
medium's placeholder run where the user put it (``kangaroo.prompts.ChatRenderer``).

    processor = KangarooProcessor.from_pretrained(model_dir)      # or AutoProcessor
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video", "video": "clip.mp4"},
                                      {"type": "text", "text": "What happens?"}]}],
        num_frames=16)
    out = model.generate(**inputs, max_new_tokens=64)
    processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

Output (a ``BatchFeature``), for B conversations holding M media of T_1..T_M frames:

    input_ids         [B, L]        token ids; medium k is a run of its placeholder id, as long
                                    as its block (markers and time labels included)
    attention_mask    [B, L]        left padding when B > 1
    pixel_values      [sum T, 3, S, S]  CLIP-normalised frames of every medium, in reading order
    frame_timestamps  [sum T]       seconds each frame was shown at
    media_frames      [M]           frames per medium (an image is a one-frame medium at t=0)
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

from ..prompts import MEDIA_TYPES, ChatRenderer, media_parts
from ..video import DecodeOptions, Frames, SamplingConfig, load_video
from ..video.preprocess import PreprocessConfig, preprocess_frames
from .config import VisualLayout
from .tokens import ensure_media_tokens


class KangarooProcessor(ProcessorMixin):
    attributes = ["tokenizer"]
    tokenizer_class = "AutoTokenizer"

    def __init__(self, tokenizer=None, chat_template=None, image_size: int = 448, patch_size: int = 14,
                 patchify_kernel=(2, 2, 2), slot_frames: int = 2, time_labels: bool = False, num_frames: int = 16,
                 resize: str = "square", **kwargs):
        super().__init__(tokenizer, chat_template=chat_template)
        self.image_size, self.patch_size = int(image_size), int(patch_size)
        self.patchify_kernel, self.slot_frames = [int(k) for k in patchify_kernel], int(slot_frames)
        self.time_labels, self.num_frames, self.resize = bool(time_labels), int(num_frames), resize
        self.media_ids = ensure_media_tokens(self.tokenizer)
        self.video_token_id, self.image_token_id = self.media_ids["video"], self.media_ids["image"]
        self.renderer = ChatRenderer(self.tokenizer, self.media_ids)

    @classmethod
    def from_config(cls, config, tokenizer, **kw) -> "KangarooProcessor":
        """The processor that matches a ``KangarooConfig`` (its layout, resolution and placeholders);
        the config's placeholder ids are set from the tokenizer when absent."""
        lay = config.layout()
        proc = cls(tokenizer, image_size=config.vision.image_size, patch_size=lay.patch_size,
                   patchify_kernel=lay.patchify_kernel, slot_frames=lay.slot_frames, time_labels=lay.time_labels, **kw)
        for key, tid in (("video_token_id", proc.video_token_id), ("image_token_id", proc.image_token_id)):
            if getattr(config, key) is None:
                setattr(config, key, tid)
            elif getattr(config, key) != tid:
                raise ValueError(f"the model's {key} is {getattr(config, key)}, its tokenizer's placeholder is {tid}")
        return proc

    def sync(self, config) -> None:
        """Follow a model whose layout changed in place (time labels, frames per slot)."""
        lay = config.layout()
        self.slot_frames, self.time_labels, self.patchify_kernel = lay.slot_frames, lay.time_labels, lay.patchify_kernel

    @property
    def layout(self) -> VisualLayout:
        return VisualLayout(self.patch_size, self.patchify_kernel, self.slot_frames, self.time_labels)

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(size=self.image_size, mode=self.resize, patch=self.patch_size)

    # ---- media -----------------------------------------------------------------------------
    def sampling(self, sampling: SamplingConfig | None = None, num_frames: int | None = None) -> SamplingConfig:
        if sampling is not None:
            return sampling
        return SamplingConfig(num_frames=int(num_frames or self.num_frames))

    def load_frames(self, medium, kind: str = "video", sampling: SamplingConfig | None = None) -> Frames:
        """A path (video or image file), ``Frames``, a PIL image, or uint8 frames [T, H, W, 3] -> ``Frames``."""
        from ..video.image import is_image_file, load_image

        max_side = max(self.image_size * 2, 448)
        if isinstance(medium, Frames):
            return medium
        if isinstance(medium, (str, bytes)) or hasattr(medium, "__fspath__"):
            path = str(medium)
            if kind == "image" or is_image_file(path):
                return load_image(path, max_side)
            return load_video(path, self.sampling(sampling), DecodeOptions(max_side=max_side))
        if hasattr(medium, "convert"):  # a PIL image
            arr = np.asarray(medium.convert("RGB"))[None]
        else:
            arr = np.asarray(medium)
            arr = arr[None] if arr.ndim == 3 else arr
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [T, H, W, 3] (or [H, W, 3]), got {arr.dtype} {arr.shape}")
        ts = np.zeros(len(arr)) if len(arr) == 1 else np.arange(len(arr), dtype=np.float64)
        return Frames(arr, ts, list(ts), None, {})

    def features(self, frames: Frames) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(pixels [T, 3, S, S], timestamps [T], embedding positions of its block)."""
        pixels = preprocess_frames(frames.frames, self.preprocess)
        ts = torch.as_tensor(np.asarray(frames.timestamps, dtype=np.float64), dtype=torch.float32)
        n = self.layout.length(pixels.shape[0], pixels.shape[2], pixels.shape[3], ts.tolist())
        return pixels, ts, n

    # ---- conversations -----------------------------------------------------------------------
    def apply_chat_template(self, conversation, add_generation_prompt: bool = True, tokenize: bool = True,
                            return_dict: bool = True, sampling: SamplingConfig | None = None,
                            num_frames: int | None = None, return_tensors: str = "pt", **kw):
        """One conversation (a list of messages) or a batch of them -> ``BatchFeature`` (module doc).
        Media parts carry their source under their type's key: ``{"type": "video", "video": path}``."""
        batch = conversation if conversation and isinstance(conversation[0], list) else [conversation]
        if not tokenize:
            raise ValueError("KangarooProcessor renders straight to token ids (tokenize=True)")
        rows, media = [], []
        for conv in batch:
            lengths = []
            for m in conv:
                for p in media_parts(m):
                    if p["type"] in MEDIA_TYPES:
                        src = p.get(p["type"], p.get("path", p.get("url")))
                        if src is None:
                            raise ValueError(f"a {p['type']} part needs its source under {p['type']!r}")
                        px, ts, n = self.features(self.load_frames(src, p["type"], self.sampling(sampling, num_frames)))
                        media.append((px, ts))
                        lengths.append(n)
            rows.append(self.renderer.render(conv, lengths, add_generation_prompt))
        return self.pack(rows, media)

    def __call__(self, text=None, videos=None, images=None, sampling: SamplingConfig | None = None,
                 num_frames: int | None = None, return_tensors: str = "pt", **kw):
        """Trusted text already rendered with the chat template, with one placeholder token string
        per medium (``processor.video_token`` / ``image_token``) where it goes; ``videos`` and
        ``images`` in the order their placeholders appear. Text with control tokens in it is taken as
        meant: for user text use ``apply_chat_template``, which keeps user text plain."""
        if text is None:
            raise ValueError("give text (with placeholders) or use apply_chat_template(messages)")
        texts = [text] if isinstance(text, str) else list(text)
        queues = {"video": list(videos or []), "image": list(images or [])}
        rows, media = [], []
        for t in texts:
            ids = []
            for tid in self.tokenizer.encode(t, add_special_tokens=False):
                kind = "video" if tid == self.video_token_id else "image" if tid == self.image_token_id else None
                if kind is None:
                    ids.append(tid)
                    continue
                if not queues[kind]:
                    raise ValueError(f"the text has more {kind} placeholders than {kind}s given")
                px, ts, n = self.features(self.load_frames(queues[kind].pop(0), kind, self.sampling(sampling, num_frames)))
                media.append((px, ts))
                ids.extend([tid] * n)
            rows.append(ids)
        left = [k for k, q in queues.items() if q]
        if left:
            raise ValueError(f"more {' and '.join(left)}s given than placeholders in the text")
        return self.pack(rows, media)

    def pack(self, rows: list[list[int]], media: list[tuple[torch.Tensor, torch.Tensor]]) -> BatchFeature:
        """Token rows (left-padded into one batch) and media -> ``BatchFeature``."""
        L = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), L), pad, dtype=torch.long)
        mask = torch.zeros(len(rows), L, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, L - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, L - len(r):] = 1
        data = {"input_ids": ids, "attention_mask": mask}
        if media:
            sizes = {tuple(px.shape[2:]) for px, _ in media}
            if len(sizes) > 1:
                raise ValueError(f"media of different frame sizes {sorted(sizes)} in one batch")
            data["pixel_values"] = torch.cat([px for px, _ in media])
            data["frame_timestamps"] = torch.cat([ts for _, ts in media])
            data["media_frames"] = torch.tensor([len(ts) for _, ts in media], dtype=torch.long)
        return BatchFeature(data)

    @property
    def video_token(self) -> str:
        return self.tokenizer.convert_ids_to_tokens(self.video_token_id)

    @property
    def image_token(self) -> str:
        return self.tokenizer.convert_ids_to_tokens(self.image_token_id)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "pixel_values", "frame_timestamps", "media_frames"]
