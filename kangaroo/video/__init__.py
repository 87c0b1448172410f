"""Video input: probe, sample, decode, preprocess."""

from .decode import BACKENDS, DecodeOptions, Frames, decode_frames, decode_isolated, load_video
from .errors import (
    EmptyVideoError,
    NotAVideoError,
    UnsupportedCodecError,
    VideoDecodeError,
    VideoError,
    VideoNotFoundError,
    VideoTimeoutError,
    VideoTooLargeError,
)
from .probe import VideoInfo, VideoLimits, probe
from .sampling import COUNT_SAMPLERS, SAMPLERS, SamplingConfig, sample_timestamps

__all__ = [
    "BACKENDS", "DecodeOptions", "Frames", "decode_frames", "decode_isolated", "load_video",
    "EmptyVideoError", "NotAVideoError", "UnsupportedCodecError", "VideoDecodeError", "VideoError",
    "VideoNotFoundError", "VideoTimeoutError", "VideoTooLargeError", "VideoInfo", "VideoLimits", "probe",
    "COUNT_SAMPLERS", "SAMPLERS", "SamplingConfig", "sample_timestamps",
]
