"""Training records read lazily: a data file is a byte-offset index, a record is parsed when drawn.

A JSONL file (one record a line: the curation manifests, LLaVA-style JSONL) is indexed once: the
byte offset of every record's line, as a ``uint64`` array saved in the record cache
(``$KANGAROO_RECORDS_CACHE``, else ``$KANGAROO_CACHE/records``, default ``~/.cache/kangaroo/records``) and opened memory-mapped, so
every data worker and every rank on a machine reads the same pages of the OS page cache (no copy
per process) and memory does not grow with the data set. Record ``i`` is one ``seek`` + ``readline``
+ ``json.loads``. The index is keyed by the file's path, size and modification time (and the
``families`` filter), written to a temporary file and renamed, so ranks that build it at once agree.

A JSON list file (``[{...}, ...]``, what ``kangaroo synth`` writes) cannot be read a record at a
time; it is parsed whole, as before (the synthetic sets are small). Data at scale is JSONL.

Why JSONL with an offset index (docs/training.md has the measurement, ``kangaroo bench data``):
random access to any record (a seeded mixture draws any index, in any order, and resumes at any
position) at the cost of one index of 8 bytes a record; Parquet reads a whole row group to return
one row, and tar shards (WebDataset) can only be read in order, so they shuffle with a buffer and
resume by replaying.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

CHUNK = 1 << 24  # bytes scanned at a time while indexing


def cache_dir() -> str:
    """Where record indexes live: $KANGAROO_RECORDS_CACHE, else $KANGAROO_CACHE/records, else
    ~/.cache/kangaroo/records."""
    if os.environ.get("KANGAROO_RECORDS_CACHE"):
        return os.environ["KANGAROO_RECORDS_CACHE"]
    root = os.environ.get("KANGAROO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kangaroo")
    return os.path.join(root, "records")


def is_json_list(path: str) -> bool:
    """Whether the file is one JSON list (else JSONL): its first non-space byte is ``[``."""
    with open(path, "rb") as f:
        while True:
            block = f.read(4096)
            if not block:
                return False
            s = block.lstrip()
            if s:
                return s[:1] == b"["


def line_offsets(path: str) -> np.ndarray:
    """The byte offset of every non-blank line of a JSONL file (uint64), scanned in chunks."""
    starts = []
    pos = 0
    with open(path, "rb") as f:
        start_of_line = 0
        tail_blank = True  # the current (unfinished) line has only whitespace so far
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            buf = np.frombuffer(block, dtype=np.uint8)
            nl = np.flatnonzero(buf == 10)
            # a line is kept if it has a non-space byte: test each line's first byte, then fall back
            bounds = np.concatenate([[-1], nl, [len(buf)]])
            for a, b in zip(bounds[:-1], bounds[1:]):
                piece = block[a + 1:b]
                if piece.strip():
                    if tail_blank:
                        starts.append(start_of_line)
                    tail_blank = False
                if b < len(buf):  # the line ends here
                    start_of_line = pos + b + 1
                    tail_blank = True
            pos += len(block)
    return np.asarray(starts, dtype=np.uint64)


def _fast_offsets(path: str) -> np.ndarray:
    """``line_offsets`` for files without blank lines (the common case): vectorised, no Python loop
    per line. Falls back to the careful scan if any line is blank."""
    ends = []
    pos = 0
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            nl = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10).astype(np.uint64)
            ends.append(nl + np.uint64(pos))
            pos += len(block)
    ends = np.concatenate(ends) if ends else np.zeros(0, np.uint64)
    starts = np.concatenate([np.zeros(1, np.uint64), ends + np.uint64(1)])
    lengths = np.concatenate([ends, np.asarray([size], np.uint64)]) - starts
    if np.any(lengths[:-1] < 2) or (lengths[-1] == 1):  # an empty or one-byte line: check them one by one
        return line_offsets(path)
    return starts[:-1] if lengths[-1] == 0 else starts


def _index_path(path: str, families: list[str] | None) -> str:
    st = os.stat(path)
    key = json.dumps([os.path.abspath(path), st.st_size, st.st_mtime_ns, sorted(families) if families else None])
    return os.path.join(cache_dir(), hashlib.sha1(key.encode()).hexdigest()[:20] + ".npy")


def build_index(path: str, families: list[str] | None = None) -> np.ndarray:
    """The offsets of the file's records (only those of ``families``, if given), from the cache or
    built and cached; memory-mapped."""
    ipath = _index_path(path, families)
    if os.path.exists(ipath):
        return np.load(ipath, mmap_mode="r")
    offs = _fast_offsets(path)
    if families is not None:
        keep = set(families)
        with open(path, "rb") as f:
            mask = np.fromiter((_record_at(f, int(o), path).get("family") in keep for o in offs), bool, len(offs))
        offs = offs[mask]
    os.makedirs(os.path.dirname(ipath), exist_ok=True)
    tmp = f"{ipath}.{os.getpid()}.part"
    with open(tmp, "wb") as f:
        np.save(f, offs)
    os.replace(tmp, ipath)
    return np.load(ipath, mmap_mode="r")


def _record_at(f, offset: int, path: str) -> dict:
    f.seek(offset)
    line = f.readline()
    try:
        rec = json.loads(line)
    except ValueError as e:
        raise BadRecord(path, offset, f"not valid JSON ({e})") from None
    if not isinstance(rec, dict):
        raise BadRecord(path, offset, f"a record is a JSON object, got {type(rec).__name__}")
    return rec


class BadRecord(ValueError):
    """A record that cannot be parsed or lacks a field its format needs (skipped, counted)."""

    reason = "bad_record"

    def __init__(self, path: str, where, message: str):
        self.path, self.where, self.detail = path, where, message
        super().__init__(f"{path} (record at {where}): {message}")

    def __reduce__(self):
        return (type(self), (self.path, self.where, self.detail))


class Records:
    """The records of one data file, by index: ``len(records)``, ``records[i]`` (a dict)."""

    def __init__(self, path: str, families: list[str] | None = None):
        self.path = path
        self._list = None
        self._file = None
        if is_json_list(path):
            with open(path, encoding="utf-8") as f:
                records = json.load(f)
            if families is not None:
                records = [r for r in records if r.get("family") in families]
            self._list = records
        else:
            self.offsets = build_index(path, families)

    def __len__(self) -> int:
        return len(self._list) if self._list is not None else len(self.offsets)

    def __getitem__(self, i: int) -> dict:
        if self._list is not None:
            return self._list[i]
        if self._file is None:  # opened lazily: a forked worker opens its own handle
            self._file = open(self.path, "rb")
        return _record_at(self._file, int(self.offsets[i]), self.path)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getstate__(self):
        return {**self.__dict__, "_file": None}
