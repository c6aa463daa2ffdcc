"""One SQLite connection per thread for a caption store file (SQLite connections are not shared
between threads), all closed together, and the file's identity (to notice it being replaced)."""
import os
import sqlite3
import threading
import urllib.parse
import weakref

from rats_ros.recall.schema import ConnHolder


class ThreadConnections:
    """Per-thread connections to one file.

    :param path: the SQLite file.
    :param readonly: open by ``mode=ro`` URI (``immutable`` where the medium is read-only).
    :param busy_ms: ``busy_timeout`` of each connection.
    :param synchronous: ``FULL`` or ``NORMAL``.
    """

    def __init__(self, path: str, readonly: bool, busy_ms: int, synchronous: str):
        self.path, self.readonly = path, readonly
        self._busy_ms, self._sync = busy_ms, synchronous
        self._local = threading.local()
        self._holders: weakref.WeakSet[ConnHolder] = weakref.WeakSet()
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        """:returns: the calling thread's connection, opened on first use."""
        holder = getattr(self._local, "holder", None)
        if holder is None:
            # check_same_thread=False only so close_all() (and the holder's finaliser, which
            # runs when the owning thread ends) may close it; only the owning thread uses it.
            conn = self._connect()
            holder = ConnHolder(conn)
            self._local.holder = holder
            with self._lock:
                self._holders.add(holder)
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            conn.execute(f"PRAGMA synchronous={self._sync}")
        return holder.conn

    def open_count(self) -> int:
        """:returns: connections still open (those of ended threads are closed with them)."""
        with self._lock:
            return len(self._holders)

    def close_all(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for holder in list(self._holders):
                holder.conn.close()
            self._holders.clear()

    def _connect(self) -> sqlite3.Connection:
        """A connection; read-only ones by URI, ``immutable`` where the medium is read-only (a
        WAL store there cannot get its shared-memory file)."""
        options = dict(timeout=self._busy_ms / 1000, isolation_level=None,
                       check_same_thread=False)
        if not self.readonly:
            return sqlite3.connect(self.path, **options)
        uri = f"file:{urllib.parse.quote(os.path.abspath(self.path))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, **options)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            conn.close()
            conn = sqlite3.connect(uri + "&immutable=1", uri=True, **options)
        return conn


def file_identity(path: str) -> tuple[int, int]:
    """``(device, inode)`` of a file: what changes when it is deleted and created anew."""
    status = os.stat(path)
    return status.st_dev, status.st_ino
