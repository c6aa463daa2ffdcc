"""Captions that wait for the store: a full disk or an I/O error delays them, never loses them
silently.

A caption is committed before it is published. When the store refuses a write, the caption and
those after it wait here, in order, and are committed (then published) when the store accepts
writes again; retries are spaced by ``retry_s``. The backlog is bounded: beyond ``capacity`` the
oldest caption is given up and returned to the caller, to be counted and reported.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from rats_ros.errors import ConfigError, StoreError


class StoreBacklog:
    """Captions waiting for ``write``, oldest first.

    :param write: ``write(caption, embedding)`` commits one caption; raises ``StoreError``.
    :param capacity: captions held at most.
    :param retry_s: seconds between attempts while the store refuses writes.
    """

    def __init__(self, write: Callable, capacity: int, retry_s: float = 1.0):
        if capacity < 1 or retry_s <= 0:
            raise ConfigError(f"backlog capacity must be >= 1 and retry_s > 0, got {capacity}, "
                              f"{retry_s}")
        self._write, self.capacity, self._retry_s = write, capacity, retry_s
        self._items: deque = deque()
        self._next_try = 0.0
        self.last_error: StoreError | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, caption, embedding, extra=None):
        """Queue one caption (``extra`` comes back with it when stored) and try the store now.

        :returns: the caption given up to make room, or None.
        """
        self._items.append((caption, embedding, extra))
        self._next_try = 0.0
        return self._items.popleft()[0] if len(self._items) > self.capacity else None

    def flush(self, on_stored: Callable, now: float | None = None) -> StoreError | None:
        """Commit waiting captions in order, calling ``on_stored(caption, extra)`` after each.

        :returns: the error that stopped it (the store still refuses), or None when all are in.
        """
        now = time.monotonic() if now is None else now
        if not self._items or now < self._next_try:
            return self.last_error if self._items else None
        while self._items:
            caption, embedding, extra = self._items[0]
            try:
                self._write(caption, embedding)
            except StoreError as error:
                self.last_error, self._next_try = error, now + self._retry_s
                return error
            self._items.popleft()
            on_stored(caption, extra)
        self.last_error = None
        return None
