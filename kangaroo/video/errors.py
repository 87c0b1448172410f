"""Typed errors for video input. Every message names the file and the cause."""

from __future__ import annotations

import os


class VideoError(Exception):
    """Base class: something is wrong with a video input. ``reason`` is a short code."""

    reason = "video_error"

    def __init__(self, path: str | os.PathLike, message: str):
        self.path = os.fspath(path)
        self.detail = message
        super().__init__(f"{self.path}: {message}")

    def __reduce__(self):  # picklable across processes (decode_isolated, executors)
        return (type(self), (self.path, self.detail))


class VideoNotFoundError(VideoError, FileNotFoundError):
    reason = "not_found"


class NotAVideoError(VideoError):
    """A directory, an empty file, an image, text, random bytes or an audio-only file."""

    reason = "not_a_video"


class VideoDecodeError(VideoError):
    """The container or a frame could not be decoded (corrupt or truncated data)."""

    reason = "decode_error"


class UnsupportedCodecError(VideoError):
    reason = "unsupported_codec"


class EmptyVideoError(VideoError):
    """The video stream has no frames or zero duration."""

    reason = "empty_video"


class VideoTooLargeError(VideoError):
    """Absurd or oversized dimensions or duration, beyond the configured limits."""

    reason = "too_large"


class VideoTimeoutError(VideoError, TimeoutError):
    reason = "timeout"
