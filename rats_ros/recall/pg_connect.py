"""Reaching the fleet database: the URL without its password, a connection failure typed as
unreachable (retry) or refused (fix the URL), and one writer per ``(robot, stream)`` claimed
with a session advisory lock (released by the server when the writer's connection ends)."""
from __future__ import annotations

import urllib.parse

from rats_ros.errors import StoreError, StoreRefused, StoreUnavailable

_REFUSALS = ("password authentication failed", "does not exist", "no pg_hba.conf entry",
             "role", "invalid", "authentication")


def claim_stream(conn, robot: str, stream_id: str, writer: str, path: str):
    """Hold the advisory lock of ``(robot, stream_id)`` on ``conn`` (kept open until close)."""
    key = f"rats_ros/{robot}/{stream_id}"
    if conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                    (key,)).fetchone()[0]:
        conn.execute("SELECT set_config('application_name', %s, false)", (writer[:60],))
        return conn
    holder = conn.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.objid = "
        "(hashtextextended(%s, 0) & 4294967295)::bigint::oid LIMIT 1", (key,)).fetchone()
    conn.close()
    raise StoreError(f"stream {stream_id!r} of robot {robot!r} in {path} is already being "
                     f"written by {holder[0] if holder else 'another writer'}; give each "
                     "robot its own robot_id and each camera its own stream")


def connect_error(path: str, error) -> StoreError:
    text = first_line(error)
    if any(words in text for words in _REFUSALS) and "Connection refused" not in text:
        return StoreRefused(f"the database at {path} refused the connection ({text}); fix the "
                            "user, password or database name in the store URL")
    return StoreUnavailable(f"the database at {path} is unreachable ({text}); start the "
                            "server or check the host and port")


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs.

    :raises StoreRefused: a URL that cannot be parsed."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - parses the port: a bad one raises here, not at connect
    except ValueError as error:
        raise StoreRefused(f"the store URL is malformed ({error}); give "
                           "postgresql://user:password@host:port/database") from None
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def first_line(error) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
