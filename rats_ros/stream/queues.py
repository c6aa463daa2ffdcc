"""The bounded queue between a producer and a consumer thread (the node's frames and clips):
full, it drops the oldest item, so a slow consumer sees the newest data and the producer (a
subscription callback) never blocks."""
from __future__ import annotations

import threading
from collections import deque


class DropOldestQueue:
    """A bounded FIFO shared by two threads; a put into a full queue drops the oldest item."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: deque = deque()
        self._ready = threading.Condition()

    def put(self, item) -> bool:
        """:returns: True when the oldest item was dropped to make room."""
        with self._ready:
            dropped = len(self._items) >= self.capacity
            if dropped:
                self._items.popleft()
            self._items.append(item)
            self._ready.notify()
            return dropped

    def get(self, timeout: float):
        """:returns: the oldest item, or None after ``timeout`` seconds without one."""
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            return self._items.popleft() if self._items else None

    def clear(self) -> None:
        with self._ready:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
