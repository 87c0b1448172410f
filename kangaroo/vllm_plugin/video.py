"""Our decoder and frame sampler as a vLLM video loader (imports vLLM).

vLLM's OpenAI server decodes a ``video_url`` in its API process with a loader from
``VIDEO_LOADER_REGISTRY`` (``opencv`` by default: ``num_frames`` frame *indices* spread by
``np.linspace``, metadata ``fps`` + ``frames_indices``). Our processor places frames by *time*
(``SamplingConfig``: the uniform sampler takes segment midpoints in seconds) and the TPE and
time labels read the seconds. The ``kangaroo`` loader registered here decodes with our own
``load_video`` (PyAV, seeking to presentation times) and hands vLLM the frames with their
presentation ``timestamps`` in the metadata, so ``vllm serve`` sees exactly the frames our
server sees for the same ``frames`` count:

    vllm serve DIR --media-io-kwargs '{"video": {"video_backend": "kangaroo", "num_frames": 16, "max_side": 896}}'

``max_side``: the decoder's resize bound, ``max(448, 2 * image_size)`` like our server
(``serve_media_io_kwargs`` computes the dict from a folder's config). Without the ``kangaroo``
backend the plugin still works (``layout.frame_timestamps`` turns ``frames_indices / fps`` into
seconds), but on vLLM's frames, not ours.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from vllm.multimodal.video import VIDEO_LOADER_REGISTRY, VideoLoader

from ..video import DecodeOptions, SamplingConfig, load_video

BACKEND = "kangaroo"


class KangarooVideoLoader(VideoLoader):
    """bytes of a video file -> (uint8 frames [T, H, W, 3], metadata with ``timestamps`` in seconds)."""

    @classmethod
    def load_bytes(cls, data: bytes, num_frames: int = -1, fps: float = -1, max_side: int | None = None,
                   sampler: str = "uniform", **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        if kwargs:
            raise ValueError(f"the kangaroo video loader takes num_frames, fps, max_side and sampler, "
                             f"not {sorted(kwargs)}")
        if fps and fps > 0:
            sampling = SamplingConfig(sampler="fps", fps=float(fps), max_frames=max(int(num_frames), 1)
                                      if num_frames and num_frames > 0 else 160)
        else:
            sampling = SamplingConfig(sampler=sampler, num_frames=int(num_frames) if num_frames and num_frames > 0 else 16)
        fd, path = tempfile.mkstemp(prefix="kg_vllm_", suffix=".video")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            frames = load_video(path, sampling, DecodeOptions(max_side=int(max_side) if max_side else None))
        finally:
            os.unlink(path)
        info, ts = frames.info, [float(t) for t in frames.timestamps]
        return frames.frames, {"timestamps": ts, "total_num_frames": int(info.num_frames), "fps": float(info.fps),
                               "duration": float(info.duration), "video_backend": BACKEND,
                               "frames_indices": [int(round(t * info.fps)) for t in ts], "do_sample_frames": False}


def register_loader() -> None:
    if BACKEND not in VIDEO_LOADER_REGISTRY.name2class:
        VIDEO_LOADER_REGISTRY.register(BACKEND)(KangarooVideoLoader)
