"""The server's store: uploads and data: URL videos, one file per content hash, bounded in bytes.

Files are named ``file-<first 32 hex digits of their SHA-256><suffix>``, so the same bytes are
stored once whichever way they arrive. With ``max_bytes`` set, the least recently used files
are deleted once the total passes it (a file is "used" when stored, resolved or served), never
one a request is decoding right now (``pinned``). A store folder that already holds files
(a restarted server) is indexed by modification time, oldest first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import OrderedDict


class Store:
    def __init__(self, root: str, max_bytes: int | None = None):
        self.root = os.path.abspath(root)
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self.files: OrderedDict[str, int] = OrderedDict()  # name -> bytes, least recently used first
        self.pins: dict[str, int] = {}
        self.evicted = 0
        if os.path.isdir(self.root):
            names = [n for n in os.listdir(self.root) if n.startswith("file-") and not n.endswith(".part")]
            for n in sorted(names, key=lambda n: os.stat(os.path.join(self.root, n)).st_mtime_ns):
                self.files[n] = os.path.getsize(os.path.join(self.root, n))
        with self.lock:
            self._evict()

    @property
    def used_bytes(self) -> int:
        with self.lock:
            return sum(self.files.values())

    def owns(self, path: str) -> bool:
        return os.path.dirname(os.path.abspath(path)) == self.root and os.path.basename(path).startswith("file-")

    def put(self, data: bytes, suffix: str = ".mp4") -> tuple[str, str, bool]:
        """Store ``data`` under its hash: (file id, path, created: False when these bytes were there already)."""
        fid = "file-" + hashlib.sha256(data).hexdigest()[:32]
        os.makedirs(self.root, exist_ok=True)
        name = fid + suffix
        path = os.path.join(self.root, name)
        with self.lock:
            created = not os.path.exists(path)
            if created:
                tmp = f"{path}.{threading.get_ident()}.part"
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            self.files[name] = len(data)
            self.files.move_to_end(name)
            self._evict(keep=name)
        return fid, path, created

    def touch(self, path: str) -> None:
        """Mark a stored file as just used (it moves to the back of the eviction order)."""
        name = os.path.basename(path)
        with self.lock:
            if name in self.files:
                self.files.move_to_end(name)

    @contextlib.contextmanager
    def pinned(self, path: str):
        """While inside, the file at ``path`` is not evicted (a request is decoding it)."""
        name = os.path.basename(path) if self.owns(path) else None
        if name is not None:
            with self.lock:
                self.pins[name] = self.pins.get(name, 0) + 1
                if name in self.files:
                    self.files.move_to_end(name)
        try:
            yield path
        finally:
            if name is not None:
                with self.lock:
                    self.pins[name] -= 1
                    if not self.pins[name]:
                        del self.pins[name]
                    self._evict()

    def remove(self, path: str) -> None:
        """Delete a stored file (a refused upload), unless another request holds it."""
        name = os.path.basename(path)
        with self.lock:
            if self.owns(path) and name not in self.pins:
                self.files.pop(name, None)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.root, name))

    def _evict(self, keep: str | None = None) -> None:
        """Least recently used first, until under ``max_bytes``; the caller holds ``lock``."""
        if self.max_bytes is None:
            return
        total = sum(self.files.values())
        for name in list(self.files):
            if total <= self.max_bytes:
                break
            if name == keep or name in self.pins:
                continue
            total -= self.files.pop(name)
            self.evicted += 1
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.root, name))
