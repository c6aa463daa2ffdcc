"""CaptionStore: the captions of one stream in an embedded SQLite file (WAL, schema-versioned).

One file per ``store_path`` may hold several streams (``stream_id``); a store object reads and
writes one of them. Every thread gets its own connection (SQLite connections are not shared
between threads), transactions are short, and ``busy_timeout`` makes a writer wait for another
writer instead of failing, so the captioning thread, several question threads and other processes
can use the file at once. ``add`` commits before it returns: the node publishes a caption only
after it is durable, and ``kill -9`` of a writer loses at most the row it had not committed.

Retention (:class:`RetentionPolicy`) runs in a background thread, in small batches of short
transactions, never on the captioning path: a writer waits at most for one batch (a few ms).
"""
import os
import sqlite3
import threading
import time
from dataclasses import dataclass

import numpy as np

from rats_ros.errors import ConfigError, StoreError, StoreRefused
from rats_ros.recall.claim import StreamClaim
from rats_ros.recall.connections import ThreadConnections, file_identity
from rats_ros.recall.retention import Pruner, RetentionPolicy
from rats_ros.recall.schema import (
    SCHEMA_VERSION,
    check_schema,
    error_hint,
    init_schema,
    not_a_store,
    transaction,
)
from rats_ros.records import RECORD_FIELDS, CaptionRecord, record_values

# Public names, some defined in the helper modules; importers use rats_ros.recall.store.
__all__ = ["CaptionStore", "RetentionPolicy", "StoredCaption", "SCHEMA_VERSION"]
_SYNC_MODES = ("FULL", "NORMAL")
# Columns derive from the record: each record field is a column of the same name.
_READ = ("id", "stream_id", *RECORD_FIELDS, "created_ns", "embedder")
_WRITE = ("stream_id", *RECORD_FIELDS, "created_ns", "embedding", "embedder")
_INSERT = (f"INSERT INTO captions ({', '.join(_WRITE)}) "
           f"VALUES ({', '.join('?' * len(_WRITE))})")
class ClipIndexTaken(StoreError):
    """The caption's clip index is already stored in its stream (a writer without the claim)."""


@dataclass
class StoredCaption(CaptionRecord):
    """One stored caption: the record and its row. ``embedding`` is filled only by
    :meth:`CaptionStore.rows_after`."""

    id: int = 0
    stream_id: str = ""
    robot: str = ""  # the writing robot (PostgreSQL fleet stores; empty in SQLite)
    created_ns: int = 0
    embedder: str = ""
    embedding: np.ndarray | None = None  # (d,) float32


class CaptionStore:
    """Captions of one stream in a SQLite file.

    :param path: the SQLite file; its directory is created when missing.
    :param stream_id: the stream this object reads and writes.
    :param retention: optional pruning policy, applied by a background thread.
    :param synchronous: ``"FULL"`` (durable against power loss) or ``"NORMAL"`` (in WAL mode
        durable against process crashes, faster inserts).
    :param busy_timeout_s: how long a statement waits for another writer before failing.
    :param create: create a missing file (the captioner); False for readers such as ``ask``,
        which should fail on a wrong path instead of answering from an empty new store.
    :param readonly: open for reading only (``rats-ros ask``): works on a read-only file or
        medium; nothing is written, not even lazily computed embeddings.
    :param writer: who writes this stream (e.g. a node's name and pid): takes the stream's
        exclusive writer claim (:class:`~rats_ros.recall.claim.StreamClaim`) until
        :meth:`close`; None for readers.
    :param read_streams: the streams that reads (count, query, retrieval rows) cover, e.g. every
        camera of a node; default: ``stream_id`` alone. Writes always go to ``stream_id``.
    :raises StoreError: the file is missing (``create=False``) or cannot be created, is locked,
        corrupt, not a caption store, or has a newer schema.
    """

    def __init__(self, path, stream_id: str = "default", retention: RetentionPolicy | None = None,
                 synchronous: str = "FULL", busy_timeout_s: float = 10.0, create: bool = True,
                 writer: str | None = None, readonly: bool = False,
                 read_streams: tuple[str, ...] | None = None):
        if synchronous.upper() not in _SYNC_MODES:
            raise ConfigError(f"synchronous must be one of {_SYNC_MODES}, got {synchronous!r}")
        if not stream_id:
            raise ConfigError("stream_id must be a non-empty string")
        self.path = os.fspath(path)
        self.stream_id = stream_id
        self.read_streams = tuple(read_streams or (stream_id,))
        self._in_streams = f"IN ({', '.join('?' * len(self.read_streams))})"
        self.retention = retention
        self.readonly = readonly
        self._connections = ThreadConnections(self.path, readonly, int(busy_timeout_s * 1000),
                                              synchronous.upper())
        self._closed = threading.Event()
        if not create and not os.path.isfile(self.path):
            raise StoreError(f"no caption store at {self.path}; check store_path, or caption a "
                             "stream first (rats-ros caption / the rats_stream node)")
        self._claim = None
        try:
            self._open()
            if writer is not None:
                self._claim = StreamClaim(self.path, stream_id, writer)
        except BaseException:
            self.close()
            raise
        self._pruner = Pruner(self, retention or RetentionPolicy())
        self._pruner.start()

    # -- connections ------------------------------------------------------------------------
    def run(self, action: str, fn):
        """Run ``fn(conn)`` on this thread's connection; turn SQLite errors into StoreError."""
        if self._closed.is_set():
            raise StoreError(f"caption store {self.path} is closed; open a new CaptionStore")
        try:
            return fn(self._connections.get())
        except sqlite3.Error as err:
            raise StoreError(f"{action} failed on caption store {self.path}: {err}; "
                             f"{error_hint(str(err))}") from err

    def _check_file(self) -> None:
        """:raises StoreError: when the store file was deleted or replaced since it was opened
        (writes would go to an unlinked file and clip indices would repeat after a restart)."""
        try:
            identity = file_identity(self.path)
        except OSError:
            identity = None
        if identity != self._identity:
            raise StoreError(f"caption store {self.path} was deleted or replaced while open: "
                             "nothing more is written to it; restore the file, or restart the "
                             "node to start a new store (clip indices then start over)")

    def _open(self):
        try:
            self._open_file()
        except StoreError as error:
            if not_a_store(error) and not isinstance(error, StoreRefused):
                raise StoreRefused(str(error)) from error  # a setting to fix: exit code 2
            raise

    def _open_file(self):
        if self.readonly:
            self.run("opening read-only", lambda conn: check_schema(conn, self.path))
            self._identity = file_identity(self.path)
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create directory {directory} for the caption store: {err}; "
                             "choose a store file in a writable location") from err
        if os.path.isdir(self.path):
            raise StoreRefused(f"caption store {self.path} is a directory; give a file path "
                               f"such as {os.path.join(self.path, 'captions.db')}")
        self.run("opening", lambda conn: init_schema(conn, self.path))
        self._identity = file_identity(self.path)

    def close(self):
        """Stop the retention thread and close every thread's connection. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        if hasattr(self, "_pruner"):  # absent when opening failed
            self._pruner.stop()
        if self._claim is not None:
            self._claim.release()
        self._connections.close_all()

    def prune(self, now_ns: int | None = None) -> int:
        """Apply the retention policy now (see :meth:`~rats_ros.recall.retention.Pruner.prune`).

        :returns: the number of captions deleted.
        """
        return self._pruner.prune(now_ns)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- writes -----------------------------------------------------------------------------
    def add(self, caption, embedding: np.ndarray | None = None, embedder: str = "",
            model: str | None = None) -> int:
        """Store one caption and commit it before returning.

        :param caption: a :class:`~rats_ros.records.CaptionRecord` (or any object with its
            fields, such as a ``ClipCaption``).
        :param embedding: ``(d,)`` embedding of ``caption.text`` or None (computed lazily later).
        :param embedder: name of the embedder that produced ``embedding``.
        :param model: the captioning model's name; when None, ``caption.model`` (or ``""``).
        :returns: the row id.
        :raises StoreError: the clip index is already stored, or the write failed.
        """
        self._check_file()
        record = record_values(caption, **({} if model is None else {"model": model}))
        blob = None
        if embedding is not None:
            blob = np.ascontiguousarray(embedding, dtype="<f4").reshape(-1).tobytes()
        row = (self.stream_id, *record.values(), time.time_ns(), blob, embedder if blob else "")
        index = record["clip_index"]

        def write(conn):
            with transaction(conn):
                cur = conn.execute(_INSERT, row)
                conn.execute(
                    "INSERT INTO streams (stream_id, next_clip_index, origin_ns) VALUES (?, ?, ?) "
                    "ON CONFLICT (stream_id) DO UPDATE SET "
                    "next_clip_index = max(next_clip_index, excluded.next_clip_index)",
                    (self.stream_id, index + 1, record["start_ns"]))
            return cur.lastrowid

        try:
            return self.run("adding a caption", write)
        except StoreError as err:
            if "UNIQUE" in str(err):
                raise ClipIndexTaken(
                    f"clip_index {index} of stream {self.stream_id!r} is already stored in "
                    f"{self.path}; start the captioner at store.next_clip_index() "
                    f"({self.next_clip_index()})") from err.__cause__
            raise

    def set_embeddings(self, ids, embeddings: np.ndarray, embedder: str) -> int:
        """Fill in embeddings of rows stored without one (rows that have one are left alone).

        :param embeddings: ``(n, d)`` float32, one row per id.
        :returns: the number of rows updated.
        """
        params = [(np.ascontiguousarray(e, dtype="<f4").tobytes(), embedder, int(i))
                  for i, e in zip(ids, embeddings, strict=True)]

        def write(conn):
            with transaction(conn):
                return conn.executemany("UPDATE captions SET embedding=?, embedder=? "
                                        "WHERE id=? AND embedding IS NULL", params).rowcount

        return self.run("storing embeddings", write)

    # -- reads ------------------------------------------------------------------------------
    def stream_state(self) -> tuple[int, int | None, int]:
        """``(next_clip_index, origin_ns, deleted)``: the next clip index of this stream, and of
        the streams read, the start stamp of the first caption ever (None before the first) and
        how many captions retention has deleted so far (lets the retrieval index notice
        deletions cheaply)."""
        rows = self.run("reading the stream state", lambda c: c.execute(
            "SELECT stream_id, next_clip_index, origin_ns, deleted FROM streams "
            f"WHERE stream_id {self._in_streams} OR stream_id=?",
            (*self.read_streams, self.stream_id)).fetchall())
        read = [r for r in rows if r[0] in self.read_streams]
        own = [int(r[1]) for r in rows if r[0] == self.stream_id]
        origin = min((int(r[2]) for r in read), default=None)
        return (own[0] if own else 0), origin, sum(int(r[3]) for r in read)

    def streams_under(self, base: str) -> tuple[str, ...]:
        """Stored stream ids that are ``base`` or one of its cameras (``base/<camera>``)."""
        rows = self.run("listing streams", lambda c: c.execute(
            "SELECT stream_id FROM streams WHERE stream_id=? OR substr(stream_id, 1, ?)=?",
            (base, len(base) + 1, base + "/")).fetchall())
        return tuple(sorted(r[0] for r in rows))

    def next_clip_index(self) -> int:
        """The clip index the next caption of this stream should get (continues after restarts
        and after retention deleted every row)."""
        return self.stream_state()[0]

    def origin_ns(self) -> int | None:
        """Start stamp of the first caption ever stored for this stream (None when empty)."""
        return self.stream_state()[1]

    def count(self) -> int:
        """Captions of the streams read."""
        return self.run("counting captions", lambda c: c.execute(
            f"SELECT COUNT(*) FROM captions WHERE stream_id {self._in_streams}",
            self.read_streams).fetchone()[0])

    def query(self, since_ns: int = 0, until_ns: int = 0) -> list[StoredCaption]:
        """Captions of the streams read with ``start_ns >= since_ns`` and ``end_ns <= until_ns``
        (0: no upper bound), in time order."""
        until = until_ns if until_ns > 0 else 2**63 - 1
        return self._select(f"WHERE stream_id {self._in_streams} AND start_ns>=? AND end_ns<=? "
                            "ORDER BY start_ns, stream_id, clip_index",
                            (*self.read_streams, since_ns, until))

    def get_many(self, ids) -> list[StoredCaption]:
        """Captions with these row ids (missing ones, e.g. pruned, are skipped), in time order."""
        ids = [int(i) for i in ids]
        rows = []
        for first in range(0, len(ids), 500):
            chunk = ids[first:first + 500]
            marks = ",".join("?" * len(chunk))
            rows += self._select(f"WHERE id IN ({marks})", chunk)
        return sorted(rows, key=lambda r: (r.start_ns, r.clip_index))

    def rows_after(self, last_id: int, limit: int = 5000) -> list[StoredCaption]:
        """Up to ``limit`` captions of the streams read with ``id > last_id`` in id order, with
        their embeddings: the incremental read of the retrieval index (ids are never reused)."""
        # "+stream_id": walk the rowid range from last_id instead of sorting the whole stream.
        return self._select(f"WHERE +stream_id {self._in_streams} AND id>? ORDER BY id LIMIT ?",
                            (*self.read_streams, last_id, limit), with_embedding=True)

    def ids(self) -> np.ndarray:
        """All row ids of the streams read (any order): ``(n,)`` int64."""
        rows = self.run("listing caption ids", lambda c: c.execute(
            f"SELECT id FROM captions WHERE stream_id {self._in_streams}",
            self.read_streams).fetchall())
        return np.array([r[0] for r in rows], dtype=np.int64)

    def _select(self, where: str, params, with_embedding: bool = False) -> list[StoredCaption]:
        cols = ", ".join(_READ + (("embedding",) if with_embedding else ()))
        rows = self.run("reading captions", lambda c: c.execute(
            f"SELECT {cols} FROM captions {where}", params).fetchall())
        out = [StoredCaption(**dict(zip(_READ, r, strict=False))) for r in rows]
        for cap in out:  # SQLite keeps booleans as integers
            cap.has_pose = bool(cap.has_pose)
        if with_embedding:
            for cap, r in zip(out, rows, strict=True):
                cap.embedding = None if r[-1] is None else np.frombuffer(r[-1], dtype="<f4")
        return out

