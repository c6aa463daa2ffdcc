"""One writer per stream: an exclusive claim on a stream of a caption store.

Two writers on one stream (two cameras' nodes started with the same ``store_path`` and the
default ``stream_id``) would both number clips from the same index and answer from each other's
captions. The claim is an advisory lock (``flock``) on a small file beside the store, named after
the stream: the kernel releases it when its process ends, even by ``kill -9``, so a crashed
writer never blocks its restart. The file holds the holder's description, for the refusal.
"""
from __future__ import annotations

import fcntl
import os
import re

from rats_ros.errors import StoreError


def claim_path(store_path: str, stream_id: str) -> str:
    """The lock file of ``stream_id`` of the store at ``store_path``."""
    return f"{store_path}.{re.sub(r'[^A-Za-z0-9_.-]', '_', stream_id)}.writer"


class StreamClaim:
    """Hold the writer's claim on one stream until :meth:`release` or the process ends.

    :param store_path: the store file.
    :param stream_id: the stream to write.
    :param holder: who writes, for the message another writer gets (e.g. the node's name and pid).
    :raises StoreError: when another writer holds the stream; the message names it.
    """

    def __init__(self, store_path: str, stream_id: str, holder: str):
        self.path = claim_path(store_path, stream_id)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise StoreError(f"cannot create the writer lock {self.path}: {err}; choose a "
                             "store file in a writable directory") from err
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(self._fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise StoreError(
                f"stream {stream_id!r} of caption store {store_path} is already being written "
                f"by {other}; give each camera its own stream (parameter stream_id, e.g. "
                "stream_id:=front) or stop the other writer") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, holder.encode(), 0)

    def release(self) -> None:
        """Give the stream up (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
