"""The caption store's SQLite layer: schema, versioning, connections, transactions, error hints.

:class:`~rats_ros.recall.store.CaptionStore` builds on these; nothing here knows about streams.
"""
import sqlite3
from contextlib import contextmanager
from dataclasses import fields

from rats_ros.errors import StoreError
from rats_ros.records import CaptionRecord

SCHEMA_VERSION = 1
_SQL_TYPES = {int: "INTEGER", float: "REAL", str: "TEXT"}
# One column per record field, of the field's type.
_RECORD_COLUMNS = ", ".join(f"{f.name} {_SQL_TYPES[f.type]} NOT NULL"
                            for f in fields(CaptionRecord))
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS streams (
    stream_id TEXT PRIMARY KEY, next_clip_index INTEGER NOT NULL, origin_ns INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS captions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, stream_id TEXT NOT NULL, {_RECORD_COLUMNS},
    created_ns INTEGER NOT NULL, embedding BLOB, embedder TEXT NOT NULL DEFAULT '',
    UNIQUE (stream_id, clip_index));
CREATE INDEX IF NOT EXISTS captions_window ON captions (stream_id, start_ns);
CREATE INDEX IF NOT EXISTS captions_age ON captions (stream_id, created_ns);
"""


class ConnHolder:
    """One thread's connection; closed when its thread ends (the thread-local is dropped)."""

    __slots__ = ("conn", "__weakref__")

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __del__(self):
        self.conn.close()


@contextmanager
def transaction(conn: sqlite3.Connection):
    """A short write transaction: takes the write lock at once (waits up to busy_timeout)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # a failed COMMIT leaves it open; never leak it to the next call
            conn.execute("ROLLBACK")
        raise


def error_hint(message: str) -> str:
    """What to do about a SQLite error, judged from its message."""
    text = message.lower()
    if "locked" in text or "busy" in text:
        return "another process holds a lock on it; stop that process or use another store_path"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return ("the file is corrupt or not a SQLite file; move it aside (keep it for inspection) "
                "and start with a fresh store_path")
    if "readonly" in text or "unable to open" in text or "permission" in text:
        return "check that store_path is a file path in a writable directory"
    if "full" in text or "i/o" in text:
        return "check free disk space and the health of the disk holding store_path"
    return "check store_path and the disk it is on"


def init_schema(conn: sqlite3.Connection, path: str):
    """Switch the file to WAL and create the schema, or check the version of an existing one.

    :param path: the store's file, for error messages.
    :raises StoreError: a SQLite file that is not a caption store, or an unknown schema version.
    """
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if mode.lower() != "wal":
        conn.execute("PRAGMA journal_mode=WAL")
    with transaction(conn):
        if check_schema(conn, path):
            return
        # Statement by statement: executescript() would commit the open transaction.
        for statement in filter(str.strip, _SCHEMA.split(";")):
            conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


def check_schema(conn: sqlite3.Connection, path: str) -> bool:
    """Check an existing store without writing (read-only stores use this alone).

    :returns: False for an empty file (no tables yet), True for a caption store of this schema.
    :raises StoreError: a SQLite file that is not a caption store, or an unknown schema version.
    """
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if tables and "meta" not in tables:
        raise StoreError(f"{path} is a SQLite file but not a rats_ros caption store "
                         f"(tables {sorted(tables)}); choose another store_path")
    if "meta" in tables:
        _check_version(conn, path)
    return bool(tables)


def _check_version(conn: sqlite3.Connection, path: str):
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    version = row[0] if row else None
    if version == str(SCHEMA_VERSION):
        return
    if version is not None and version.isdigit() and int(version) > SCHEMA_VERSION:
        raise StoreError(f"caption store {path} has schema version {version}, newer than "
                         f"this rats_ros reads ({SCHEMA_VERSION}); upgrade rats_ros or use "
                         "another store_path")
    raise StoreError(f"caption store {path} has an unknown schema version {version!r} "
                     f"(this rats_ros reads {SCHEMA_VERSION}); move the file aside or use "
                     "another store_path")
