"""Decode the frames at given timestamps, without decoding the whole file.

The PyAV decoder plans its work from the container's sample index: before each
requested frame it seeks only when the last keyframe before that frame lies ahead
of the current decode position (seeking then never costs more decoding than going
on); otherwise it keeps decoding sequentially. Sparse sampling therefore becomes a
series of keyframe seeks and dense sampling one sequential pass, chosen per gap.
Without an index it falls back to an estimate of the keyframe interval.

Only the requested frames are converted to RGB (and resized, inside swscale), so
memory is bounded by the frames kept. A deadline is checked after every packet;
``decode_isolated`` runs the decode in a child process that is killed on timeout,
for inputs that might hang inside native code.

Backends register by name in ``BACKENDS``: ``pyav`` (default), ``opencv`` and
``decord`` (each only when its package is installed). A folder of image frames
(``frames.py``) is read by its own decoder whatever the backend.
"""

from __future__ import annotations

import bisect
import dataclasses
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import av
import numpy as np

from ..registry import Registry
from .errors import UnsupportedCodecError, VideoDecodeError, VideoError, VideoTimeoutError
from .frames import FRAMES_CONTAINER, decode_frame_folder
from .probe import (VideoInfo, VideoLimits, _ffmpeg_msg, check_path, open_container, probe, stream_index,
                    video_stream)
from .sampling import CONTENT_SAMPLERS, SamplingConfig, sample_timestamps


@dataclass
class DecodeOptions:
    backend: str = "pyav"
    timeout_s: float | None = 120.0  # per video; None disables the deadline
    max_side: int | None = None  # resize so that the longer side is at most this (keeps aspect)
    size: tuple[int, int] | None = None  # exact (width, height); overrides max_side
    mode: str = "auto"  # auto | seek | sequential
    threads: int = 0  # 0 = FFmpeg's choice
    limits: VideoLimits = field(default_factory=VideoLimits)
    frame_fps: float | None = None  # a folder of frames: its rate, when its name does not state one (frames.py)

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "seek", "sequential"):
            raise ValueError(f"mode must be auto, seek or sequential, got {self.mode!r}")
        if self.size is not None:
            self.size = (int(self.size[0]), int(self.size[1]))


@dataclass
class Frames:
    """Decoded frames with the timestamps (seconds from the video's start) they were shown at."""

    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    timestamps: np.ndarray  # [T] float64, actual presentation times of the frames returned
    requested: list[float]  # [T] the timestamps that were asked for
    info: VideoInfo
    stats: dict = field(default_factory=dict)  # mode, frames decoded, seeks, seconds

    def __len__(self) -> int:
        return len(self.frames)

    def summary(self) -> dict:
        return {
            "path": self.info.path,
            "num_frames": len(self),
            "height": int(self.frames.shape[1]),
            "width": int(self.frames.shape[2]),
            "timestamps": [round(float(t), 4) for t in self.timestamps],
            "stats": self.stats,
        }


Backend = Callable[[VideoInfo, Sequence[float], DecodeOptions], tuple[np.ndarray, np.ndarray, dict]]
BACKENDS: Registry[Backend] = Registry("decode backend")


def output_size(info: VideoInfo, opts: DecodeOptions) -> tuple[int, int]:
    """(width, height) of the frames returned, after rotation."""
    if opts.size is not None:
        return opts.size
    w, h = info.width, info.height
    if opts.max_side and max(w, h) > opts.max_side:
        s = opts.max_side / max(w, h)
        w, h = max(2, round(w * s)), max(2, round(h * s))
    return w, h


class _Deadline:
    def __init__(self, path: str, timeout_s: float | None):
        self.path, self.timeout_s = path, timeout_s
        self.end = None if timeout_s is None else time.monotonic() + timeout_s

    def check(self) -> None:
        if self.end is not None and time.monotonic() > self.end:
            raise VideoTimeoutError(self.path, f"decoding took longer than {self.timeout_s:g}s")


@BACKENDS.register("pyav")
def _decode_pyav(info: VideoInfo, times: Sequence[float], opts: DecodeOptions):
    deadline = _Deadline(info.path, opts.timeout_s)
    container = open_container(info.path)
    try:
        stream = video_stream(container, info.path)
        # Slice threads only: frame-threaded contexts were seen to deadlock inside
        # avcodec_free_context when a decode stops early (our test suite hung on it);
        # with non-reference frames skipped, slice threading measured as fast.
        stream.thread_type = "SLICE"
        stream.codec_context.thread_count = opts.threads
        return _PyAVPlan(info, container, stream, opts, deadline).run(times)
    except av.error.DecoderNotFoundError:
        raise UnsupportedCodecError(info.path, f"no decoder for codec {info.codec!r}") from None
    finally:
        container.close()


class _PyAVPlan:
    """One pass over the stream that serves sorted target timestamps."""

    def __init__(self, info, container, stream, opts, deadline):
        self.info, self.container, self.stream, self.opts, self.deadline = info, container, stream, opts, deadline
        self.tb = stream.time_base
        self.t0 = stream.start_time or 0
        index = stream_index(stream)
        self.keyframes = []
        if index is not None and len(index):
            # Index timestamps are decode times; with B-frames the presentation time of
            # each frame is later by the reorder delay, constant over a stream.
            delay = max(0, self.t0 - min(e.timestamp for e in index))
            self.keyframes = sorted(e.timestamp + delay for e in index if e.is_keyframe)
        # Without an index, guess a keyframe interval of 2 s; refined as keyframes are seen.
        self.gop_pts = int(2.0 / self.tb) if not self.keyframes else None
        self.last_key_pts = None
        self.seen_gop = None
        # Margin before a target where every frame is decoded again: 16 frames (more than
        # any B-frame reorder depth) or 0.5 s, whichever is longer.
        self.margin_pts = int(max(16.0 / max(info.fps, 1.0), 0.5) / self.tb)
        self.skip = "DEFAULT"
        self.stats = {"backend": "pyav", "mode": opts.mode, "decoded": 0, "seeks": 0}
        w, h = output_size(info, opts)
        self.scaler = av.video.reformatter.VideoReformatter()
        self.out_wh = (h, w) if info.rotation % 180 else (w, h)  # size before rotation

    def to_pts(self, t: float) -> int:
        return self.t0 + int(round(t / self.tb))

    def to_sec(self, pts: int) -> float:
        return float((pts - self.t0) * self.tb)

    def should_seek(self, target: int, pos: int) -> bool:
        if self.opts.mode == "sequential":
            return False
        if self.opts.mode == "seek":
            return target > pos
        if self.keyframes:
            i = bisect.bisect_right(self.keyframes, target) - 1
            return i >= 0 and self.keyframes[i] > pos
        return target - pos > self.gop_pts

    def convert(self, frame) -> np.ndarray:
        w, h = self.out_wh
        # one swscale context reused for every frame (to_ndarray(width=...) builds one per call)
        img = self.scaler.reformat(frame, width=w, height=h, format="rgb24").to_ndarray()
        k = (self.info.rotation // 90) % 4
        return np.ascontiguousarray(np.rot90(img, k)) if k else img

    def run(self, times: Sequence[float]):
        order = np.argsort(np.asarray(times, dtype=np.float64), kind="stable")
        targets = [self.to_pts(times[i]) for i in order]
        got: list[tuple[np.ndarray, int] | None] = [None] * len(targets)
        j = 0  # next unresolved target (in sorted order)
        prev = None  # last decoded frame (displayed until the next frame's pts)
        packets = None
        sought = -1  # the target the last seek was for: at most one seek per target
        while j < len(targets):
            pos = prev.pts if prev is not None else None
            if packets is None and not self.should_seek(targets[j], self.t0):
                # near the start: decode from the first packet. A seek there may land on a later keyframe
                # in containers that seek by byte position (MPEG-TS without an index)
                packets = self._frames(self.container.demux(self.stream))
            elif packets is None or (sought != j and pos is not None and self.should_seek(targets[j], pos)):
                sought = j
                self.container.seek(targets[j], stream=self.stream, backward=True, any_frame=False)
                self.stats["seeks"] += 1
                packets, prev = self._frames(self.container.demux(self.stream)), None
                self.last_key_pts = None
            self._set_skip(prev, targets[j])
            frame = next(packets, None)
            if frame is None:  # end of stream: the last frame serves what is left
                if prev is None:
                    raise VideoDecodeError(self.info.path, f"no frame decodable at or after t={self.to_sec(targets[j]):.3f}s")
                self._check_tail(prev, targets[-1])
                while j < len(targets):
                    got[j] = self._take(prev, got, j)
                    j += 1
                break
            if frame.pts is None:
                continue
            if prev is not None and frame.pts <= prev.pts:
                continue  # duplicate or out-of-order timestamp: keep the first
            # Targets before this frame's pts were on screen during ``prev``.
            while j < len(targets) and targets[j] < frame.pts:
                got[j] = self._take(prev if prev is not None else frame, got, j)
                j += 1
            prev = frame
        frames = np.empty(len(times), dtype=object)
        stamps = np.empty(len(times), dtype=np.float64)
        for k, i in enumerate(order):
            frames[i], stamps[i] = got[k][0], self.to_sec(got[k][1])
        return np.stack(list(frames)), stamps, self.stats

    def _set_skip(self, prev, target):
        """Far from the next target, let FFmpeg skip non-reference frames (nobody will see
        them and nothing depends on them); within ``margin`` decode everything again."""
        want = "NONREF" if prev is not None and target - prev.pts > self.margin_pts else "DEFAULT"
        if want != self.skip:
            self.stream.codec_context.skip_frame = want
            self.skip = want

    def _take(self, frame, got, j):
        if j > 0 and got[j - 1] is not None and got[j - 1][1] == frame.pts:
            return got[j - 1]  # same frame asked twice: share the array
        return self.convert(frame), frame.pts

    def _check_tail(self, last, target):
        # A request far beyond the last decodable frame means the file ends early.
        slack = int(round((2.0 / max(self.info.fps, 1.0) + 0.1) / self.tb))
        if target > last.pts + slack:
            raise VideoDecodeError(
                self.info.path,
                f"stream ends at t={self.to_sec(last.pts):.3f}s but a frame at t={self.to_sec(target):.3f}s "
                f"was requested (truncated file?)",
            )

    def _frames(self, packets):
        """Decoded frames from a demux iterator, in presentation order."""
        try:
            for packet in packets:
                self.deadline.check()
                for frame in packet.decode():
                    self.stats["decoded"] += 1
                    if frame.key_frame and frame.pts is not None:
                        self._saw_keyframe(frame.pts)
                    yield frame
        except av.error.EOFError:
            return
        except av.error.FFmpegError as e:
            raise VideoDecodeError(self.info.path, f"a frame failed to decode mid-stream ({_ffmpeg_msg(e)})") from None

    def _saw_keyframe(self, pts):
        # No index: learn the keyframe interval from the keyframes decoding runs into.
        if self.last_key_pts is not None and pts > self.last_key_pts and not self.keyframes:
            self.seen_gop = max(self.seen_gop or 0, pts - self.last_key_pts)
            self.gop_pts = self.seen_gop
        self.last_key_pts = pts


@BACKENDS.register("opencv")
def _decode_opencv(info: VideoInfo, times: Sequence[float], opts: DecodeOptions):
    import cv2  # optional dependency (the curate extra)

    deadline = _Deadline(info.path, opts.timeout_s)
    cap = cv2.VideoCapture(info.path)
    if not cap.isOpened():
        raise VideoDecodeError(info.path, "OpenCV could not open the file")
    w, h = output_size(info, opts)
    frames, stamps = [], []
    try:
        for t in times:
            deadline.check()
            cap.set(cv2.CAP_PROP_POS_MSEC, t * 1000.0)
            ok, bgr = cap.read()
            if not ok:
                raise VideoDecodeError(info.path, f"OpenCV could not read a frame at t={t:.3f}s")
            stamps.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
            if (bgr.shape[1], bgr.shape[0]) != (w, h):
                bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    return np.stack(frames), np.asarray(stamps), {"backend": "opencv", "seeks": len(times)}


@BACKENDS.register("decord")
def _decode_decord(info: VideoInfo, times: Sequence[float], opts: DecodeOptions):
    import decord  # optional: known to hang and leak on some inputs, never the default

    w, h = output_size(info, opts)
    vr = decord.VideoReader(info.path, width=w, height=h, num_threads=opts.threads)
    stamps_all = vr.get_frame_timestamp(range(len(vr)))[:, 0]
    idx = [max(0, min(len(vr) - 1, int(np.searchsorted(stamps_all, t, side="right")) - 1)) for t in times]
    return vr.get_batch(idx).asnumpy(), stamps_all[idx].astype(np.float64), {"backend": "decord"}


def decode_frames(path: str | os.PathLike, times: Sequence[float], opts: DecodeOptions | None = None,
                  info: VideoInfo | None = None) -> Frames:
    """Decode the frames on screen at ``times`` (seconds from the start of the video)."""
    opts = opts or DecodeOptions()
    info = info or probe(path, opts.limits, opts.frame_fps)
    if not len(times):
        raise ValueError("no timestamps requested")
    backend = decode_frame_folder if info.container == FRAMES_CONTAINER else BACKENDS.get(opts.backend)
    t = time.perf_counter()
    try:
        frames, stamps, stats = backend(info, list(times), opts)
    except VideoError:
        raise
    except ImportError as e:
        raise RuntimeError(f"decode backend {opts.backend!r} needs a package that is not installed: {e}") from None
    except (av.error.FFmpegError, OSError, RuntimeError) as e:
        raise VideoDecodeError(info.path, f"decoding failed ({_ffmpeg_msg(e)})") from None
    stats = {**stats, "seconds": round(time.perf_counter() - t, 4)}
    return Frames(frames=frames, timestamps=stamps, requested=list(times), info=info, stats=stats)


def _thumbnail_scan(path: str, info: VideoInfo, opts: DecodeOptions, side: int):
    """``scan(times) -> (thumbnails, shown_at)`` for a content-aware sampler: small square frames."""
    scan_opts = dataclasses.replace(opts, size=(side, side), max_side=None)

    def scan(times):
        f = decode_frames(path, times, scan_opts, info=info)
        return f.frames, f.timestamps

    return scan


def load_video(path: str | os.PathLike, sampling: SamplingConfig | None = None,
               opts: DecodeOptions | None = None) -> Frames:
    """Probe, choose timestamps with ``sampling`` and decode them: the usual entry point."""
    opts = opts or DecodeOptions()
    path = os.fspath(path) if os.path.isdir(path) else check_path(path)  # a folder: of frames, or refused by probe
    info = probe(path, opts.limits, opts.frame_fps)
    sampling = sampling or SamplingConfig()
    scan = _thumbnail_scan(path, info, opts, sampling.scan_size) if sampling.sampler in CONTENT_SAMPLERS else None
    times = sample_timestamps(sampling, info.duration, scan)
    return decode_frames(path, times, opts, info=info)


def _isolated_worker(conn, path, sampling, opts):
    try:
        conn.send(("ok", load_video(path, sampling, opts)))
    except BaseException as e:  # the parent re-raises it
        conn.send(("err", e))
    finally:
        conn.close()


def decode_isolated(path: str | os.PathLike, sampling: SamplingConfig | None = None,
                    opts: DecodeOptions | None = None) -> Frames:
    """``load_video`` in a child process, killed when ``opts.timeout_s`` passes.

    Use it for untrusted inputs in batch jobs: a hang inside native code cannot be
    interrupted in-process, but a child process can always be killed.
    """
    opts = opts or DecodeOptions()
    path = os.fspath(path) if os.path.isdir(path) else check_path(path)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_isolated_worker, args=(child, path, sampling, dataclasses.replace(opts, timeout_s=None)))
    proc.start()
    child.close()
    try:
        if not parent.poll(opts.timeout_s):
            raise VideoTimeoutError(path, f"decoding took longer than {opts.timeout_s:g}s (child process killed)")
        status, value = parent.recv()
    except EOFError:
        raise VideoDecodeError(path, f"decoder process died (exit code {proc.exitcode})") from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
    if status == "err":
        raise value
    return value
