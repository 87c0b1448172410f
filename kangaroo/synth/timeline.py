"""Seeded event timelines: coloured shapes that appear, move, change colour and leave.

A ``Timeline`` is the ground truth of one synthetic video. ``make_timeline`` draws
one from a ``SynthConfig`` and a seed; the same (config, seed) always gives the same
timeline. Rendering (render.py) and questions (qa.py) both read only the timeline.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 210, 30),
    "purple": (150, 60, 200),
    "orange": (250, 140, 20),
    "cyan": (30, 200, 210),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle")
NEEDLE_SHAPES = ("star", "cross", "diamond", "ring")
BACKGROUNDS = ((30, 30, 30), (60, 60, 80), (20, 50, 40), (70, 40, 40), (40, 40, 70))


@dataclass
class SynthConfig:
    duration: float = 20.0  # seconds
    fps: float = 8.0
    width: int = 320
    height: int = 240
    num_objects: int = 4  # appearances of ordinary shapes
    repeat_max: int = 3  # one shape/colour may appear up to this many times (counting questions)
    change_prob: float = 0.4  # chance that an object changes colour while on screen
    scene_cuts: int = 0  # number of hard cuts (background changes)
    text: str | None = None  # burned-in text shown for the whole video
    static: bool = False  # no motion and no events: shapes fixed for the whole video
    needle: bool = False  # one brief distinctive event
    needle_seconds: float = 1.0  # how long the needle is on screen
    needle_depth: float | None = None  # where the needle sits, 0..1 of the duration; None = random
    # Appearances get slices of random length (the repeated shape's divided by its count), so
    # how long a shape is on screen says little about how many times it appears: counting data
    # that cannot be answered from on-screen time alone. Off: equal slices (the held-out sets).
    uneven: bool = False
    gop: int = 250  # H.264 keyframe interval (frames), libx264's default
    crf: int = 23

    def __post_init__(self) -> None:
        if self.duration <= 0 or self.fps <= 0:
            raise ValueError("duration and fps must be > 0")
        if self.width < 32 or self.height < 32 or self.width % 2 or self.height % 2:
            raise ValueError("width and height must be even and >= 32")
        if self.num_objects < 0 or self.repeat_max < 1 or self.scene_cuts < 0:
            raise ValueError("num_objects >= 0, repeat_max >= 1, scene_cuts >= 0")
        if self.needle_depth is not None and not 0.0 <= self.needle_depth <= 1.0:
            raise ValueError("needle_depth must be in [0, 1]")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Appearance:
    """One time a shape is on screen, from ``t_in`` to ``t_out`` (seconds)."""

    shape: str
    color: str
    t_in: float
    t_out: float
    size: float  # fraction of the frame height
    start: tuple[float, float]  # (x, y) centre as fractions of the frame, at t_in
    end: tuple[float, float]  # at t_out (equal to start when static)
    change_t: float | None = None  # when it changes colour, if it does
    change_color: str | None = None
    needle: bool = False

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def color_at(self, t: float) -> str:
        if self.change_t is not None and t >= self.change_t:
            return self.change_color
        return self.color

    def visible(self, t: float) -> bool:
        return self.t_in <= t < self.t_out

    def position(self, t: float) -> tuple[float, float]:
        a = 0.0 if self.t_out <= self.t_in else (t - self.t_in) / (self.t_out - self.t_in)
        a = min(max(a, 0.0), 1.0)
        return (self.start[0] + a * (self.end[0] - self.start[0]), self.start[1] + a * (self.end[1] - self.start[1]))


@dataclass
class Timeline:
    config: SynthConfig
    seed: int
    objects: list[Appearance]
    cuts: list[float]  # scene-cut times
    backgrounds: list[tuple[int, int, int]]  # one per scene (len(cuts) + 1)
    events: list[dict] = field(default_factory=list)  # sorted (t, type, object, ...)

    def background_at(self, t: float) -> tuple[int, int, int]:
        return self.backgrounds[int(np.searchsorted(self.cuts, t, side="right"))]

    def visible_at(self, t: float) -> list[Appearance]:
        return [o for o in self.objects if o.visible(t)]

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "config": self.config.to_dict(),
            "objects": [dataclasses.asdict(o) for o in self.objects],
            "cuts": self.cuts,
            "backgrounds": [list(b) for b in self.backgrounds],
            "events": self.events,
        }


def _r(x: float) -> float:
    return round(float(x), 3)


def make_timeline(cfg: SynthConfig, seed: int) -> Timeline:
    rng = np.random.default_rng(seed)
    D = cfg.duration
    names = [(s, c) for s in SHAPES for c in COLORS]
    order = rng.permutation(len(names))
    objects: list[Appearance] = []

    if cfg.static:
        for k in range(max(1, cfg.num_objects)):
            s, c = names[order[k]]
            p = (_r(rng.uniform(0.2, 0.8)), _r(rng.uniform(0.25, 0.75)))
            objects.append(Appearance(s, c, 0.0, _r(D), _r(rng.uniform(0.15, 0.25)), p, p))
    else:
        # Which shape/colour pairs appear, and how often: the first may repeat (counting).
        counts: list[tuple[tuple[str, str], int]] = []
        left = cfg.num_objects
        k = 0
        while left > 0:
            n = int(rng.integers(1, min(cfg.repeat_max, left) + 1)) if k == 0 else 1
            counts.append((names[order[k % len(order)]], n))
            left -= n
            k += 1
        slots = [pair for pair, n in counts for _ in range(n)]
        rng.shuffle(slots)
        # Each appearance gets its own slice of the timeline so repeats never overlap.
        if cfg.uneven:
            reps = dict(counts)
            w = np.array([rng.uniform(0.5, 2.0) / reps[pair] for pair in slots])
            edges = np.concatenate([[0.0], np.cumsum(w) / w.sum() * D])
            trim = (0.15, 0.35)  # wider gaps: short repeats must still be seen as separate
        else:
            edges = np.linspace(0.0, D, len(slots) + 1)
            trim = (0.0, 0.25)
        for (s, c), a, b in zip(slots, edges[:-1], edges[1:]):
            span = b - a
            t_in = a + rng.uniform(*trim) * span
            t_out = b - rng.uniform(*trim) * span
            size = rng.uniform(0.16, 0.26)
            start = (rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.75))
            end = (rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.75))
            app = Appearance(s, c, _r(t_in), _r(t_out), _r(size), (_r(start[0]), _r(start[1])), (_r(end[0]), _r(end[1])))
            if rng.random() < cfg.change_prob:
                app.change_t = _r(t_in + rng.uniform(0.35, 0.65) * (t_out - t_in))
                app.change_color = str(rng.choice([x for x in COLORS if x != c]))
            objects.append(app)

    if cfg.needle:
        depth = cfg.needle_depth if cfg.needle_depth is not None else rng.uniform(0.1, 0.9)
        dur = min(cfg.needle_seconds, D / 2)
        t_in = min(max(0.0, depth * D - dur / 2), D - dur)
        shape = str(rng.choice(NEEDLE_SHAPES))
        color = str(rng.choice(list(COLORS)))
        p = (_r(rng.uniform(0.3, 0.7)), _r(rng.uniform(0.3, 0.7)))
        objects.append(Appearance(shape, color, _r(t_in), _r(t_in + dur), 0.3, p, p, needle=True))

    cuts = sorted(_r(x) for x in rng.uniform(0.1 * D, 0.9 * D, cfg.scene_cuts)) if cfg.scene_cuts else []
    bg_idx = rng.permutation(len(BACKGROUNDS))
    backgrounds = [BACKGROUNDS[bg_idx[i % len(BACKGROUNDS)]] for i in range(len(cuts) + 1)]
    tl = Timeline(cfg, seed, objects, cuts, backgrounds)
    tl.events = _events(tl)
    return tl


def _events(tl: Timeline) -> list[dict]:
    ev = []
    for i, o in enumerate(tl.objects):
        if tl.config.static:
            ev.append({"t": 0.0, "type": "present", "object": i, "name": o.name})
            continue
        kind = "needle" if o.needle else "appear"
        ev.append({"t": o.t_in, "type": kind, "object": i, "name": o.name})
        if o.change_t is not None:
            ev.append({"t": o.change_t, "type": "change", "object": i, "name": o.name, "to": o.change_color})
        if not o.needle:
            ev.append({"t": o.t_out, "type": "leave", "object": i, "name": o.name})
    for t in tl.cuts:
        ev.append({"t": t, "type": "cut"})
    return sorted(ev, key=lambda e: (e["t"], e["type"]))
