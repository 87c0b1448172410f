"""The curation config: one dataclass per stage, round-tripping to YAML/JSON.

Thresholds and their calibration are documented in ``kangaroo/data/README.md``;
every value here can be overridden from ``kangaroo curate --config FILE``. Unknown
keys are errors, so a typo in a threshold never passes silently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import yaml

from ..dataclass_io import strict_from_dict


@dataclass
class ScenesConfig:
    """Stage 2: shot boundaries with a PySceneDetect detector, then clip-length bounds."""

    detector: str = "content"  # content | adaptive | threshold | histogram (PySceneDetect's); none = no cuts
    threshold: float | None = None  # the detector's own threshold; None = PySceneDetect's default
    min_scene_s: float = 0.6  # no two cuts closer than this (PySceneDetect min_scene_len)
    analysis_width: int = 256  # frames are scaled to this width (in swscale) for detection
    min_clip_s: float = 2.0  # shorter clips are dropped (a reject row each)
    max_clip_s: float = 60.0  # longer clips are split into equal parts no longer than this


@dataclass
class FilterConfig:
    """Stages 3-5: one frame-sampling filter. Scores are kept for every clip, pass or fail."""

    name: str  # text_coverage | face_coverage | motion
    every_s: float = 1.0  # one sampled frame per this many seconds (at least one per clip)
    side: int = 480  # sampled frames are scaled so that their longer side is at most this
    min: float | None = None  # a clip passes when min <= score <= max (None = unbounded)
    max: float | None = None
    params: dict = field(default_factory=dict)  # operator-specific settings


@dataclass
class KeyframesConfig:
    """Stage 6: key frames per clip, saved as JPEG for the captioners."""

    count: int = 5
    side: int = 448


@dataclass
class CaptionerConfig:
    """Stage 7: a frame captioner (registered by name)."""

    name: str = "kangaroo"  # kangaroo | openai
    model: str = "kangaroo-smol"  # a kangaroo model name/folder, or the endpoint's model name
    url: str | None = None  # openai: base URL of an OpenAI-compatible server (".../v1")
    api_key_env: str | None = None  # openai: the environment variable holding the key
    prompt: str = "Describe this frame in one or two sentences."
    max_new_tokens: int = 48
    timeout_s: float = 60.0


@dataclass
class FusionConfig:
    """Stage 8: one video caption from the frame captions."""

    name: str = "llm"  # llm (a local Llama-family model) | openai | concat
    model: str = "smollm2"  # llm: "smollm2" or a transformers folder; openai: the endpoint's model
    url: str | None = None
    api_key_env: str | None = None
    max_new_tokens: int = 96
    timeout_s: float = 60.0


@dataclass
class RefineConfig:
    """Stage 9: repeated sentences, boilerplate openers, degenerate captions."""

    sentence_iou: float = 0.6  # a sentence whose word-set IoU with an earlier one is >= this is dropped
    min_words: int = 4  # fewer words after refinement: rejected
    min_unique_ratio: float = 0.3  # unique words / words below this: degenerate (a loop), rejected
    boilerplate: list[str] = field(default_factory=lambda: [
        "the video clip shows", "the video clip is", "the video clip depicts", "this video clip shows",
        "the clip shows", "this clip shows", "the video shows", "the video depicts", "in this video,", "this video shows", "the image shows",
        "the image depicts", "this image shows", "in this image,", "the frame shows", "this frame shows",
        "in this frame,", "the scene shows", "here is a description of the video:", "sure!", "sure,",
    ])


@dataclass
class CategoryConfig:
    """Stage 10: categories from given labels or from the captions, then resampling."""

    labels: str | None = None  # a JSON/CSV file mapping source path (or its file name) -> category
    vocabulary: dict[str, list[str]] = field(default_factory=lambda: {
        "people": ["man", "woman", "person", "people", "child", "girl", "boy", "face", "crowd"],
        "animals": ["dog", "cat", "bird", "horse", "animal", "rabbit", "bunny", "squirrel", "fish"],
        "vehicles": ["car", "bike", "bicycle", "motorcycle", "truck", "bus", "train", "road", "vehicle"],
        "nature": ["tree", "forest", "grass", "sky", "water", "river", "mountain", "field", "flower"],
        "sports": ["ball", "race", "riding", "jump", "player", "game", "sport"],
        "shapes": ["circle", "square", "triangle", "star", "shape", "diamond"],
        "text": ["text", "sign", "screen", "word", "letter", "caption"],
    })
    other: str = "other"
    target: str | dict[str, float] = "uniform"  # uniform | {category: share}
    max_share: float | None = None  # uniform: cap any category at this share of the output
    seed: int = 0


@dataclass
class CurateConfig:
    timeout_s: float = 600.0  # per input video (all of its clips); then it becomes a reject row
    max_duration_s: float = 4 * 3600.0
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    filters: list[FilterConfig] = field(default_factory=lambda: [
        FilterConfig("text_coverage", every_s=3.0, side=256, max=0.10),
        FilterConfig("face_coverage", every_s=2.0, side=256, max=0.05),
        FilterConfig("motion", every_s=1.0, side=160, min=0.15),
    ])
    keyframes: KeyframesConfig = field(default_factory=KeyframesConfig)
    captioners: list[CaptionerConfig] = field(default_factory=lambda: [CaptionerConfig()])
    fusion: FusionConfig = field(default_factory=FusionConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    category: CategoryConfig = field(default_factory=CategoryConfig)
    balance: bool = True

    # ---- round trip ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "CurateConfig":
        try:
            return cls._from_dict(d)
        except TypeError as e:  # a wrong type somewhere (a list for a mapping, text for a number)
            raise ValueError(f"bad curate config: {e}") from None

    @classmethod
    def _from_dict(cls, d: dict | None) -> "CurateConfig":
        if d is not None and not isinstance(d, dict):
            raise ValueError(f"a curate config is a mapping, got {type(d).__name__}")
        d = dict(d or {})
        for key in ("scenes", "keyframes", "fusion", "refine", "category"):
            if key in d and not isinstance(d[key], dict):
                raise ValueError(f"curate config: {key} must be a mapping, got {type(d[key]).__name__}")
        for key in ("filters", "captioners"):
            if key in d and d[key] is not None and (not isinstance(d[key], list)
                                                    or not all(isinstance(x, dict) for x in d[key])):
                raise ValueError(f"curate config: {key} must be a list of mappings")
        nested = {"scenes": ScenesConfig, "keyframes": KeyframesConfig, "fusion": FusionConfig,
                  "refine": RefineConfig, "category": CategoryConfig}
        for key, sub in nested.items():
            if key in d:
                d[key] = strict_from_dict(sub, d[key], f"curate.{key} keys")
        if "filters" in d:
            d["filters"] = [strict_from_dict(FilterConfig, f, "filter keys") for f in d["filters"] or []]
        if "captioners" in d:
            d["captioners"] = [strict_from_dict(CaptionerConfig, c, "captioner keys") for c in d["captioners"] or []]
        cfg = strict_from_dict(cls, d, "curate config keys")
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str) -> "CurateConfig":
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f)
        if d is not None and not isinstance(d, dict):
            raise ValueError(f"{path}: a curate config is a mapping, got {type(d).__name__}")
        return cls.from_dict(d)

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False, allow_unicode=True)

    def validate(self) -> None:
        from .filters import FILTERS  # registry lookups give the list of known names
        from .captions import CAPTIONERS, FUSERS

        from .analyze import SCENE_DETECTORS

        s = self.scenes
        SCENE_DETECTORS.get(s.detector)
        if not 0 < s.min_clip_s < s.max_clip_s:
            raise ValueError(f"scenes: need 0 < min_clip_s < max_clip_s, got {s.min_clip_s} and {s.max_clip_s}")
        if s.analysis_width < 16:
            raise ValueError("scenes.analysis_width must be >= 16")
        for f in self.filters:
            FILTERS.get(f.name)
            if f.every_s <= 0 or f.side < 16:
                raise ValueError(f"filter {f.name}: every_s must be > 0 and side >= 16")
            if f.min is not None and f.max is not None and f.min > f.max:
                raise ValueError(f"filter {f.name}: min {f.min} > max {f.max}")
        if self.keyframes.count < 1:
            raise ValueError("keyframes.count must be >= 1")
        for c in self.captioners:
            CAPTIONERS.get(c.name)
            if c.name == "openai" and not c.url:
                raise ValueError("an openai captioner needs url: (an OpenAI-compatible server, e.g. http://host:8000/v1)")
        FUSERS.get(self.fusion.name)
        if self.fusion.name == "openai" and not self.fusion.url:
            raise ValueError("fusion: openai needs url:")
        if not 0 < self.refine.sentence_iou <= 1:
            raise ValueError("refine.sentence_iou must be in (0, 1]")
        t = self.category.target
        if isinstance(t, str) and t != "uniform":
            raise ValueError(f"category.target is 'uniform' or a mapping of category -> share, got {t!r}")
        if isinstance(t, dict) and (not t or any(v < 0 for v in t.values()) or sum(t.values()) <= 0):
            raise ValueError("category.target shares must be >= 0 and not all zero")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
