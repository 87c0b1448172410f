"""What the vLLM plugin computes without vLLM (importable, and unit-tested, in ``make test``).

vLLM tokenizes a prompt with ONE placeholder token per video and expands it itself
("prompt replacement"). The expansion must give exactly the run our processor writes
(``KangarooProcessor``: one placeholder id per embedding position of the video's block,
``<vi_start> [label] G1 <eof> ... [label] Gn <eov> <vi_end>``, ``kangaroo/model/tokens.py``),
since the model writes the block into that run. The run's length is the processor's
``VisualLayout.length``: one place for the count.

Timestamps: vLLM hands a video to the plugin as (frames [T, H, W, 3] uint8, metadata). The
frames' times in seconds are ``metadata["timestamps"]`` when the caller gives them (ours:
``kangaroo_video_item`` passes the decoder's presentation times), else ``frames_indices / fps``
(what vLLM's own video loaders record for a ``video_url``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..video.decode import Frames


def frame_timestamps(metadata: dict | None, num_frames: int) -> list[float]:
    """The seconds each of the ``num_frames`` frames was shown at, from vLLM's video metadata."""
    if not metadata:
        raise ValueError("a Kangaroo video needs its metadata (timestamps, or fps + frames_indices)")
    if metadata.get("timestamps") is not None:
        ts = [float(t) for t in metadata["timestamps"]]
    elif metadata.get("fps") and metadata.get("frames_indices") is not None:
        fps = float(metadata["fps"])
        ts = [int(i) / fps for i in metadata["frames_indices"]]
    else:
        raise ValueError(f"video metadata has neither timestamps nor fps + frames_indices: {sorted(metadata)}")
    if len(ts) != num_frames:
        raise ValueError(f"video metadata gives {len(ts)} timestamps for {num_frames} frames")
    return ts


def video_features(processor, frames: np.ndarray, timestamps: list[float]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """uint8 frames [T, H, W, 3] + their timestamps -> (pixels [T, 3, S, S], timestamps [T], run length),
    through our processor's own resize / normalisation and layout."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"video frames must be [T, H, W, 3], got {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    ts = np.asarray(timestamps, dtype=np.float64)
    return processor.features(Frames(arr, ts, list(ts), None, {}))


def serve_media_io_kwargs(config, num_frames: int) -> dict:
    """``vllm serve --media-io-kwargs`` for a folder's config: our loader (video.py) at our server's
    decode size, ``num_frames`` frames placed by time, as ``kangaroo serve`` decodes them."""
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return {"video": {"video_backend": "kangaroo", "num_frames": int(num_frames),
                      "max_side": max(448, 2 * int(config.vision.image_size))}}


def placeholder_run(video_token_id: int, length: int) -> list[int]:
    """The replacement of one video placeholder: ``length`` copies of it (every position an embedding)."""
    if length < 1:
        raise ValueError(f"a video block has at least one position, got {length}")
    return [int(video_token_id)] * int(length)


def expand_placeholders(ids: list[int], video_token_id: int, lengths: list[int]) -> list[int]:
    """What vLLM's prompt replacement does to a prompt: the k-th placeholder -> its run of ``lengths[k]``."""
    out, k = [], 0
    for t in ids:
        if t != video_token_id:
            out.append(t)
            continue
        if k >= len(lengths):
            raise ValueError(f"the prompt holds more video placeholders than the {len(lengths)} videos given")
        out.extend(placeholder_run(video_token_id, lengths[k]))
        k += 1
    if k != len(lengths):
        raise ValueError(f"{len(lengths)} videos given, the prompt holds {k} placeholders")
    return out


def replace_subsequence(ids: list[int], seq: list[int], new: list[int]) -> list[int]:
    """Every non-overlapping occurrence of ``seq`` in ``ids`` -> ``new``."""
    out, i, n = [], 0, len(seq)
    while i < len(ids):
        if n and ids[i:i + n] == seq:
            out.extend(new)
            i += n
        else:
            out.append(ids[i])
            i += 1
    return out


def kangaroo_prompt(processor, conversation: list[dict], frames: list[Frames],
                    add_generation_prompt: bool = True) -> tuple[list[int], list[tuple[np.ndarray, dict]]]:
    """A conversation (our chat format, media parts in reading order) and its decoded videos ->
    (prompt token ids with one placeholder per video, vLLM ``multi_modal_data["video"]`` items).
    The same template and the same frames as ``processor.apply_chat_template``, so vLLM sees what
    ``model.generate`` sees."""
    ids = processor.renderer.render(conversation, [1] * len(frames), add_generation_prompt)
    items = [(np.asarray(f.frames), {"timestamps": [float(t) for t in f.timestamps], "total_num_frames": len(f)})
             for f in frames]
    return ids, items
