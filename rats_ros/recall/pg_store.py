"""PgCaptionStore: the caption store's contract on a PostgreSQL server, for a fleet's memory.

The same calls as :class:`~rats_ros.recall.store.CaptionStore` (add, next_clip_index, query,
rows_after, ...), with captions keyed by ``(robot, stream_id, clip_index)``: many robots write one
database, and a reader's scope is some robots (or all, ``"*"``) and some streams (or all).
Writes are idempotent: a retry of a stored caption (same index, start and text) is a success, so
a spool flushed twice writes nothing twice. Inserts take one transaction-scoped advisory lock, so
row ids are committed in id order and a reader's ``rows_after(last_id)`` never skips a row.

Failures are typed: :class:`~rats_ros.errors.StoreUnavailable` when the server cannot be reached
(a writer spools and retries), :class:`~rats_ros.errors.StoreRefused` when it answers but refuses
(wrong password, missing database: fix the URL), :class:`~rats_ros.errors.StoreError` otherwise.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import numpy as np
import psycopg

from rats_ros.errors import StoreError, StoreRefused, StoreUnavailable
from rats_ros.recall.pg_connect import claim_stream, connect_error, first_line, redacted
from rats_ros.recall.pg_schema import CAPTION_COLUMNS, init_schema
from rats_ros.recall.retention import PgPruner, RetentionPolicy
from rats_ros.recall.store import ClipIndexTaken, StoredCaption
from rats_ros.recall.stores import default_robot
from rats_ros.records import RECORD_FIELDS, record_values

_READ = ("id", "robot", "stream_id", *RECORD_FIELDS, "created_ns", "embedder")
_INSERT_LOCK = 0x7261747300  # "rats": serialises inserts so ids commit in order


class PgCaptionStore:
    """Captions of one robot's stream (writes) and of a scope of robots and streams (reads).

    :param url: ``postgresql://user[:password]@host:port/db``.
    :param stream_id: the stream written. :param robot: the robot written (default: hostname).
    :param read_robots: robots read: a tuple, or ``("*",)`` for the whole fleet; default:
        ``(robot,)``. :param read_streams: streams read; default: ``(stream_id,)``; ``()``: all.
    :param writer: take the exclusive writer claim of ``(robot, stream_id)`` (an advisory lock
        held by a connection of this object) when the server is reachable.
    :param lazy: an unreachable server is not an error here: every call tries to connect and
        raises StoreUnavailable until it can (a node then spools).
    :raises StoreRefused: the server refuses the URL; :raises StoreUnavailable: it cannot be
        reached (unless ``lazy``); :raises StoreError: another writer holds the claim.
    """

    readonly = False

    def __init__(self, url: str, stream_id: str = "default", robot: str = "",
                 read_robots: tuple[str, ...] | None = None, read_streams=None,
                 writer: str | None = None, lazy: bool = False, connect_timeout_s: float = 3.0,
                 retention=None):
        self.url, self.stream_id = url, stream_id
        self.robot = robot or default_robot()
        self.path = redacted(url)
        robots = tuple(read_robots or (self.robot,))
        self.read_robots = None if "*" in robots else robots
        self.read_streams = (stream_id,) if read_streams is None else (tuple(read_streams) or None)
        self.retention = retention or RetentionPolicy()
        self._pruner = None
        self._writer, self._timeout = writer, connect_timeout_s
        self._local = threading.local()
        self._claim = None
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._conn()
        except StoreUnavailable:
            if not lazy:
                raise
        if writer is not None:  # the writer applies retention to its own stream
            self._pruner = PgPruner(self, self.retention)
            self._pruner.start()

    # -- connections ------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=self._timeout)
        except psycopg.OperationalError as error:
            raise connect_error(self.path, error) from None
        except psycopg.ProgrammingError as error:  # a malformed URL
            raise StoreRefused(f"store URL {self.path!r} is invalid ({error}); give "
                               "postgresql://user:password@host:port/database") from None

    def _conn(self) -> psycopg.Connection:
        if self._closed:
            raise StoreError(f"caption store {self.path} is closed; open a new store")
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._connect()
            with self._lock:
                init_schema(conn, self.path)
                if self._writer is not None and self._claim is None:
                    self._claim = claim_stream(self._connect(), self.robot, self.stream_id,
                                         self._writer, self.path)
            self._local.conn = conn
        return conn

    @contextmanager
    def _errors(self, action: str):
        """psycopg errors -> typed store errors; a lost connection is dropped (reconnect)."""
        try:
            yield
        except psycopg.OperationalError as error:
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                conn.close()
            self._local.conn = None
            raise StoreUnavailable(f"{action} failed: the database at {self.path} is "
                                   f"unreachable ({first_line(error)})") from None
        except psycopg.Error as error:
            raise StoreError(f"{action} failed on {self.path}: {first_line(error)}") from None

    def run(self, action: str, fn):
        """Run ``fn(conn)`` on this thread's connection, errors typed."""
        with self._errors(action):
            return fn(self._conn())

    def prune(self, now_ns: int | None = None) -> int:
        """Apply the retention policy to this robot's stream now. :returns: captions deleted."""
        return (self._pruner or PgPruner(self, self.retention)).prune(now_ns)

    def close(self) -> None:
        """Close every connection this thread and the claim hold (idempotent)."""
        if self._pruner is not None:
            self._pruner.stop()
        self._closed = True
        for conn in (getattr(self._local, "conn", None), self._claim):
            if conn is not None:
                conn.close()
        self._claim = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- writes -----------------------------------------------------------------------------
    def add(self, caption, embedding=None, embedder: str = "", model: str | None = None) -> int:
        """Store one caption (committed on return); a retry of a stored one is a success.

        :raises ClipIndexTaken: the index holds another caption; :raises StoreUnavailable: the
            server is unreachable.
        """
        record = record_values(caption, **({} if model is None else {"model": model}))
        blob = None if embedding is None else np.ascontiguousarray(
            embedding, dtype="<f4").reshape(-1).tobytes()
        row = (self.robot, self.stream_id, *record.values(), time.time_ns(), blob,
               embedder if blob else "")

        def write(conn):
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INSERT_LOCK,))
                found = conn.execute(_insert_sql(), row).fetchone()
                if found is None:
                    return self._existing(conn, record)
                conn.execute(
                    "INSERT INTO rats_streams (robot, stream_id, next_clip_index, origin_ns) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (robot, stream_id) DO UPDATE SET "
                    "next_clip_index = GREATEST(rats_streams.next_clip_index, "
                    "EXCLUDED.next_clip_index)",
                    (self.robot, self.stream_id, record["clip_index"] + 1, record["start_ns"]))
                return found[0]

        return self.run("adding a caption", write)

    def _existing(self, conn, record) -> int:
        row = conn.execute("SELECT id, start_ns, text FROM rats_captions WHERE robot=%s AND "
                           "stream_id=%s AND clip_index=%s",
                           (self.robot, self.stream_id, record["clip_index"])).fetchone()
        if row[1:] == (record["start_ns"], record["text"]):
            return row[0]  # the same caption again (a retried flush): nothing to do
        raise ClipIndexTaken(f"clip_index {record['clip_index']} of robot {self.robot!r}, stream "
                             f"{self.stream_id!r} is already stored in {self.path} with another "
                             "caption")

    def set_embeddings(self, ids, embeddings, embedder: str) -> int:
        params = [(np.ascontiguousarray(e, dtype="<f4").tobytes(), embedder, int(i))
                  for i, e in zip(ids, embeddings, strict=True)]

        def write(conn):
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany("UPDATE rats_captions SET embedding=%s, embedder=%s "
                                "WHERE id=%s AND embedding IS NULL", params)
                return cur.rowcount

        return self.run("storing embeddings", write)

    # -- reads ------------------------------------------------------------------------------
    def _scope(self) -> tuple[str, list]:
        """The WHERE condition of what this object reads, and its parameters."""
        parts, params = [], []
        if self.read_robots is not None:
            parts.append("robot = ANY(%s)")
            params.append(list(self.read_robots))
        if self.read_streams is not None:
            parts.append("stream_id = ANY(%s)")
            params.append(list(self.read_streams))
        return (" AND ".join(parts) or "TRUE"), params

    def stream_state(self) -> tuple[int, int | None, int]:
        """``(next clip index of the stream written, first start stamp and deletions in the
        scope read)``, as :meth:`CaptionStore.stream_state`."""
        where, params = self._scope()

        def read(conn):
            own = conn.execute("SELECT next_clip_index FROM rats_streams WHERE robot=%s AND "
                               "stream_id=%s", (self.robot, self.stream_id)).fetchone()
            scope = conn.execute(f"SELECT min(origin_ns), sum(deleted) FROM rats_streams "
                                 f"WHERE {where}", params).fetchone()
            return (int(own[0]) if own else 0,
                    None if scope[0] is None else int(scope[0]), int(scope[1] or 0))

        return self.run("reading the stream state", read)

    def next_clip_index(self) -> int:
        return self.stream_state()[0]

    def origin_ns(self) -> int | None:
        return self.stream_state()[1]

    def count(self) -> int:
        where, params = self._scope()
        return self.run("counting captions", lambda c: c.execute(
            f"SELECT count(*) FROM rats_captions WHERE {where}", params).fetchone()[0])

    def query(self, since_ns: int = 0, until_ns: int = 0) -> list[StoredCaption]:
        where, params = self._scope()
        until = until_ns if until_ns > 0 else 2**63 - 1
        return self._select(f"WHERE {where} AND start_ns >= %s AND end_ns <= %s ORDER BY "
                            "start_ns, robot, stream_id, clip_index", [*params, since_ns, until])

    def get_many(self, ids) -> list[StoredCaption]:
        rows = self._select("WHERE id = ANY(%s)", [[int(i) for i in ids]])
        return sorted(rows, key=lambda r: (r.start_ns, r.clip_index))

    def rows_after(self, last_id: int, limit: int = 5000) -> list[StoredCaption]:
        where, params = self._scope()
        return self._select(f"WHERE {where} AND id > %s ORDER BY id LIMIT %s",
                            [*params, last_id, limit], with_embedding=True)

    def ids(self) -> np.ndarray:
        where, params = self._scope()
        rows = self.run("listing caption ids", lambda c: c.execute(
            f"SELECT id FROM rats_captions WHERE {where}", params).fetchall())
        return np.array([r[0] for r in rows], dtype=np.int64)

    def streams_under(self, base: str) -> tuple[str, ...]:
        """Stream ids of the robots read that are ``base`` or one of its cameras."""
        where, params = self._scope()
        where = where.replace("stream_id = ANY(%s)", "TRUE")  # every stream of those robots
        params = params[:1] if self.read_robots is not None else []
        rows = self.run("listing streams", lambda c: c.execute(
            f"SELECT DISTINCT stream_id FROM rats_streams WHERE {where} AND "
            "(stream_id = %s OR starts_with(stream_id, %s))", [*params, base, base + "/"]
        ).fetchall())
        return tuple(sorted(r[0] for r in rows))

    def robots(self) -> tuple[str, ...]:
        """Every robot that has written to this database."""
        rows = self.run("listing robots", lambda c: c.execute(
            "SELECT DISTINCT robot FROM rats_streams ORDER BY robot").fetchall())
        return tuple(r[0] for r in rows)

    def _select(self, where: str, params, with_embedding: bool = False) -> list[StoredCaption]:
        cols = ", ".join(_READ + (("embedding",) if with_embedding else ()))
        rows = self.run("reading captions", lambda c: c.execute(
            f"SELECT {cols} FROM rats_captions {where}", params).fetchall())
        out = [StoredCaption(**dict(zip(_READ, r, strict=False))) for r in rows]
        if with_embedding:
            for cap, r in zip(out, rows, strict=True):
                cap.embedding = None if r[-1] is None else np.frombuffer(r[-1], dtype="<f4")
        return out


def _insert_sql() -> str:
    columns = ("robot", "stream_id", *CAPTION_COLUMNS, "created_ns", "embedding", "embedder")
    return (f"INSERT INTO rats_captions ({', '.join(columns)}) VALUES "
            f"({', '.join(['%s'] * len(columns))}) "
            "ON CONFLICT (robot, stream_id, clip_index) DO NOTHING RETURNING id")
