"""The PostgreSQL caption store's schema: the record's columns, keyed by robot, versioned; and
what a store URL looks like (:func:`is_url`, importable without psycopg).

Tables are prefixed ``rats_`` so the store can live in a database that holds other things.
Creation runs once per database under an advisory lock (two robots starting at once do not race).
"""
from __future__ import annotations

from dataclasses import MISSING, fields

from rats_ros.errors import StoreRefused
from rats_ros.records import CaptionRecord

SCHEMA_VERSION = 1
_TYPES = {int: "BIGINT", float: "DOUBLE PRECISION", str: "TEXT", bool: "BOOLEAN"}
_SCHEMA_LOCK = 0x7261747301
#: the record's columns, in order (one per field)
CAPTION_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CaptionRecord))


def is_url(path) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) store URL."""
    return str(path).startswith(("postgresql://", "postgres://"))


def _column(item) -> str:
    default = "" if item.default is MISSING else f" DEFAULT {_literal(item.default)}"
    return f"{item.name} {_TYPES[item.type]} NOT NULL{default}"


def _literal(value) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return f"'{value}'" if isinstance(value, str) else repr(value)


_STATEMENTS = (
    "CREATE TABLE IF NOT EXISTS rats_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rats_streams (robot TEXT NOT NULL, stream_id TEXT NOT NULL, "
    "next_clip_index BIGINT NOT NULL, origin_ns BIGINT NOT NULL, "
    "deleted BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (robot, stream_id))",
    "CREATE TABLE IF NOT EXISTS rats_captions (id BIGSERIAL PRIMARY KEY, robot TEXT NOT NULL, "
    "stream_id TEXT NOT NULL, " + ", ".join(_column(f) for f in fields(CaptionRecord))
    + ", created_ns BIGINT NOT NULL, embedding BYTEA, embedder TEXT NOT NULL DEFAULT '', "
    "UNIQUE (robot, stream_id, clip_index))",
    "CREATE INDEX IF NOT EXISTS rats_captions_window ON rats_captions "
    "(robot, stream_id, start_ns)",
)


def init_schema(conn, path: str) -> None:
    """Create the tables when missing, or check the version of existing ones.

    :raises StoreRefused: tables of another (newer or unknown) schema version.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for statement in _STATEMENTS:
            conn.execute(statement)
        conn.execute("INSERT INTO rats_meta VALUES ('schema_version', %s) "
                     "ON CONFLICT (key) DO NOTHING", (str(SCHEMA_VERSION),))
        version = conn.execute(
            "SELECT value FROM rats_meta WHERE key='schema_version'").fetchone()[0]
    if version != str(SCHEMA_VERSION):
        raise StoreRefused(f"the caption tables in {path} have schema version {version}, this "
                           f"rats_ros reads {SCHEMA_VERSION}; upgrade rats_ros or use another "
                           "database")
