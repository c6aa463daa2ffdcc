"""CaptionStore on real SQLite files: windows, restarts, crashes, locks, corruption, retention."""
import gc
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import make_caption as Caption
from helpers import wait_for

from rats_ros.errors import ConfigError, StoreError, StoreRefused
from rats_ros.recall.store import CaptionStore, ClipIndexTaken, RetentionPolicy

REPO = Path(__file__).resolve().parents[1]
SEC = 1_000_000_000




def clip(i: int, text: str = "") -> Caption:
    """Clip i spans [32 i, 32 i + 30] s (16 frames at 0.5 fps)."""
    return Caption(i, 32 * i * SEC, (32 * i + 30) * SEC, text or f"caption number {i}")


def test_roundtrip_window_and_order(tmp_path):
    path = tmp_path / "new" / "dir" / "captions.db"  # missing directories are created
    with CaptionStore(path) as store:
        assert store.next_clip_index() == 0 and store.count() == 0 and store.origin_ns() is None
        for i in (2, 0, 1, 3):  # stored out of order, read back in time order
            store.add(clip(i), np.full(4, i, np.float32), "e1", model="tiny")
        assert store.count() == 4 and store.next_clip_index() == 4
        assert [c.clip_index for c in store.query()] == [0, 1, 2, 3]
        first = store.query()[0]
        assert (first.text, first.model, first.frames, first.kept_tokens) == (
            "caption number 0", "tiny", 16, 196)
        # Boundaries are inclusive: start >= since and end <= until.
        assert [c.clip_index for c in store.query(32 * SEC, 94 * SEC)] == [1, 2]
        assert [c.clip_index for c in store.query(32 * SEC + 1, 94 * SEC)] == [2]
        assert [c.clip_index for c in store.query(32 * SEC, 94 * SEC - 1)] == [1]
        assert [c.clip_index for c in store.query(64 * SEC)] == [2, 3]
        rows = store.rows_after(0)
        assert [r.embedder for r in rows] == ["e1"] * 4
        np.testing.assert_array_equal(rows[0].embedding, np.full(4, 2, np.float32))


def test_model_from_caption_attribute_and_lazy_embeddings(tmp_path):
    with CaptionStore(tmp_path / "c.db") as store:
        cap = clip(0)
        cap.model = "from-attribute"
        row_id = store.add(cap)
        assert store.query()[0].model == "from-attribute"
        assert store.rows_after(0)[0].embedding is None
        assert store.set_embeddings([row_id], np.ones((1, 3), np.float32), "lazy") == 1
        assert store.set_embeddings([row_id], np.zeros((1, 3), np.float32), "other") == 0
        row = store.rows_after(0)[0]
        assert row.embedder == "lazy" and row.embedding.tolist() == [1.0, 1.0, 1.0]


def test_duplicate_clip_index_is_refused_with_the_next_index(tmp_path):
    with CaptionStore(tmp_path / "c.db") as store:
        store.add(clip(0))
        store.add(clip(1))
        with pytest.raises(StoreError, match=r"already stored.*next_clip_index\(\) \(2\)"):
            store.add(clip(1, "again"))
        assert [c.text for c in store.query()] == ["caption number 0", "caption number 1"]


def test_restart_continues_and_streams_are_separate(tmp_path):
    path = tmp_path / "c.db"
    with CaptionStore(path, stream_id="front") as store:
        for i in range(3):
            store.add(clip(i))
    with CaptionStore(path, stream_id="front") as store, \
            CaptionStore(path, stream_id="rear") as rear:
        assert store.next_clip_index() == 3 and store.count() == 3
        assert rear.next_clip_index() == 0 and rear.query() == []
        store.add(clip(store.next_clip_index()))
        rear.add(clip(0, "rear view"))
        assert [c.clip_index for c in store.query()] == [0, 1, 2, 3]
        assert [c.text for c in rear.query()] == ["rear view"]


def test_bad_files_raise_store_error_saying_what_to_do(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    # not a store is a setting to fix (StoreRefused: exit code 2), not a fault to retry
    with pytest.raises(StoreRefused, match="corrupt or not a caption store.*new store file"):
        CaptionStore(garbage)
    with pytest.raises(StoreRefused, match="is a directory"):
        CaptionStore(tmp_path)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE things (x)")
    with pytest.raises(StoreRefused, match="not a rats_ros caption store"):
        CaptionStore(other)
    newer = tmp_path / "newer.db"
    CaptionStore(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="schema version 99, newer.*upgrade rats_ros"):
        CaptionStore(newer)
    with pytest.raises(ConfigError, match="synchronous"):
        CaptionStore(tmp_path / "x.db", synchronous="OFF")
    store = CaptionStore(tmp_path / "closed.db")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.count()


def test_locked_store_raises_store_error_and_loses_nothing(tmp_path):
    path = tmp_path / "c.db"
    store = CaptionStore(path, busy_timeout_s=0.2)
    store.add(clip(0))
    # Another writer holding the write lock past the busy timeout: add fails, cleanly.
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreError, match="locked.*another process holds a lock"):
        store.add(clip(1))
    other.execute("ROLLBACK")
    store.add(clip(1))
    assert [c.clip_index for c in store.query()] == [0, 1]
    store.close()
    # A process holding the file in exclusive locking mode: opening fails with advice.
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN IMMEDIATE")
    other.execute("COMMIT")
    with pytest.raises(StoreError, match="lock"):
        CaptionStore(path, busy_timeout_s=0.2)
    other.close()
    with CaptionStore(path) as again:
        assert again.count() == 2


WRITER = """
from rats_ros.records import CaptionRecord
from rats_ros.recall.store import CaptionStore
def clip(i, text):
    return CaptionRecord(clip_index=i, start_ns=32 * i * 10**9, end_ns=(32 * i + 30) * 10**9,
                         text=text, frames=16, visual_tokens=3136, kept_tokens=196,
                         memory_tokens=392, processing_time=0.25)
store = CaptionStore({path!r}, stream_id={stream!r}, synchronous={sync!r},
                     writer="writer process %d" % __import__("os").getpid())
start = store.next_clip_index()
for i in range(start, start + {count}):
    row_id = store.add(clip(i, "{stream} clip %d" % i), model="writer")
    print(row_id, i, flush=True)  # reported only after commit
store.close()
"""


def start_writer(path, stream="default", count=10**6, sync="FULL"):
    path_var = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path_var)
    code = WRITER.format(path=str(path), stream=stream, count=count, sync=sync)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=env)


def test_kill_9_of_a_writer_process_keeps_every_committed_caption(tmp_path):
    path = tmp_path / "crash.db"
    writer = start_writer(path)
    reported = [writer.stdout.readline() for _ in range(200)]
    os.kill(writer.pid, signal.SIGKILL)
    reported += writer.stdout.readlines()  # lines flushed before the kill are commits too
    writer.wait()
    assert writer.returncode == -signal.SIGKILL
    committed = {int(line.split()[1]) for line in reported if line.endswith("\n")}
    with CaptionStore(path) as store:
        stored = [c.clip_index for c in store.query()]
        assert committed <= set(stored)
        # At most the row committed between its commit and its report is extra.
        assert len(stored) - len(committed) in (0, 1)
        assert stored == list(range(len(stored)))
        assert store.next_clip_index() == len(stored)
        store.add(clip(store.next_clip_index()))
        integrity = store.run("check", lambda c: c.execute("PRAGMA integrity_check").fetchone())
        assert integrity == ("ok",)


def test_writer_processes_threads_and_readers_at_once(tmp_path):
    path = tmp_path / "busy.db"
    store = CaptionStore(path, stream_id="local", synchronous="NORMAL")
    procs = [start_writer(path, stream=f"proc{k}", count=150, sync="NORMAL") for k in range(2)]
    errors, reads = [], []

    def write_local():
        try:
            for i in range(150):
                store.add(clip(i))
        except StoreError as err:  # recorded, then the test fails on it
            errors.append(err)

    def read_loop():
        try:
            while any(p.poll() is None for p in procs) or writer.is_alive():
                reads.append(len(store.query()))
        except StoreError as err:
            errors.append(err)

    writer = threading.Thread(target=write_local)
    readers = [threading.Thread(target=read_loop) for _ in range(4)]
    for t in [writer, *readers]:
        t.start()
    for p in procs:
        assert p.wait(timeout=120) == 0
    for t in [writer, *readers]:
        t.join(timeout=120)
    assert errors == []
    assert reads and all(0 <= r <= 150 for r in reads)
    assert store.count() == 150
    for k in range(2):
        with CaptionStore(path, stream_id=f"proc{k}") as other:
            assert other.count() == 150 and other.next_clip_index() == 150
    store.close()


def test_retention_by_rows_and_age(tmp_path):
    with pytest.raises(ConfigError):
        RetentionPolicy(max_rows=-1)
    policy = RetentionPolicy(max_rows=7, max_age_s=100.0, interval_s=3600, batch_rows=2)
    with CaptionStore(tmp_path / "r.db", retention=policy) as store:
        for i in range(10):
            store.add(clip(i))
        assert store.prune() == 3  # by rows, oldest first, in batches of 2
        assert [c.clip_index for c in store.query()] == list(range(3, 10))
        created = [c.created_ns for c in store.query()]
        # "Now" = 100 s after the fifth remaining caption was stored: those five are too old.
        assert store.prune(now_ns=created[4] + 100 * SEC + 1) == 5
        assert [c.clip_index for c in store.query()] == [8, 9]
        assert store.stream_state()[2] == 8  # deletions counted for the retrieval index
        assert store.prune(now_ns=created[-1] + 101 * SEC) == 2
        assert store.count() == 0 and store.next_clip_index() == 10  # indices never go back


def test_retention_thread_prunes_while_captioning(tmp_path):
    policy = RetentionPolicy(max_rows=20, interval_s=0.05, batch_rows=5)
    with CaptionStore(tmp_path / "r.db", retention=policy) as store:
        for i in range(100):
            store.add(clip(i))  # never blocked or failed by the pruner
        wait_for(lambda: store.count() == 20, timeout=20)
        assert [c.clip_index for c in store.query()] == list(range(80, 100))
    assert not store._pruner.running  # close() stopped the pruner


def test_connections_of_finished_threads_are_closed(tmp_path):
    with CaptionStore(tmp_path / "c.db") as store:
        store.add(clip(0))
        threads = [threading.Thread(target=store.count) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        gc.collect()
        # only this thread's connection is left open
        assert store._connections.open_count() == 1


def test_a_stream_has_one_writer_and_a_killed_writer_frees_it(tmp_path):
    path = tmp_path / "claimed.db"
    writer = start_writer(path)
    writer.stdout.readline()  # it holds the claim and has committed a caption
    with pytest.raises(StoreError, match=f"already being written by writer process {writer.pid}"):
        CaptionStore(path, writer="a second writer")
    with CaptionStore(path, stream_id="other", writer="another camera") as other:
        other.add(clip(0))  # other streams of the same file are free
    with CaptionStore(path) as reader:  # readers take no claim
        assert reader.count() >= 1
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    with CaptionStore(path, writer="the restarted writer") as again:  # kill -9 released it
        again.add(clip(again.next_clip_index()))


def test_a_taken_clip_index_is_reported_as_such(tmp_path):
    with CaptionStore(tmp_path / "c.db") as store:
        store.add(clip(0))
        with pytest.raises(ClipIndexTaken, match="already stored"):
            store.add(clip(0))


def test_cameras_are_streams_and_a_reader_covers_several(tmp_path):
    """A node's cameras write their own streams (own clip indices); one reader reads them all,
    with each caption's camera and pose."""
    path = tmp_path / "c.db"
    front = CaptionStore(path, "robot/front", writer="front")
    rear = CaptionStore(path, "robot/rear", writer="rear")
    front.add(Caption(0, 10 * SEC, 20 * SEC, "a pallet", camera="front", has_pose=True,
                      pose_x=1.5, pose_y=-2.0, pose_frame="map"))
    rear.add(Caption(0, 5 * SEC, 15 * SEC, "a wall", camera="rear"))
    rear.add(Caption(1, 15 * SEC, 25 * SEC, "a door", camera="rear"))
    reader = CaptionStore(path, "robot/front", read_streams=("robot/front", "robot/rear"))
    try:
        assert (front.next_clip_index(), rear.next_clip_index()) == (1, 2)
        assert reader.count() == 3 and reader.origin_ns() == 5 * SEC
        rows = reader.query()
        assert [(r.camera, r.text) for r in rows] == [
            ("rear", "a wall"), ("front", "a pallet"), ("rear", "a door")]
        pallet = rows[1]
        assert pallet.has_pose is True and (pallet.pose_x, pallet.pose_y, pallet.pose_qw,
                                            pallet.pose_frame) == (1.5, -2.0, 1.0, "map")
        assert rows[0].has_pose is False
    finally:
        for store in (front, rear, reader):
            store.close()


def test_a_version_1_store_is_upgraded_in_place_and_keeps_its_captions(tmp_path):
    """Stores written before cameras and poses existed: a writer adds the columns (defaults:
    no camera name, no pose); a read-only reader is told to let a writer upgrade it first."""
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:  # the version-1 schema, as the first release wrote it
        conn.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE streams (stream_id TEXT PRIMARY KEY, next_clip_index INTEGER NOT NULL,
                origin_ns INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE captions (id INTEGER PRIMARY KEY AUTOINCREMENT,
                stream_id TEXT NOT NULL, clip_index INTEGER NOT NULL, start_ns INTEGER NOT NULL,
                end_ns INTEGER NOT NULL, text TEXT NOT NULL, frames INTEGER NOT NULL,
                visual_tokens INTEGER NOT NULL, kept_tokens INTEGER NOT NULL,
                memory_tokens INTEGER NOT NULL, processing_time REAL NOT NULL,
                model TEXT NOT NULL, created_ns INTEGER NOT NULL, embedding BLOB,
                embedder TEXT NOT NULL DEFAULT '', UNIQUE (stream_id, clip_index));
            INSERT INTO meta VALUES ('schema_version', '1');
            INSERT INTO streams VALUES ('default', 1, 0, 0);
            INSERT INTO captions (stream_id, clip_index, start_ns, end_ns, text, frames,
                visual_tokens, kept_tokens, memory_tokens, processing_time, model, created_ns)
                VALUES ('default', 0, 0, 30, 'an old caption', 16, 3136, 196, 0, 0.3, 'm', 1);
        """)
    with pytest.raises(StoreError, match="version 1.*writer.*upgrade"):
        CaptionStore(path, readonly=True)
    with CaptionStore(path) as store:
        store.add(clip(1))
        old, new = store.query()
        assert (old.text, old.camera, old.has_pose, new.clip_index) == (
            "an old caption", "", False, 1)
    with CaptionStore(path, readonly=True) as reader:
        assert reader.count() == 2


def test_both_stores_meet_the_declared_store_contract():
    """CaptionStoreLike declares what every layer uses of a store; the SQLite and PostgreSQL
    stores implement all of it with the same parameters."""
    import inspect

    from rats_ros.recall.pg_store import PgCaptionStore
    from rats_ros.recall.stores import CaptionStoreLike

    members = [name for name, value in vars(CaptionStoreLike).items()
               if callable(value) and not name.startswith("_")]
    assert len(members) >= 13
    for store in (CaptionStore, PgCaptionStore):
        for name in members:
            contract = list(inspect.signature(getattr(CaptionStoreLike, name)).parameters)
            theirs = list(inspect.signature(getattr(store, name)).parameters)
            assert theirs[:len(contract)] == contract, (store.__name__, name, theirs)
