"""One decode pass per video that feeds the scene detector and every frame filter.

Cut detection has to see every frame, so the pass decodes the whole video once (PyAV,
in presentation order). Each frame is scaled in swscale to the detector's small width
and handed to a PySceneDetect detector; at each filter's sampling times (every
``every_s`` seconds, and right after every detected cut, so each shot is sampled) the
same decoded frame is also scaled to that filter's size and scored on the spot (the
motion filter also gets the next frame). Only scalar scores are kept, so memory does not grow
with the video's length, and no frame is decoded twice for the filters.

Frame indices count decoded frames from 0; ``pts[i]`` is frame i's presentation time
in seconds from the stream's start, so clip boundaries are exact frames, not rounded
seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import av
import numpy as np

from ..registry import Registry
from ..video.errors import UnsupportedCodecError, VideoDecodeError, VideoTimeoutError
from ..video.probe import VideoInfo, _ffmpeg_msg, open_container, video_stream
from .config import ScenesConfig
from .filters import FrameFilter


@dataclass
class Analysis:
    pts: list[float]  # presentation time (s) of every decoded frame
    cuts: list[int]  # frame indices where a new shot starts (0 excluded)
    samples: dict[str, list[tuple[int, float]]]  # filter name -> (frame index, score)
    seconds: dict[str, float] = field(default_factory=dict)  # decode, scenes, <filter>: time spent

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    def end_time(self, fps: float) -> float:
        """The end of the last frame's display interval."""
        if not self.pts:
            return 0.0
        step = (self.pts[-1] - self.pts[0]) / max(1, len(self.pts) - 1) if len(self.pts) > 1 else 1.0 / max(fps, 1.0)
        return self.pts[-1] + step


SCENE_DETECTORS: Registry = Registry("scene detector")


def _pyscenedetect(cls_name: str, threshold_key: str = "threshold"):
    def build(cfg: ScenesConfig, min_len: int):
        import scenedetect

        kw: dict = {"min_scene_len": min_len}
        if cfg.threshold is not None:
            kw[threshold_key] = cfg.threshold
        return getattr(scenedetect, cls_name)(**kw)

    return build


SCENE_DETECTORS.register("content")(_pyscenedetect("ContentDetector"))  # HSV change between frames (cuts)
SCENE_DETECTORS.register("adaptive")(_pyscenedetect("AdaptiveDetector", "adaptive_threshold"))  # fast motion
SCENE_DETECTORS.register("threshold")(_pyscenedetect("ThresholdDetector"))  # fades to/from black
SCENE_DETECTORS.register("histogram")(_pyscenedetect("HistogramDetector"))  # YUV histogram change
SCENE_DETECTORS.register("none")(lambda cfg, min_len: _NoDetector())  # no cuts (the benchmark's baseline)


def make_detector(cfg: ScenesConfig, fps: float):
    """A PySceneDetect detector by name, with ``min_scene_s`` as its minimum shot length."""
    return SCENE_DETECTORS.get(cfg.detector)(cfg, max(1, int(round(cfg.min_scene_s * max(fps, 1.0)))))


class _NoDetector:
    def process_frame(self, timecode, frame_img) -> list:
        return []

    def post_process(self, timecode) -> list:
        return []


def _scaled(w: int, h: int, side: int) -> tuple[int, int]:
    s = min(1.0, side / max(w, h))
    return max(2, int(round(w * s / 2)) * 2), max(2, int(round(h * s / 2)) * 2)


class _Converter:
    """Frame -> RGB/BGR array at a size, rotated upright.

    One swscale context per (size, format), reused across frames: ``frame.to_ndarray(width=...)``
    would build a new one for every frame."""

    def __init__(self, info: VideoInfo):
        from av.video.reformatter import VideoReformatter

        self.info = info
        self.k = (info.rotation // 90) % 4
        self.make = VideoReformatter
        self.scalers: dict = {}

    def __call__(self, frame, side: int, fmt: str = "rgb24") -> np.ndarray:
        w, h = _scaled(self.info.width, self.info.height, side)
        if self.k % 2:
            w, h = h, w  # swscale works before rotation
        scaler = self.scalers.get((w, h, fmt))
        if scaler is None:
            scaler = self.scalers[(w, h, fmt)] = self.make()
        img = scaler.reformat(frame, width=w, height=h, format=fmt).to_ndarray()
        return np.ascontiguousarray(np.rot90(img, self.k)) if self.k else img


def analyze(info: VideoInfo, scenes: ScenesConfig, filters: list[FrameFilter], deadline: float | None = None,
            threads: int = 1) -> Analysis:
    """Decode ``info.path`` once; return cuts, frame times and every filter's sampled scores."""
    from scenedetect import FrameTimecode

    path = info.path
    container = open_container(path)
    seconds = {"decode": 0.0, "scenes": 0.0, **{f.cfg.name: 0.0 for f in filters}}
    pts: list[float] = []
    cuts: list[int] = []
    samples: dict[str, list[tuple[int, float]]] = {f.cfg.name: [] for f in filters}
    next_t = [min(f.cfg.every_s / 2, 0.5) for f in filters]  # the first sample early, then every every_s
    last_sample = [-1] * len(filters)
    pending: list[tuple[int, int, np.ndarray, float]] = []  # (filter #, frame index, frame, t) awaiting the next frame
    fps = info.fps or 25.0
    detector = make_detector(scenes, fps)
    convert = _Converter(info)
    aw = min(scenes.analysis_width, max(info.width, info.height))
    try:
        stream = video_stream(container, path)
        stream.thread_type = "SLICE"  # see kangaroo.video.decode: frame threads deadlocked at teardown
        stream.codec_context.thread_count = threads
        tb, t0 = stream.time_base, stream.start_time or 0
        frames = container.decode(stream)
        last_pts = None
        i = 0
        while True:
            t_start = time.perf_counter()
            try:
                frame = next(frames, None)
            except av.error.EOFError:
                frame = None
            seconds["decode"] += time.perf_counter() - t_start
            if deadline is not None and time.monotonic() > deadline:
                raise VideoTimeoutError(path, "per-video time limit reached during analysis")
            if frame is None:
                break
            if frame.pts is None or (last_pts is not None and frame.pts <= last_pts):
                continue  # no timestamp or a duplicate: not a new picture
            last_pts = frame.pts
            t = float((frame.pts - t0) * tb)
            pts.append(t)
            # scene detection on a small BGR copy
            t_start = time.perf_counter()
            small = convert(frame, aw, "bgr24")
            for tc in detector.process_frame(FrameTimecode(i, fps), small):
                if tc.frame_num > 0:
                    cuts.append(int(tc.frame_num))
                    for k in range(len(filters)):  # a new shot: every filter samples it now
                        if last_sample[k] < tc.frame_num:
                            next_t[k] = min(next_t[k], t)
            seconds["scenes"] += time.perf_counter() - t_start
            # filters whose previous sample waited for this frame
            for k, j, img, tj in pending:
                f = filters[k]
                t_start = time.perf_counter()
                nxt = convert(frame, f.cfg.side)
                samples[f.cfg.name].append((j, f.score_frame(img, nxt, t - tj)))
                seconds[f.cfg.name] += time.perf_counter() - t_start
            pending = []
            for k, f in enumerate(filters):
                if t + 1e-9 < next_t[k]:
                    continue
                next_t[k] = t + f.cfg.every_s
                last_sample[k] = i
                t_start = time.perf_counter()
                img = convert(frame, f.cfg.side)
                if f.needs_next:
                    pending.append((k, i, img, t))
                else:
                    samples[f.cfg.name].append((i, f.score_frame(img)))
                seconds[f.cfg.name] += time.perf_counter() - t_start
            i += 1
        t_start = time.perf_counter()
        if pts:
            for tc in detector.post_process(FrameTimecode(len(pts) - 1, fps)):
                if 0 < tc.frame_num < len(pts):
                    cuts.append(int(tc.frame_num))
        seconds["scenes"] += time.perf_counter() - t_start
    except av.error.DecoderNotFoundError:
        raise UnsupportedCodecError(path, f"no decoder for codec {info.codec!r}") from None
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"a frame failed to decode at frame {len(pts)} ({_ffmpeg_msg(e)})") from None
    finally:
        container.close()
    return Analysis(pts=pts, cuts=sorted(set(cuts)), samples=samples, seconds=seconds)
