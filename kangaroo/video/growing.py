"""Frames from a video that is still being written (or any live stream PyAV opens).

``GrowingFile`` is a read-only file object over a file another process is appending to. A
read that finds no new bytes waits (polling) for more, up to ``idle_timeout_s``; only after
that long without growth does it return ``b""``, which the demuxer takes as the end of the
stream. So the demuxer never sees the file end in the middle of a packet the writer has not
finished: it waits for the packet's remaining bytes like a socket read would. No read waits
longer than the timeout (``stop()`` ends a wait at once), so nothing blocks forever.

It works for formats that can be read while written: MPEG-TS and Matroska/WebM as muxers
write them live, fragmented MP4; not a plain MP4, whose index is written at the end.

``StreamReader`` opens such a file (or a URL / ``pipe:`` PyAV opens itself), decodes it as
it arrives and yields the frames a fixed-rate sampler picks, the ones that ``kangaroo ask
--fps F`` picks from the finished file: the frame shown at ``(i + 0.5) / F`` seconds after
the stream's start, with the frame's own presentation time as its timestamp. ``ended`` and
``end_reason`` report how the stream finished ("end of stream", "no new data for Ns",
"stopped", or a decode error); ``finish()`` says the writer is done (read the rest, then end),
``stop()`` ends it at once.

Latency: an MPEG-TS demuxer passes a frame on when the next one starts, and the H.264 parser
likewise, so a frame is seen about two source frames after it is written; Matroska's demuxer
first reads about 20 frames to probe the stream.

    reader = StreamReader("live.ts", fps=1.0, idle_timeout_s=10)
    for t, rgb in reader.frames():      # t: seconds, rgb: uint8 [H, W, 3]
        ...
"""

from __future__ import annotations

import io
import os
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import av
import numpy as np

from .errors import VideoDecodeError, VideoNotFoundError


@dataclass
class GrowingConfig:
    fps: float = 1.0  # frames sampled per second of video
    idle_timeout_s: float = 10.0  # no new bytes for this long: the stream has ended
    poll_s: float = 0.05  # how often a waiting read looks for new bytes
    open_timeout_s: float = 10.0  # how long to wait for the file to appear
    max_side: int | None = 448  # decoded frames are downscaled so the longer side is at most this
    probe_bytes: int = 4096  # the demuxer starts after this much (FFmpeg's default 5 MB is minutes of a slow stream)

    def __post_init__(self) -> None:
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.idle_timeout_s <= 0 or self.poll_s <= 0 or self.open_timeout_s < 0 or self.probe_bytes < 32:
            raise ValueError("idle_timeout_s and poll_s must be > 0, open_timeout_s >= 0, probe_bytes >= 32")


class GrowingFile(io.RawIOBase):
    """Read-only, non-seekable view of a file that is still growing (module docstring)."""

    def __init__(self, path: str, idle_timeout_s: float = 10.0, poll_s: float = 0.05, open_timeout_s: float = 0.0,
                 stop: threading.Event | None = None):
        super().__init__()
        self.path, self.idle_timeout_s, self.poll_s = str(path), float(idle_timeout_s), float(poll_s)
        self.stop_event = stop or threading.Event()
        deadline = time.monotonic() + open_timeout_s
        while not os.path.exists(self.path):
            if time.monotonic() >= deadline or self.stop_event.is_set():
                raise VideoNotFoundError(self.path, "no such file (waited for it to appear)")
            self.stop_event.wait(poll_s)
        if os.path.isdir(self.path):
            raise VideoNotFoundError(self.path, "is a directory, not a video file")
        self._f = open(self.path, "rb")
        self.complete = threading.Event()  # the writer is done: the next read that finds nothing ends it
        self.bytes_read = 0
        self.timed_out = False  # the last read gave up after idle_timeout_s without new bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        waited_since = time.monotonic()
        while True:
            n = self._f.readinto(buf)
            if n:
                self.bytes_read += n
                return n
            if self.stop_event.is_set() or self.complete.is_set():
                return 0
            if time.monotonic() - waited_since >= self.idle_timeout_s:
                self.timed_out = True
                return 0
            self.stop_event.wait(self.poll_s)

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def is_url(source: str) -> bool:
    return "://" in source or source.startswith("pipe:")


class StreamReader:
    """Sampled frames of a growing file or live source, as they arrive (module docstring)."""

    def __init__(self, source: str, config: GrowingConfig | None = None, **kw):
        self.source = str(source)
        self.config = config or GrowingConfig(**kw)
        self.stop_event = threading.Event()
        self.ended = False
        self.end_reason: str | None = None
        self.decoded = 0  # frames decoded (all of them, not only the sampled ones)
        self.last_time = 0.0  # presentation time of the last decoded frame (seconds)
        self._file: GrowingFile | None = None
        if not is_url(self.source):  # a file: it must exist (or appear) now
            self._file = GrowingFile(self.source, self.config.idle_timeout_s, self.config.poll_s,
                                     self.config.open_timeout_s, self.stop_event)

    def stop(self) -> None:
        """End the stream now: a waiting read returns at once and ``frames()`` finishes."""
        self.stop_event.set()

    def finish(self) -> None:
        """The writer is done: read what the file holds, then end (without the idle timeout)."""
        if self._file is not None:
            self._file.complete.set()

    def _open(self):
        try:
            # a short probe: the demuxer must not wait for seconds of a live stream before the first frame
            opts = {"probesize": str(self.config.probe_bytes), "analyzeduration": "200000"}
            if self._file is not None:
                return av.open(self._file, "r", options=opts)
            return av.open(self.source, "r", options=opts, timeout=self.config.idle_timeout_s)
        except av.error.FFmpegError as e:
            raise VideoDecodeError(self.source, f"cannot open the stream ({e})") from None

    def _size(self, w: int, h: int) -> tuple[int, int]:
        m = self.config.max_side  # as decode.output_size: the longer side at most max_side
        if m and max(w, h) > m:
            s = m / max(w, h)
            return max(2, round(w * s)), max(2, round(h * s))
        return w, h

    def _decoded(self, container, stream) -> Iterator:
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    yield frame
                if self.stop_event.is_set():
                    self.end_reason = "stopped"
                    return
        except av.error.EOFError:
            pass
        except av.error.FFmpegError as e:
            self.end_reason = f"decode error: {e}"

    def frames(self) -> Iterator[tuple[float, np.ndarray]]:
        """(timestamp s, uint8 RGB [H, W, 3]) of each sampled frame, in order, until the stream ends."""
        step = 1.0 / self.config.fps
        try:
            if self.stop_event.is_set():
                self.end_reason = "stopped"
                return
            container = self._open()
        except BaseException:
            self.ended, self.end_reason = True, self.end_reason or "could not open"
            raise
        try:
            if not container.streams.video:
                raise VideoDecodeError(self.source, "the stream has no video track")
            stream = container.streams.video[0]
            stream.codec_context.thread_type = "SLICE"  # frame threads would hold back frames (latency)
            tb, t0 = stream.time_base, None
            scaler = av.video.reformatter.VideoReformatter()
            k, prev, prev_t, frame_dur = 0, None, None, None  # k: next sample; prev: last frame seen
            for frame in self._decoded(container, stream):
                if frame.pts is None:
                    continue
                if t0 is None:
                    t0 = stream.start_time if stream.start_time is not None else frame.pts
                t = float((frame.pts - t0) * tb)
                if prev_t is not None and t <= prev_t:
                    continue  # duplicate or out-of-order timestamp: keep the first
                self.decoded += 1
                if prev_t is not None:
                    frame_dur = t - prev_t
                # targets before this frame's time were on screen during ``prev``
                while (k + 0.5) * step < t and prev is not None:
                    yield prev_t, prev
                    k += 1
                w, h = self._size(frame.width, frame.height)
                prev = scaler.reformat(frame, width=w, height=h, format="rgb24").to_ndarray()
                prev_t, self.last_time = t, t
                while (k + 0.5) * step < t:  # the first frame comes after the first target(s)
                    yield prev_t, prev
                    k += 1
            # the last frame is on screen until its end
            end = prev_t + (frame_dur or 0.0) if prev_t is not None else 0.0
            while prev is not None and (k + 0.5) * step < end - 1e-9:
                yield prev_t, prev
                k += 1
            if self.end_reason is None:
                timed_out = self._file is not None and self._file.timed_out
                self.end_reason = (f"no new data for {self.config.idle_timeout_s:g}s" if timed_out else
                                   "stopped" if self.stop_event.is_set() else "end of stream")
        finally:
            self.ended = True
            container.close()

    def close(self) -> None:
        self.stop()
        if self._file is not None:
            self._file.close()
