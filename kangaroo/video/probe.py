"""Probe a video file: what it is, without decoding more than one frame.

``probe(path)`` opens the container with PyAV, reads the stream headers and the
sample index, decodes the first frame (to prove the codec works and to read the
rotation metadata) and checks the result against ``VideoLimits``. Every failure is
a typed ``VideoError`` naming the file and the cause.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from dataclasses import dataclass

import av

from .errors import (
    EmptyVideoError,
    NotAVideoError,
    UnsupportedCodecError,
    VideoDecodeError,
    VideoError,
    VideoNotFoundError,
    VideoTooLargeError,
)

av.logging.set_level(av.logging.PANIC)  # errors reach us as exceptions, not log spam

# Demuxers FFmpeg uses for still images: a file they open is an image, not a video.
_IMAGE_FORMATS = ("image2", "_pipe", "gif_pipe", "apng")


@dataclass(frozen=True)
class VideoLimits:
    """Inputs beyond these are refused with ``VideoTooLargeError`` before decoding."""

    min_side: int = 2
    max_side: int = 8192
    max_pixels: int = 8192 * 4320  # 8K
    max_aspect: float = 20.0
    max_duration_s: float = 24 * 3600.0


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration: float  # seconds, of the video stream
    fps: float  # average frame rate
    variable_fps: bool
    num_frames: int
    num_frames_exact: bool  # True only when counted from a complete sample index; else estimated
    width: int  # after rotation metadata
    height: int
    rotation: int  # degrees counter-clockwise, as stored in the display matrix
    codec: str
    container: str
    has_audio: bool
    start_time: float  # seconds; frame timestamps we report are relative to it
    keyframes: int | None  # number of keyframes in the index, when there is one

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_path(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoNotFoundError(path, _missing_reason(path))
    if os.path.isdir(path):
        raise NotAVideoError(path, "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise NotAVideoError(path, "file is empty (0 bytes)")
    return path


def _missing_reason(path: str) -> str:
    """Why ``os.path.exists`` said no: a symlink loop, a dangling symlink, or no such file."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop (too many levels of symbolic links)"
        if e.errno == errno.EACCES:
            return "permission denied (cannot look up the path)"
    if os.path.islink(path):
        return f"dangling symlink (its target {os.readlink(path)!r} does not exist)"
    return "no such file"


def open_container(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise NotAVideoError(path, f"not a readable video container, or truncated/corrupt ({_ffmpeg_msg(e)})") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise NotAVideoError(path, f"cannot open: {e}") from None


def _ffmpeg_msg(e: Exception) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return msg.split(";")[0].strip()


def video_stream(container, path: str):
    fmt = container.format.name
    if not container.streams.video:
        if container.streams.audio:
            raise NotAVideoError(path, "audio-only file: it has no video stream")
        raise NotAVideoError(path, f"no video stream (container format {fmt!r})")
    if any(tag in fmt for tag in _IMAGE_FORMATS):
        raise NotAVideoError(path, f"is a still image ({fmt}), not a video")
    stream = container.streams.video[0]
    if stream.codec_context is None or stream.codec_context.name in (None, "", "none"):
        raise UnsupportedCodecError(path, "video stream has a codec FFmpeg cannot decode")
    return stream


def stream_index(stream):
    """The stream's sample index (``Stream.index_entries``, PyAV >= 16), or None: PyAV 12-15 has no
    per-stream index, and a stream without one is probed and decoded as Matroska's are (the frame
    count estimated from duration x fps, keyframes found while decoding). lmms-eval 0.7 pins av < 16."""
    return getattr(stream, "index_entries", None)


def _seconds(value, time_base) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def probe(path: str | os.PathLike, limits: VideoLimits = VideoLimits(), frame_fps: float | None = None) -> VideoInfo:
    """``path``: a video file, or a folder of image frames (``frames.py``; ``frame_fps`` overrides its stated rate)."""
    if os.path.isdir(path):
        from .frames import probe_frame_folder

        return probe_frame_folder(os.fspath(path), limits, frame_fps)
    path = check_path(path)
    container = open_container(path)
    try:
        return _probe_open(path, container, limits)
    finally:
        container.close()


def _probe_open(path: str, container, limits: VideoLimits) -> VideoInfo:
    stream = video_stream(container, path)
    tb = stream.time_base
    start = _seconds(stream.start_time, tb) or 0.0

    # Frame rate: average over the stream, falling back to the guessed (r_frame) rate.
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0

    # Duration: the stream's own, else the container's.
    duration = _seconds(stream.duration, tb)
    if not duration and container.duration:
        duration = container.duration / 1e6 - start
    duration = float(duration or 0.0)

    index = stream_index(stream)
    keyframes = None
    variable = False
    n_frames, exact = 0, False
    if index is not None and len(index) > 0 and _complete_index(path, index, duration, fps):
        # A per-frame sample index (mp4/mov, avi) whose every sample lies inside the file.
        n_frames, exact = len(index), True
        keyframes = sum(1 for e in index if e.is_keyframe)
        stamps = sorted(e.timestamp for e in index)
        deltas = {b - a for a, b in zip(stamps, stamps[1:])}
        variable = len(deltas) > 1 and (max(deltas) - min(deltas)) > 0.1 * max(deltas)
    elif duration > 0 and fps > 0:
        # No trustworthy count (a keyframe-only or partial index as Matroska/WebM build while
        # reading, a header count, a truncated file): estimate it and say so.
        n_frames = int(round(duration * fps))
    elif stream.frames:
        n_frames = int(stream.frames)  # the header's claim, unverified
    elif index is not None and len(index) > 0:
        n_frames = len(index)
    if not variable and stream.guessed_rate and stream.average_rate:
        variable = abs(float(stream.guessed_rate) - float(stream.average_rate)) > 0.01 * fps
    if duration <= 0 and n_frames > 0 and fps > 0:
        duration = n_frames / fps

    if n_frames <= 0 or duration <= 0:
        raise EmptyVideoError(path, "video stream has no frames (zero duration)")
    if duration > limits.max_duration_s:
        raise VideoTooLargeError(path, f"duration {duration:.0f}s exceeds the limit of {limits.max_duration_s:.0f}s")

    width, height = stream.codec_context.width, stream.codec_context.height
    _check_dims(path, width, height, limits)
    rotation = _first_frame_rotation(path, container, stream)
    if rotation % 180:
        width, height = height, width
    codec = stream.codec_context.name
    return VideoInfo(
        path=path,
        duration=duration,
        fps=fps,
        variable_fps=bool(variable),
        num_frames=n_frames,
        num_frames_exact=exact,
        width=int(width),
        height=int(height),
        rotation=int(rotation),
        codec=codec,
        container=container.format.name,
        has_audio=bool(container.streams.audio),
        start_time=start,
        keyframes=keyframes,
    )


def _complete_index(path: str, index, duration: float, fps: float) -> bool:
    """True when the index lists every frame of the stream: about duration * fps entries
    (not just keyframes, not just the part demuxed so far) and none beyond the end of the
    file (a truncated mp4 keeps its full sample table but not the samples)."""
    n = len(index)
    if duration > 0 and fps > 0 and n < 0.75 * duration * fps:
        return False
    size = os.path.getsize(path)
    last = index[n - 1]
    ends = [last.pos + last.size] if last.pos >= 0 else []
    if ends and ends[0] <= size:  # samples are mostly in file order: check the rest only if the last fits
        ends = [e.pos + e.size for e in index if e.pos >= 0]
    return all(end <= size for end in ends)


def _check_dims(path: str, width: int, height: int, limits: VideoLimits) -> None:
    if not width or not height or min(width, height) < limits.min_side:
        raise VideoTooLargeError(path, f"absurd dimensions {width}x{height}")
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise VideoTooLargeError(
            path, f"dimensions {width}x{height} exceed the limit (side <= {limits.max_side}, pixels <= {limits.max_pixels})"
        )
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise VideoTooLargeError(path, f"absurd aspect ratio {width}x{height} (limit {limits.max_aspect}:1)")


def _first_frame_rotation(path: str, container, stream) -> int:
    """Decode the first frame: proves the codec works and reads the display rotation."""
    try:
        for frame in container.decode(stream):
            return int(frame.rotation or 0) % 360
    except av.error.DecoderNotFoundError:
        raise UnsupportedCodecError(path, f"no decoder for codec {stream.codec_context.name!r}") from None
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"first frame failed to decode ({_ffmpeg_msg(e)})") from None
    raise EmptyVideoError(path, "video stream has no decodable frames")


__all__ = ["VideoInfo", "VideoLimits", "VideoError", "probe"]
