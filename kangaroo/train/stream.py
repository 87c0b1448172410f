"""One global order of packed rows, dealt to ranks; samples that fail are skipped and counted.

Rows. Row ``j`` of the run is packed from its own slice of the mixture stream: its ``k``-th
candidate sample is stream index ``j * ROW_STRIDE + k`` (``Mixture.draw``, a pure function of the
index), taken in order while it fits in ``max_seq_len``; the first that does not fit closes the
row and is not used (the mixture draws with replacement, so nothing is lost but its encoding).
So a row depends on ``j`` only, never on another row, on the rank that packs it or on the number
of ranks, and no rank encodes a sample of another rank's row.

Steps. A step takes the next ``G`` rows of the global order (``Recipe.global_rows``; default
``rows_per_step`` x world size); rank ``r`` of ``W`` packs rows ``first + r``, ``first + r + W``, ...
(``G / W`` of them, accumulated). The rows of step ``s`` are the same whatever ``W``; the data
position is one number (the next row), plus the skip counts, a small JSON-able dict
(``state_dict``) that resumes on any world size.

Faults. A sample whose record cannot be parsed, whose media is missing or cannot be decoded, is
skipped and counted by reason (the ``reason`` of ``kangaroo.video.errors``, ``bad_record``,
``image_error``, ...). The run stops (``TooManyFailures``) once more than ``max_failed_fraction`` of
the samples tried so far failed, checked from ``MIN_TRIED`` samples on (a fraction of a few
samples says nothing).

Over-long samples (longer than ``max_seq_len``), the stated rule: a sample is cut to
``max_seq_len`` tokens (counted ``truncated``) if every media placeholder lies before the cut and at
least one answer token stays; otherwise it is dropped (counted ``too_long``). A row never exceeds
``max_seq_len``. Neither counts as a failure.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from ..prompts import IGNORE_INDEX
from .data import Encoded, Mixture, encode_sample
from .records import BadRecord

ROW_STRIDE = 1 << 16  # candidate samples per row at most: sample k of row j is stream index j*ROW_STRIDE + k
MIN_TRIED = 100
FAILURES = ("not_found", "not_a_video", "decode_error", "unsupported_codec", "empty_video", "too_large",
            "timeout", "video_error", "image_error", "bad_record", "error")
RULES = ("too_long", "truncated", "no_content")  # counted, not failures
REASONS = FAILURES + RULES


class TooManyFailures(RuntimeError):
    pass


class Skip:
    """A sample that could not be encoded: why (one of ``FAILURES``) and the error's text."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail

    def __reduce__(self):
        return (Skip, (self.reason, self.detail))


def safe_encode(mixture: Mixture, index: int, recipe, builder, config) -> Encoded | Skip:
    """``encode_sample`` of stream index ``index``, or the ``Skip`` that says why it cannot be."""
    from PIL import UnidentifiedImageError

    from ..video.errors import VideoError

    try:
        sample = mixture.draw(index)
        if sample is None:
            return Skip("no_content", f"stream index {index}: a record with nothing to learn")
        return encode_sample(sample, recipe, builder, config)
    except VideoError as e:
        return Skip(e.reason if e.reason in FAILURES else "video_error", str(e))
    except BadRecord as e:
        return Skip("bad_record", str(e))
    except FileNotFoundError as e:
        return Skip("not_found", str(e))
    except (UnidentifiedImageError, OSError) as e:
        return Skip("image_error", f"{type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001 - counted with its text; too many stop the run and show it
        return Skip("error", f"{type(e).__name__}: {e}")


def fit(enc: Encoded, max_len: int, media_ids: set[int]) -> tuple[Encoded | None, str | None]:
    """The over-long rule (module docstring): (the sample, None) if it fits, (cut sample,
    "truncated") or (None, "too_long") if not."""
    if len(enc) <= max_len:
        return enc, None
    last_media = max((i for i, t in enumerate(enc.ids) if t in media_ids), default=-1)
    answers = any(lab != IGNORE_INDEX for lab in enc.labels[1:max_len])
    if last_media < max_len and answers:
        return Encoded(enc.ids[:max_len], enc.labels[:max_len], enc.pixels, enc.timestamps, enc.more), "truncated"
    return None, "too_long"


class SkipCounter:
    """Samples tried and skipped by reason, on this rank since the start (or the resumed position)."""

    def __init__(self):
        self.tried = 0
        self.counts = dict.fromkeys(REASONS, 0)
        self.examples: dict[str, str] = {}  # reason -> the last error text (for the stop message)

    def add(self, reason: str, detail: str = "") -> None:
        self.counts[reason] += 1
        if detail:
            self.examples[reason] = detail

    def vector(self) -> torch.Tensor:
        return torch.tensor([self.tried] + [self.counts[r] for r in REASONS], dtype=torch.float64)


class RowStream:
    """Packed rows in the global order (module docstring) for one rank of ``world``."""

    def __init__(self, loader, recipe, media_ids: set[int], rank: int = 0, world: int = 1):
        self.loader, self.recipe, self.media_ids = loader, recipe, set(media_ids)
        self.rank, self.world = rank, world
        self.global_rows = recipe.global_rows or recipe.rows_per_step * world
        if self.global_rows % world:
            raise ValueError(f"global_rows: {self.global_rows} rows per step cannot be dealt evenly to {world} ranks")
        self.row = 0  # the global index of the next step's first row
        self.local = SkipCounter()
        self.base = SkipCounter()  # the counts of the run before a resume (global; held by rank 0)
        self._mean = 2.0  # samples per row so far: how far ahead to prefetch

    # ---- rows -----------------------------------------------------------------------------
    def my_rows(self, first: int) -> list[int]:
        """The global indices of this rank's rows of the step that starts at row ``first``."""
        return list(range(first + self.rank, first + self.global_rows, self.world))

    def next_rows(self) -> list[tuple[list[Encoded], int]]:
        """This rank's rows of the next step: [(samples of the row, global row index)]."""
        mine = self.my_rows(self.row)
        out = [(self.build_row(j, mine[i + 1:]), j) for i, j in enumerate(mine)]
        self.row += self.global_rows
        return out

    def _ahead(self, j: int, k: int, later: list[int]) -> list[int]:
        n = math.ceil(self._mean) + 1
        out = [j * ROW_STRIDE + k + i for i in range(1, n)]
        for j2 in later + self.my_rows(self.row + self.global_rows)[:1]:
            out += [j2 * ROW_STRIDE + i for i in range(n)]
        return out

    def build_row(self, j: int, later: list[int] = ()) -> list[Encoded]:
        """Row ``j``: its candidates in order while they fit (skips and the over-long rule counted here)."""
        max_len = self.recipe.max_seq_len
        samples, used = [], 0
        for k in range(ROW_STRIDE):
            index = j * ROW_STRIDE + k
            x = self.loader.get(index, self._ahead(j, k, list(later)))
            if isinstance(x, Skip):
                self.local.tried += 1
                self.local.add(x.reason, x.detail)
                self.check(self.local_totals())  # a broken data set stops here, not after a whole row of tries
                continue
            x, why = fit(x, max_len, self.media_ids)
            if x is not None and samples and used + len(x) > max_len:
                break  # closes the row; not used
            self.local.tried += 1
            if why is not None:
                self.local.add(why)
            if x is None:
                continue
            samples.append(x)
            used += len(x)
            if used >= max_len:
                break
        else:
            raise RuntimeError(f"row {j}: no sample fit in {ROW_STRIDE} tries")
        self._mean = 0.9 * self._mean + 0.1 * len(samples)
        return samples

    # ---- counts and position ------------------------------------------------------------
    def local_totals(self) -> dict:
        v = self.local.vector() + self.base.vector()
        return {"tried": int(v[0]), "skipped": {r: int(n) for r, n in zip(REASONS, v[1:].tolist()) if n}}

    def totals(self) -> dict:
        """{"tried": n, "skipped": {reason: n}} over every rank and the run before a resume
        (collective under torch.distributed: every rank calls it)."""
        v = self.local.vector()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(v)
        v = v + self.base.vector()
        return {"tried": int(v[0]), "skipped": {r: int(n) for r, n in zip(REASONS, v[1:].tolist()) if n}}

    def check(self, totals: dict) -> None:
        """Stop the run when too many samples failed (``max_failed_fraction``)."""
        frac = self.recipe.max_failed_fraction
        failed = sum(n for r, n in totals["skipped"].items() if r in FAILURES)
        tried = totals["tried"]
        if tried >= MIN_TRIED and failed > frac * tried:
            by = ", ".join(f"{r}: {n}" for r, n in totals["skipped"].items() if r in FAILURES)
            last = "; ".join(f"{r}: {d}" for r, d in list(self.local.examples.items())[-3:])
            raise TooManyFailures(
                f"{failed} of {tried} samples failed ({failed / tried:.1%} > max_failed_fraction {frac}): {by}. "
                f"Last errors: {last}. Fix or filter the data (kangaroo curate), or raise max_failed_fraction.")

    def state_dict(self) -> dict:
        """The data position, JSON-able and independent of the world size (collective)."""
        return {"row": self.row, **self.totals()}

    def load_state_dict(self, state: dict) -> None:
        if "row" not in state:
            raise ValueError("the checkpoint's data position has no 'row': written before the global row order")
        self.row = int(state["row"])
        self.local, self.base = SkipCounter(), SkipCounter()
        if self.rank == 0:  # the global counts so far, counted once
            self.base.tried = int(state.get("tried", 0))
            for r, n in state.get("skipped", {}).items():
                self.base.counts[r] = int(n)
