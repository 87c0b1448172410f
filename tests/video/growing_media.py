"""A background writer that appends a synthetic video to a file, frame by frame (MPEG-TS or Matroska)."""

import threading
import time

import av
import numpy as np

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "white": (235, 235, 235)}


def frame_at(i: int, fps: float, schedule, w: int = 64, h: int = 48) -> np.ndarray:
    """Frame i: the colour ``schedule`` gives at its time (list of (start s, colour name)), plus the frame index
    written into a corner so that every frame differs."""
    t = i / fps
    name = [c for s, c in schedule if s <= t][-1]
    img = np.empty((h, w, 3), np.uint8)
    img[:] = COLOURS[name]
    img[:4, :8] = (i * 7) % 256
    return img


class BackgroundWriter(threading.Thread):
    """Writes ``seconds`` of video at ``fps`` into ``path``, sleeping ``delay`` between frames and flushing
    after each, so a reader sees the file grow. ``pause_after`` frames: stop writing for ``pause_s`` once.
    ``frame_fn(i)``: frame i (default: a colour from ``schedule``)."""

    def __init__(self, path, seconds=6.0, fps=4.0, fmt="mpegts", delay=0.02, schedule=(( 0.0, "red"),),
                 pause_after=None, pause_s=0.0, w=64, h=48, frame_fn=None, gate=None):
        super().__init__(daemon=True)
        self.path, self.n, self.fps, self.fmt, self.delay = str(path), int(round(seconds * fps)), fps, fmt, delay
        self.schedule, self.pause_after, self.pause_s, self.w, self.h = list(schedule), pause_after, pause_s, w, h
        self.frame_fn = frame_fn or (lambda i: frame_at(i, self.fps, self.schedule, self.w, self.h))
        self.gate = gate  # (frames, threading.Event): after that many frames, wait for the event
        self.written = 0
        self.error = None
        open(self.path, "wb").close()

    def run(self):
        try:
            with open(self.path, "ab") as f:
                # every packet flushed to the file; Matroska: a cluster every 250 ms, as a live muxer writes it
                opts = {"flush_packets": "1"} | ({"live": "1", "cluster_time_limit": "250"} if self.fmt == "matroska" else {})
                out = av.open(f, "w", format=self.fmt, options=opts)
                s = out.add_stream("libx264", rate=int(self.fps))
                s.width, s.height, s.pix_fmt = self.w, self.h, "yuv420p"
                s.options = {"tune": "zerolatency", "g": "8"}  # no lookahead: packets come out as frames go in
                for i in range(self.n):
                    if self.gate is not None and i == self.gate[0]:
                        self.gate[1].wait(120)
                    fr = av.VideoFrame.from_ndarray(self.frame_fn(i), format="rgb24")
                    for p in s.encode(fr):
                        out.mux(p)
                    f.flush()
                    self.written = i + 1
                    time.sleep(self.delay)
                    if self.pause_after is not None and i + 1 == self.pause_after:
                        time.sleep(self.pause_s)
                for p in s.encode():
                    out.mux(p)
                out.close()
        except BaseException as e:  # seen by the test
            self.error = e
