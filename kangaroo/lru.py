"""A thread-safe LRU bounded by the total size of its values (the server's visual cache, the
encoder's per-frame cache)."""

from __future__ import annotations

import threading
from collections import OrderedDict


class LRUBytes:
    """A thread-safe LRU bounded by the total size of its values."""

    def __init__(self, budget: int):
        self.budget, self.used = budget, 0
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key][0]
            return None

    def put(self, key, value, size: int) -> None:
        with self.lock:
            if key in self.items:
                self.used -= self.items.pop(key)[1]
            self.items[key] = (value, size)
            self.used += size
            while self.used > self.budget and len(self.items) > 1:
                _, (_, s) = self.items.popitem(last=False)
                self.used -= s

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
            self.used = 0
