"""Which caption store a location names, and the contract every store meets.

A location is a SQLite file path or a ``postgresql://`` URL. :func:`open_writer` and
:func:`open_reader` are the one place that tells them apart; psycopg is imported only for a
URL, so a robot without it keeps its SQLite store. :class:`CaptionStoreLike` is what the
captioning loop, the retrieval and the node use of a store, whichever it is.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rats_ros.errors import ConfigError
from rats_ros.recall.pg_schema import is_url
from rats_ros.recall.retention import RetentionPolicy

__all__ = ["CaptionStoreLike", "SpoolConfig", "default_robot", "is_url", "open_reader",
           "open_writer", "stream_name"]


class CaptionStoreLike(Protocol):
    """The store contract: :class:`~rats_ros.recall.store.CaptionStore` (SQLite),
    :class:`~rats_ros.recall.pg_store.PgCaptionStore` (PostgreSQL) and, for writing,
    :class:`~rats_ros.recall.spool.SpooledStore` meet it."""

    path: str
    stream_id: str

    def add(self, caption, embedding: np.ndarray | None = None, embedder: str = "",
            model: str | None = None): ...

    def set_embeddings(self, ids, embeddings: np.ndarray, embedder: str) -> int: ...

    def next_clip_index(self) -> int: ...

    def stream_state(self) -> tuple[int, int | None, int]: ...

    def streams_under(self, base: str) -> tuple[str, ...]: ...

    def origin_ns(self) -> int | None: ...

    def count(self) -> int: ...

    def query(self, since_ns: int = 0, until_ns: int = 0) -> list: ...

    def get_many(self, ids) -> list: ...

    def rows_after(self, last_id: int, limit: int = 5000) -> list: ...

    def ids(self) -> np.ndarray: ...

    def prune(self, now_ns: int | None = None) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SpoolConfig:
    """Where a PostgreSQL writer keeps captions while the server is out of reach.

    :param path: the local SQLite spool file.
    :param max_rows: captions held there at most (the oldest spooled first go on).
    """

    path: str
    max_rows: int

    def __post_init__(self):
        if not self.path or self.max_rows < 1:
            raise ConfigError(f"a spool needs a file and max_rows >= 1, got {self.path!r}, "
                              f"{self.max_rows}")


def stream_name(stream_id: str, camera: str) -> str:
    """A camera's stream: ``stream_id`` for the single unnamed camera ``""``, else
    ``<stream_id>/<camera>``."""
    return f"{stream_id}/{camera}" if camera else stream_id


def default_robot() -> str:
    """This machine's name: the default robot id of a fleet store."""
    return socket.gethostname() or "robot"


def open_writer(location: str, stream_id: str, *, writer: str, robot: str = "",
                retention: RetentionPolicy | None = None, spool: SpoolConfig | None = None):
    """The store one stream's captions are written to, holding that stream's writer claim.

    :param location: a SQLite file or a ``postgresql://`` URL.
    :param writer: who writes (named by the claim when another writer asks).
    :param robot: this robot's id in a PostgreSQL store (default: the hostname).
    :param spool: for a URL: spool captions locally while the server is out of reach (the
        server is then reached lazily); without one an unreachable server is an error now.
    :raises StoreError: the store cannot be opened or the stream is claimed.
    """
    from rats_ros.recall.store import CaptionStore

    if not is_url(location):
        return CaptionStore(location, stream_id, retention, writer=writer)
    PgCaptionStore = _pg_store_class()
    robot = robot or default_robot()
    if spool is None:
        return PgCaptionStore(location, stream_id, robot, writer=writer, retention=retention)
    from rats_ros.recall.spool import SpooledStore

    remote = PgCaptionStore(location, stream_id, robot, writer=writer, lazy=True,
                            retention=retention)
    try:
        local = CaptionStore(spool.path, f"{robot}/{stream_id}", writer=writer)
    except BaseException:
        remote.close()
        raise
    return SpooledStore(remote, local, spool.max_rows)


def open_reader(location: str, stream_id: str, *, robot: str = "",
                streams: tuple[str, ...] | None = None, robots: tuple[str, ...] | None = None,
                existing: bool = False, lazy: bool = False):
    """A store that reads ``streams`` (default: ``stream_id`` alone; for a URL ``()`` is every
    stream of the robots read) and never claims them.

    :param robots: for a URL, the robots whose captions are read (``("*",)``: the fleet;
        default: ``robot``); a SQLite file holds one robot's.
    :param existing: the file must exist and is opened read-only (the CLI's ``ask``).
    :param lazy: for a URL, reach the server at the first read (an outage is then the
        question's error, not the opener's).
    :raises StoreError: the store cannot be opened; :raises ConfigError: robots for a file.
    """
    if not is_url(location):
        if robots:
            raise ConfigError("questions about other robots need a shared store: give a "
                              "postgresql:// URL")
        from rats_ros.recall.store import CaptionStore

        return CaptionStore(location, stream_id, create=not existing, readonly=existing,
                            read_streams=streams)
    PgCaptionStore = _pg_store_class()
    return PgCaptionStore(location, stream_id, robot or default_robot(), read_robots=robots,
                          read_streams=streams, lazy=lazy)


def _pg_store_class():
    """:class:`~rats_ros.recall.pg_store.PgCaptionStore`, imported on the path that needs it.

    :raises ConfigError: psycopg is not installed (a setting: install it or give a file)."""
    try:
        from rats_ros.recall.pg_store import PgCaptionStore
    except ImportError as err:
        raise ConfigError("a postgresql:// store needs psycopg 3: pip install 'psycopg[binary]' "
                          "(requirements/ml.txt), or give a SQLite file") from err
    return PgCaptionStore
