"""The caption store's SQLite layer: schema, versioning, connections, transactions, error hints.

:class:`~rats_ros.recall.store.CaptionStore` builds on these; nothing here knows about streams.
"""
import sqlite3
from contextlib import contextmanager
from dataclasses import MISSING, fields

from rats_ros.errors import StoreError
from rats_ros.records import CaptionRecord

#: 1: the first release; 2: camera and pose columns (a version-1 store is upgraded in place).
SCHEMA_VERSION = 2
_SQL_TYPES = {int: "INTEGER", float: "REAL", str: "TEXT", bool: "INTEGER"}


def _column(item) -> str:
    """One record field's column: its type, NOT NULL, and its default where it has one."""
    default = "" if item.default is MISSING else f" DEFAULT {_sql_literal(item.default)}"
    return f"{item.name} {_SQL_TYPES[item.type]} NOT NULL{default}"


def _sql_literal(value) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(int(value) if isinstance(
        value, bool) else value)


# One column per record field, of the field's type.
_RECORD_COLUMNS = ", ".join(_column(f) for f in fields(CaptionRecord))
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
_UPGRADABLE = ("1",)  # versions that init_schema upgrades in place


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
        return "another process holds a lock on it; stop that process or use another store file"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return ("the file is corrupt or not a caption store; move it aside (keep it for "
                "inspection) and give a new store file")
    if "readonly" in text or "unable to open" in text or "permission" in text:
        return "check that the store is a file path in a writable directory"
    if "full" in text or "i/o" in text:
        return "check free disk space and the health of the disk holding the store"
    return "check the store's path and the disk it is on"


def not_a_store(error: Exception) -> bool:
    """Whether opening failed because the file is no caption store (corrupt, not SQLite, another
    schema): a setting to fix, not a fault that a retry or a restart cures."""
    cause = f"{error} {error.__cause__ or ''}".lower()
    return any(word in cause for word in ("not a database", "malformed", "corrupt",
                                          "not a rats_ros caption store", "schema version"))


def init_schema(conn: sqlite3.Connection, path: str):
    """Switch the file to WAL and create the schema, or check the version of an existing one.

    :param path: the store's file, for error messages.
    :raises StoreError: a SQLite file that is not a caption store, or an unknown schema version.
    """
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if mode.lower() != "wal":
        conn.execute("PRAGMA journal_mode=WAL")
    with transaction(conn):
        if check_schema(conn, path, upgradable=True):
            _upgrade(conn)
            return
        # Statement by statement: executescript() would commit the open transaction.
        for statement in filter(str.strip, _SCHEMA.split(";")):
            conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


def check_schema(conn: sqlite3.Connection, path: str, upgradable: bool = False) -> bool:
    """Check an existing store without writing (read-only stores use this alone).

    :param upgradable: accept an older version that :func:`init_schema` upgrades (writers).
    :returns: False for an empty file (no tables yet), True for a caption store of this schema.
    :raises StoreError: a SQLite file that is not a caption store, or an unknown schema version.
    """
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if tables and "meta" not in tables:
        raise StoreError(f"{path} is a SQLite file but not a rats_ros caption store "
                         f"(tables {sorted(tables)}); choose another store file")
    if "meta" in tables:
        _check_version(conn, path, upgradable)
    return bool(tables)


def _upgrade(conn: sqlite3.Connection) -> None:
    """Add the record columns an older store lacks (each has a default), then the version."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(captions)")}
    for item in fields(CaptionRecord):
        if item.name not in present:
            conn.execute(f"ALTER TABLE captions ADD COLUMN {_column(item)}")
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))


def _check_version(conn: sqlite3.Connection, path: str, upgradable: bool):
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    version = row[0] if row else None
    if version == str(SCHEMA_VERSION) or (upgradable and version in _UPGRADABLE):
        return
    if version in _UPGRADABLE:
        raise StoreError(f"caption store {path} has schema version {version}; open it once "
                         "with a writer (the node or rats-ros caption --store) to upgrade it "
                         f"to {SCHEMA_VERSION}")
    if version is not None and version.isdigit() and int(version) > SCHEMA_VERSION:
        raise StoreError(f"caption store {path} has schema version {version}, newer than "
                         f"this rats_ros reads ({SCHEMA_VERSION}); upgrade rats_ros or use "
                         "another store_path")
    raise StoreError(f"caption store {path} has an unknown schema version {version!r} "
                     f"(this rats_ros reads {SCHEMA_VERSION}); move the file aside or use "
                     "another store_path")
