"""Training recipes: one YAML file per curriculum stage (torchtune-style config, our loop).

A recipe says where the model comes from, what the videos look like at this stage
(resolution, dynamic frame range), the data mixture, which modules train, and the
optimiser and schedule. It round-trips to YAML; unknown keys are errors.

A ``data`` entry is one source, or a group that repeats the same sources in several folders
(data sets made alike, e.g. by ``kangaroo synth`` with different seeds)::

    data:
      - folders: [../../data/smol/short, ../../data/smol/mix/short11]
        sources:
          - {path: openqa.json, format: openqa, weight: 0.25}
          - {path: conversations.json, format: llava, weight: 0.0625}

expands, folder by folder and in the order written, to one source per folder and source (here
four), each path joined to its folder. Folders are named, not globbed, so a recipe's mixture never
depends on what else happens to be on disk.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import yaml

from ..dataclass_io import check_range, check_types, strict_from_dict

FORMATS = ("llava", "mcqa", "mcqa_fact", "openqa", "captions", "manifest")
LOGGERS = ("tensorboard", "wandb")
MODULES = ("vision", "temporal", "patchify", "projector", "markers", "llm", "lora")
SHARD_VISION = ("root", "blocks")  # the vision tower under FSDP (train/distributed.py)


def _nested(cls, value, key: str):
    """A nested config (a data source, the LoRA settings) from a mapping; errors name ``key``."""
    if isinstance(value, cls):
        return value
    try:
        return strict_from_dict(cls, value, "keys")
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None


def _names_the_file(load):
    """Recipe.load's errors as one line that names the file: broken YAML (with its line and column)
    and every invalid value (with its key)."""
    import functools

    @functools.wraps(load)
    def wrapper(cls, path: str, overrides: list[str] | None = None):
        try:
            return load(cls, path, overrides)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ValueError(f"{path}: not valid YAML ({getattr(e, 'problem', None) or e}{where})") from None
        except (ValueError, TypeError) as e:  # TypeError: a value of the wrong shape met before the checks
            msg = str(e) if isinstance(e, ValueError) else _shape_error(cls, path, e)
            raise ValueError(msg if msg.startswith(f"{path}:") else f"{path}: {msg}") from None

    return wrapper


def _shape_error(cls, path: str, e: TypeError) -> str:
    """The checks' own message (naming the key) for a value that broke loading before they ran."""
    try:
        with open(path) as f:
            cls.from_dict(yaml.safe_load(f))
    except ValueError as checked:
        return str(checked)
    except Exception:  # noqa: BLE001 - any other failure: the original error says it
        pass
    return f"invalid recipe ({e})"


def check_curriculum(recipes: list["Recipe"], files: list[str] | None = None) -> None:
    """What would stop a curriculum part-way, checked before its first stage trains: every stage's
    data files exist, and only a later stage starts from 'previous'."""
    files = files or [r.name for r in recipes]
    import os

    for k, (r, f) in enumerate(zip(recipes, files)):
        if k == 0 and r.init == "previous":
            raise ValueError(f"{f}: init: the first stage cannot start from 'previous' (there is no stage before it)")
        if r.objective == "lm" and not r.data:
            raise ValueError(f"{f}: data: the stage has no data sources")
        for key in ("data", "eval_data"):
            for i, d in enumerate(getattr(r, key)):
                if not os.path.isfile(d.path):
                    raise ValueError(f"{f}: {key}[{i}]: path: no such file {d.path}")


REPLIES = ("letter", "text_letter")


@dataclass
class DataSource:
    path: str  # a JSON/JSONL file
    format: str = "llava"  # llava | mcqa | mcqa_fact | openqa | captions | manifest (train/data.py)
    weight: float = 1.0  # sampling weight in the mixture
    root: str | None = None  # media paths are relative to this (default: the file's folder)
    families: list[str] | None = None  # keep only records whose "family" is one of these (synth QA)
    # mcqa / mcqa_fact: the options in a fresh order at every draw (the letter of the answer moves with
    # it), so a model cannot learn a prior over letters, only which option the letter names
    shuffle_options: bool = False
    # mcqa / mcqa_fact: what the reply says: "letter" ("B") or "text_letter" ("red circle (B)": the
    # option's text first, then its letter, so the letter is copied from beside a text just written)
    reply: str = "letter"
    # ours: the share of this source's video samples drawn at a fixed frame count (one of
    # uniform_frames, spread uniformly over the video, as `kangaroo eval --frames N` and `ask --frames
    # N` sample) instead of the stage's dynamic rate: a 30 s video at 16 frames is sparser (1.9 s
    # apart) than the rate shows it. Not for long needle videos (16 frames miss a 1 s needle).
    uniform_frames: list[int] = field(default_factory=list)
    uniform_share: float = 0.0
    # ours, mcqa: where every option is a time ("4.5 seconds"), move each by its own offset drawn
    # uniformly in [-time_jitter_s, +time_jitter_s] (the right one stays the nearest to the truth),
    # so the right option's text cannot be read off the frames' time labels, only copied from the
    # options: teaches "pick the nearest offered time" instead of writing a time of the model's own
    time_jitter_s: float = 0.0
    # ours, mcqa of kangaroo synth: the share of "which object is on screen at t?" draws whose wrong
    # options are the objects shown nearest in time to t (just before or after it, the same object in
    # its colour before or after a change; synth.qa.near_names) instead of random names, mostly absent
    # from the video: the right option can then only be told apart by *when*. Reads the timelines.json
    # beside the file.
    near_distractors: float = 0.0

    def __post_init__(self) -> None:
        check_types(self)
        if not self.path:
            raise ValueError("path: must name a JSON/JSONL file, got an empty string")
        if self.format not in FORMATS:
            raise ValueError(f"format: unknown data format {self.format!r}; known: {', '.join(FORMATS)}")
        check_range("weight", self.weight, 0, low_open=True)
        if self.families is not None and not self.families:
            raise ValueError("families: an empty list keeps no record (leave it out to keep them all)")
        if self.shuffle_options and self.format not in ("mcqa", "mcqa_fact"):
            raise ValueError(f"shuffle_options: only mcqa and mcqa_fact sources have options, not {self.format!r}")
        if self.reply not in REPLIES:
            raise ValueError(f"reply: must be one of {', '.join(REPLIES)}, got {self.reply!r}")
        if self.reply != "letter" and self.format not in ("mcqa", "mcqa_fact"):
            raise ValueError(f"reply: only mcqa and mcqa_fact sources have options, not {self.format!r}")
        check_range("uniform_share", self.uniform_share, 0.0, 1.0)
        if self.uniform_share > 0 and not self.uniform_frames:
            raise ValueError("uniform_share > 0 needs uniform_frames (the frame counts to draw from)")
        if any(n < 1 for n in self.uniform_frames):
            raise ValueError(f"uniform_frames: every count must be >= 1, got {self.uniform_frames}")
        check_range("time_jitter_s", self.time_jitter_s, 0.0)
        if self.time_jitter_s > 0 and self.format != "mcqa":
            raise ValueError(f"time_jitter_s: only mcqa sources have time options, not {self.format!r}")
        check_range("near_distractors", self.near_distractors, 0.0, 1.0)
        if self.near_distractors > 0 and self.format != "mcqa":
            raise ValueError(f"near_distractors: only mcqa sources have options to replace, not {self.format!r}")


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def __post_init__(self) -> None:
        check_types(self)
        check_range("r", self.r, 1)
        check_range("alpha", self.alpha, 0, low_open=True)
        check_range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        if not self.targets:
            raise ValueError("targets: LoRA needs at least one target module")


@dataclass
class Recipe:
    name: str = "stage"
    init: str = "smol"  # smol | 8b | a model folder | "previous" (the stage before, in a curriculum)
    image_size: int = 112  # frames are resized to this square
    min_frames: int = 1
    max_frames: int = 16
    seconds_per_frame: float = 1.0  # dynamic sampling: one frame per this many seconds, in [min, max]
    max_seq_len: int = 1024  # tokens per packed row
    data: list[DataSource] = field(default_factory=list)
    train: list[str] = field(default_factory=lambda: ["vision", "temporal", "patchify", "projector", "markers"])
    lora: LoraConfig | None = None
    lr: float = 1e-4
    llm_lr: float | None = None  # a smaller rate for the LLM (full or LoRA); default = lr
    vision_lr: float | None = None  # the vision tower's rate (a pre-trained tower wants less); default = lr
    weight_decay: float = 0.0
    warmup_steps: int = 20
    max_steps: int = 200
    rows_per_step: int = 1  # packed rows per optimiser step (gradient accumulation)
    grad_clip: float = 1.0
    bf16: bool = False  # autocast to bfloat16
    gradient_checkpointing: bool = False
    seed: int = 0
    save_every: int = 50
    log_every: int = 1
    tpe: str | None = None  # a fresh model's (init smol / 8b; None = sincos); on a loaded one, switches it
    time_labels: bool | None = None  # ours: write each slot's start time as text before it; None = keep the model's
    frames_per_slot: int | None = None  # ours: 1 = every frame its own temporal slot (model config); None = keep
    objective: str = "lm"  # lm: next-token loss on answers | tags: vision pre-training on caption tags (tags.py)
    batch_size: int = 64  # images per step (objective tags)
    image_cache_mb: int = 4096  # objective tags: decoded images stay in memory up to this, else decoded per step
    data_workers: int | None = None  # processes encoding samples ahead; None = 0 on CPU, up to 4 per GPU
    # the global row order (train/stream.py): packed rows per optimiser step over all ranks (each rank
    # accumulates its share); the rows of a step do not depend on the world size. None = rows_per_step x world
    global_rows: int | None = None
    # under torchrun: the vision tower in FSDP's root unit ("root"), or each of its blocks a unit of its
    # own ("blocks": every rank runs the tower as often as the busiest one, padded with blank media)
    shard_vision: str = "root"
    max_failed_fraction: float = 0.01  # the run stops when more of the samples tried fail (unreadable, missing)
    eval_data: list[DataSource] = field(default_factory=list)  # a held-out split (train/validate.py)
    eval_every: int = 0  # validate every this many steps and at the end; 0 = at the end only (if eval_data)
    eval_samples: int = 64  # held-out samples for the validation loss (the first ones of the split, in order)
    eval_generate: int = 16  # of those, QA samples (mcqa, openqa) answered by generation for accuracy; 0 = none
    loggers: list[str] = field(default_factory=list)  # next to metrics.jsonl (rank 0): tensorboard, wandb (offline)

    def __post_init__(self) -> None:
        # Every value is checked here, types first (a message names the key; Recipe.load adds the file).
        check_types(self)
        self.data = [_nested(DataSource, d, f"data[{i}]") for i, d in enumerate(self.data)]
        self.eval_data = [_nested(DataSource, d, f"eval_data[{i}]") for i, d in enumerate(self.eval_data)]
        if isinstance(self.lora, dict):
            self.lora = _nested(LoraConfig, self.lora, "lora")
        self._check_ranges()
        bad = set(self.train) - set(MODULES)
        if bad:
            raise ValueError(f"train: unknown modules to train: {sorted(bad)}; known: {MODULES}")
        if "lora" in self.train and "llm" in self.train:
            raise ValueError("train either 'llm' (full) or 'lora', not both")
        if "lora" in self.train and self.lora is None:
            self.lora = LoraConfig()
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"min_frames, max_frames: need 1 <= min_frames <= max_frames, got {self.min_frames}, "
                             f"{self.max_frames}")
        check_range("max_steps", self.max_steps, 1)
        check_range("rows_per_step", self.rows_per_step, 1)
        check_range("max_seq_len", self.max_seq_len, 16)
        if self.objective not in ("lm", "tags"):
            raise ValueError(f"objective: must be 'lm' or 'tags', got {self.objective!r}")
        if self.tpe is not None and self.tpe not in ("sincos", "index", "learned", "none"):
            raise ValueError(f"tpe: must be sincos, index, learned or none, got {self.tpe!r}")
        check_range("frames_per_slot", self.frames_per_slot, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("global_rows", self.global_rows, 1)
        if self.shard_vision not in SHARD_VISION:
            raise ValueError(f"shard_vision: must be one of {', '.join(SHARD_VISION)}, got {self.shard_vision!r}")
        check_range("max_failed_fraction", self.max_failed_fraction, 0.0, 1.0)
        for key in ("eval_every", "eval_samples", "eval_generate"):
            check_range(key, getattr(self, key), 0)
        bad = set(self.loggers) - set(LOGGERS)
        if bad:
            raise ValueError(f"loggers: unknown loggers {sorted(bad)}; known: {', '.join(LOGGERS)}")

    def _check_ranges(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"name: must be a non-empty name without '/' (it names the run folder), got {self.name!r}")
        if not self.init:
            raise ValueError("init: must be smol, 8b, a model folder or previous, got an empty string")
        if not self.train:
            raise ValueError(f"train: at least one module to train; known: {MODULES}")
        check_range("image_size", self.image_size, 14)  # at least one 14-pixel patch
        check_range("seconds_per_frame", self.seconds_per_frame, 0, low_open=True)
        for key in ("lr", "llm_lr", "vision_lr", "grad_clip"):
            check_range(key, getattr(self, key), 0, low_open=True)
        check_range("weight_decay", self.weight_decay, 0)
        for key in ("warmup_steps", "seed", "image_cache_mb", "data_workers"):
            check_range(key, getattr(self, key), 0)
        for key in ("save_every", "log_every"):
            check_range(key, getattr(self, key), 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        for key in ("data", "eval_data"):
            if isinstance(d, dict) and isinstance(d.get(key), list):
                d = {**d, key: expand_data(d[key])}
        return strict_from_dict(cls, d, "recipe keys")

    @classmethod
    @_names_the_file
    def load(cls, path: str, overrides: list[str] | None = None) -> "Recipe":
        """A recipe file; ``${VAR}`` in its values is the environment's VAR (unset: an error
        naming it), then ``overrides`` (``KEY=VALUE``, as ``--set``) replace values."""
        with open(path) as f:
            d = yaml.safe_load(f) or {}
        if not isinstance(d, dict):
            raise ValueError(f"{path}: a recipe is a YAML mapping")
        import os

        d = substitute_env(d, path)
        apply_overrides(d, overrides or [])
        base = os.path.dirname(os.path.abspath(path))

        def rel(p):  # data paths (and group folders) are relative to the recipe file
            return os.path.join(base, p) if isinstance(p, str) and not os.path.isabs(p) else p

        for src in (d.get("data") or []) + (d.get("eval_data") or []):
            if isinstance(src, dict) and "path" in src:
                src["path"] = rel(src["path"])
            if isinstance(src, dict) and isinstance(src.get("folders"), list):
                src["folders"] = [rel(f) for f in src["folders"]]
        return cls.from_dict(d)

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False)


def expand_data(entries: list) -> list:
    """Recipe ``data`` entries with their folder groups expanded (module docstring)."""
    if not isinstance(entries, list):
        raise ValueError(f"recipe data must be a list of sources, got {type(entries).__name__}")
    out = []
    for i, e in enumerate(entries):
        if not (isinstance(e, dict) and ("folders" in e or "sources" in e)):
            out.append(e)
            continue
        extra = set(e) - {"folders", "sources"}
        if extra:
            raise ValueError(f"data entry {i}: a folder group has only 'folders' and 'sources', not {sorted(extra)}")
        folders, sources = e.get("folders"), e.get("sources")
        if not (isinstance(folders, list) and folders and all(isinstance(f, str) and f for f in folders)):
            raise ValueError(f"data entry {i}: 'folders' must be a non-empty list of folder paths")
        if not (isinstance(sources, list) and sources and all(isinstance(s, dict) and "path" in s for s in sources)):
            raise ValueError(f"data entry {i}: 'sources' must be a non-empty list of sources with a 'path'")
        if len(set(folders)) != len(folders):
            raise ValueError(f"data entry {i}: a folder is listed twice")
        for folder in folders:
            for src in sources:
                out.append({**src, "path": folder.rstrip("/") + "/" + src["path"]})
    return out


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def substitute_env(value, where: str = "recipe"):
    """``${VAR}`` in every string of a loaded recipe -> the environment's value (an error names an
    unset one). A value that starts with ``${VAR}`` is a path from where the command runs, so it is
    made absolute (``${KANGAROO_DATA}/images/x.jsonl`` with KANGAROO_DATA=data)."""
    import os

    if isinstance(value, dict):
        return {k: substitute_env(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, where) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value

    def get(m):
        name = m.group(1)
        if name not in os.environ:
            raise ValueError(f"{where}: {value!r} needs the environment variable {name}, which is not set")
        return os.environ[name]

    out = _VAR.sub(get, value)
    return os.path.abspath(out) if value.startswith("${") and not os.path.isabs(out) else out


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """``KEY=VALUE`` overrides (``--set``) into a recipe dict, in place. VALUE is read as YAML
    (``2`` an int, ``true`` a bool, ``[a, b]`` a list); KEY may be dotted (``lora.r``)."""
    names = {f.name for f in dataclasses.fields(Recipe)}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set wants KEY=VALUE, got {item!r}")
        path = key.split(".")
        if path[0] not in names:
            raise ValueError(f"--set {key}: a recipe has no key {path[0]!r}")
        value = yaml.safe_load(raw) if raw.strip() else ""
        if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
            value = float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string; a learning rate is meant
        node = d
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                if node.get(part) is not None:
                    raise ValueError(f"--set {key}: {part!r} is not a mapping")
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return d
