"""SpooledStore: a fleet database writer that loses nothing while the database is away.

Each caption goes to the PostgreSQL store; when the server is unreachable it is committed to a
local SQLite spool instead (the same caption store format, next to the node), and every caption
after it too, so the order holds. :meth:`SpooledStore.flush` moves spooled captions to the server
in order when it answers again; a caption is deleted from the spool only after the server
committed it, and the server's writes are idempotent, so a crash between the two writes nothing
twice. The spool is a file: a node restarted during an outage finds its captions there. The
spool also remembers the next clip index of every caption the server took, so a restart during
an outage continues the indices. A full spool (``capacity``) refuses the caption with a
StoreError: the node then holds it in memory (``store_backlog``) and reports ERROR.
"""
from __future__ import annotations

import time

from rats_ros.errors import StoreError, StoreUnavailable
from rats_ros.recall.schema import transaction


class SpooledStore:
    """The writer side of a PostgreSQL stream with a SQLite spool.

    :param remote: a lazy :class:`~rats_ros.recall.pg_store.PgCaptionStore` (the stream).
    :param spool: a :class:`~rats_ros.recall.store.CaptionStore` on a local file, same stream
        id, holding this stream's writer claim on this machine.
    :param capacity: captions the spool holds at most.
    :param retry_s: seconds between attempts to reach the server while captions are spooled.
    """

    def __init__(self, remote, spool, capacity: int = 10000, retry_s: float = 2.0):
        self.remote, self.spool, self.capacity, self.retry_s = remote, spool, capacity, retry_s
        self.stream_id, self.path = remote.stream_id, remote.path
        self.last_error: StoreError | None = None
        self._next_try = 0.0

    def next_clip_index(self) -> int:
        """The larger of the server's and the spool's next index (either may be ahead)."""
        try:
            remote = self.remote.next_clip_index()
        except StoreUnavailable as error:
            self.last_error, remote = error, 0
        return max(remote, self.spool.next_clip_index())

    def spooled(self) -> int:
        """Captions waiting in the spool for the server."""
        return self.spool.count()

    def add(self, caption, embedding=None, embedder: str = "", model: str | None = None) -> None:
        """Commit the caption to the server, or to the spool while the server is away (or while
        older captions still wait there).

        :raises StoreError: the spool is full or cannot be written; ClipIndexTaken from the
            server (another writer numbered the stream).
        """
        if not self.flush():
            self._spool(caption, embedding, embedder, model)
            return
        try:
            self.remote.add(caption, embedding, embedder, model)
        except StoreUnavailable as error:
            self.last_error, self._next_try = error, time.monotonic() + self.retry_s
            self._spool(caption, embedding, embedder, model)
            return
        self._remember_index(caption.clip_index + 1, caption.start_ns)

    def flush(self) -> bool:
        """Move spooled captions to the server, oldest first.

        :returns: True when the spool is empty (everything is on the server).
        """
        if self.spool.count() == 0:
            self.last_error = None
            return True
        if time.monotonic() < self._next_try:
            return False
        while rows := self.spool.rows_after(0, 100):
            for row in rows:
                try:
                    self.remote.add(row, row.embedding, row.embedder, row.model)
                except StoreUnavailable as error:
                    self.last_error, self._next_try = error, time.monotonic() + self.retry_s
                    return False
                self._forget(row.id)
        self.last_error = None
        return True

    def close(self) -> None:
        self.remote.close()
        self.spool.close()

    def _spool(self, caption, embedding, embedder, model) -> None:
        if self.spool.count() >= self.capacity:
            raise StoreError(f"the database at {self.path} has been unreachable for "
                             f"{self.capacity} captions (spool_max_rows) and the spool "
                             f"{self.spool.path} is full; start the database")
        self.spool.add(caption, embedding, embedder, model=model)

    def _forget(self, row_id: int) -> None:
        """Delete one flushed caption from the spool (its index stays remembered)."""
        self.spool.run("deleting a flushed caption", lambda conn: conn.execute(
            "DELETE FROM captions WHERE id=?", (row_id,)))

    def _remember_index(self, next_index: int, start_ns: int) -> None:
        """Keep the stream's next clip index in the spool file too, for a restart during a later
        outage (the server's own counter cannot be read then)."""
        def write(conn):
            with transaction(conn):
                conn.execute(
                    "INSERT INTO streams (stream_id, next_clip_index, origin_ns) VALUES (?, ?, ?)"
                    " ON CONFLICT (stream_id) DO UPDATE SET "
                    "next_clip_index = max(next_clip_index, excluded.next_clip_index)",
                    (self.stream_id, next_index, start_ns))

        self.spool.run("remembering the next clip index", write)
