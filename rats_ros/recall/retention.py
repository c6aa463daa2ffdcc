"""Retention of the caption store: the policy and the pruning that applies it.

Pruning runs in small batches of short transactions, so a writer waits at most for one batch.
"""
import logging
import threading
import time
from dataclasses import dataclass

from rats_ros.errors import ConfigError, StoreError
from rats_ros.recall.schema import transaction

# The store's logger: retention messages come from "rats_ros.recall.store".
_LOG = logging.getLogger("rats_ros.recall.store")


@dataclass(frozen=True)
class RetentionPolicy:
    """How long captions are kept. 0 disables a limit.

    :param max_age_s: delete captions stored (wall clock, ``created_ns``) more than this long ago;
        wall clock rather than stream stamps, so replaying an old bag does not wipe it at once.
    :param max_rows: keep at most this many captions of the stream (oldest go first).
    :param interval_s: seconds between pruning passes of the background thread.
    :param batch_rows: rows deleted per transaction; small so a waiting writer gets in quickly.
    """

    max_age_s: float = 0.0
    max_rows: int = 0
    interval_s: float = 60.0
    batch_rows: int = 500

    def __post_init__(self):
        if self.max_age_s < 0 or self.max_rows < 0:
            raise ConfigError("retention max_age_s and max_rows must be >= 0 (0 keeps forever)")
        if self.interval_s <= 0 or self.batch_rows < 1:
            raise ConfigError("retention interval_s must be > 0 and batch_rows >= 1")

    @property
    def enabled(self) -> bool:
        return self.max_age_s > 0 or self.max_rows > 0


class Pruner:
    """Applies a :class:`RetentionPolicy` to one store's stream, on demand or from a thread.

    :param store: the :class:`~rats_ros.recall.store.CaptionStore` (its ``stream_id``,
        ``count()`` and ``run(action, fn)``).
    :param policy: the policy to apply.
    """

    def __init__(self, store, policy: RetentionPolicy):
        self.store, self.policy = store, policy
        self._stop = threading.Event()
        self._thread = None

    def prune(self, now_ns: int | None = None) -> int:
        """Apply the policy now, in batches of short transactions.

        :param now_ns: wall-clock "now" for the age limit (default: ``time.time_ns()``).
        :returns: the number of captions deleted.
        """
        policy, stream = self.policy, self.store.stream_id
        if not policy.enabled:
            return 0
        deleted = 0
        if policy.max_age_s > 0:
            cutoff = (now_ns or time.time_ns()) - int(policy.max_age_s * 1e9)
            deleted += self._delete_batches("stream_id=? AND created_ns<?", (stream, cutoff), None)
        if policy.max_rows > 0:  # oldest first, walking the rowid order ("+": not by index)
            deleted += self._delete_batches("+stream_id=?", (stream,),
                                            self.store.count() - policy.max_rows)
        return deleted

    def start(self) -> None:
        """Prune every ``interval_s`` from a daemon thread until :meth:`stop`."""
        if self.policy.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="caption-retention",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread (a batch in flight finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def running(self) -> bool:
        """Whether the pruning thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    #: the store's captions table and its parameter mark (SQLite here, PostgreSQL below)
    TABLE, MARK = "captions", "?"

    def _delete_batches(self, condition: str, params, limit: int | None) -> int:
        deleted = 0
        batch = self.policy.batch_rows
        while limit is None or deleted < limit:
            size = batch if limit is None else min(batch, limit - deleted)
            sql = (f"DELETE FROM {self.TABLE} WHERE id IN (SELECT id FROM {self.TABLE} WHERE "
                   f"{condition} ORDER BY id LIMIT {self.MARK})")
            count = self.store.run("pruning captions", lambda c, sql=sql, size=size:
                                   self._delete_tx(c, sql, (*params, size)))
            deleted += count
            if count < size or self._stop.wait(0.005):  # yield to a waiting writer
                break
        return deleted

    def _delete_tx(self, conn, sql: str, params) -> int:
        with transaction(conn):
            count = conn.execute(sql, params).rowcount
            conn.execute("UPDATE streams SET deleted = deleted + ? WHERE stream_id=?",
                         (count, self.store.stream_id))
        return count

    def _loop(self):
        while not self._stop.wait(self.policy.interval_s):
            try:
                self.prune()
            except StoreError as err:
                if self._stop.is_set():
                    return
                # A busy store only delays pruning; the next pass catches up.
                _LOG.warning("caption retention pass skipped: %s", err)


class PgPruner(Pruner):
    """The same policy on a PostgreSQL store's stream (``robot``, ``stream_id``): batches of
    short transactions, the deletions counted in ``rats_streams`` for the retrieval index."""

    def prune(self, now_ns: int | None = None) -> int:
        policy, store = self.policy, self.store
        if not policy.enabled:
            return 0
        own, params = "robot=%s AND stream_id=%s", (store.robot, store.stream_id)
        deleted = 0
        if policy.max_age_s > 0:
            cutoff = (now_ns or time.time_ns()) - int(policy.max_age_s * 1e9)
            deleted += self._delete_batches(f"{own} AND created_ns<%s", (*params, cutoff), None)
        if policy.max_rows > 0:
            deleted += self._delete_batches(own, params, store.count() - policy.max_rows)
        return deleted

    TABLE, MARK = "rats_captions", "%s"

    def _delete_tx(self, conn, sql: str, params) -> int:
        with conn.transaction():
            count = conn.execute(sql, params).rowcount
            conn.execute("UPDATE rats_streams SET deleted = deleted + %s WHERE robot=%s AND "
                         "stream_id=%s", (count, self.store.robot, self.store.stream_id))
        return count
