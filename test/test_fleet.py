"""Fleet memory on a real PostgreSQL server (initdb + pg_ctl in a temporary directory, 127.0.0.1):
the store contract, the outage spool, two robots' writer processes, fleet-wide questions, and a
node that loses nothing while the server is stopped and restarted."""
import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import make_caption, wait_for
from ros_fixtures import ros_client  # noqa: F401

from rats_ros.errors import StoreError, StoreRefused, StoreUnavailable
from rats_ros.io.sample_scene import write_sample_bag
from rats_ros.recall.pg_store import PgCaptionStore
from rats_ros.recall.spool import SpooledStore
from rats_ros.recall.store import CaptionStore, ClipIndexTaken
from rats_ros.testing.postgres import PASSWORD, PostgresServer, binaries

pytestmark = pytest.mark.skipif(binaries() is None, reason="PostgreSQL is not installed "
                                "(scripts/setup.sh installs it as root; CI runs as root)")
SEC = 1_000_000_000


@pytest.fixture(scope="module")
def server():
    pg = PostgresServer()
    pg.start()
    yield pg
    pg.close()


@pytest.fixture
def database(server, request):
    """A fresh database of the module's server, per test."""
    name = request.node.name.lower()[:40].replace("[", "_").replace("]", "")
    server.createdb(name)
    return server.url(name)


def clip(i: int, text: str = "") -> object:
    return make_caption(i, 10 * i * SEC, (10 * i + 8) * SEC, text or f"caption {i}")


def test_the_store_contract_on_postgres(database):
    """Idempotent writes keyed by (robot, stream, clip index), reader scopes over robots and
    streams, one writer per robot stream."""
    r1 = PgCaptionStore(database, "default", robot="r1", writer="r1 test")
    r2 = PgCaptionStore(database, "default/front", robot="r2", writer="r2 test")
    try:
        assert r1.add(clip(0), np.ones(4, np.float32), "e") == r1.add(clip(0))  # a retry
        with pytest.raises(ClipIndexTaken, match="another caption"):
            r1.add(clip(0, "something else"))
        r1.add(clip(1))
        r2.add(clip(0, "front view"))
        assert (r1.next_clip_index(), r1.count(), r2.count()) == (2, 2, 1)
        with pytest.raises(StoreError, match="already being written"):
            PgCaptionStore(database, "default", robot="r1", writer="intruder")
        fleet = PgCaptionStore(database, robot="r1", read_robots=("*",), read_streams=())
        assert [(c.robot, c.text) for c in fleet.query()] == [
            ("r1", "caption 0"), ("r2", "front view"), ("r1", "caption 1")]
        assert fleet.rows_after(0, 10)[0].embedding.tolist() == [1.0] * 4
        assert fleet.streams_under("default") == ("default", "default/front")
        assert fleet.robots() == ("r1", "r2")
        only_r2 = PgCaptionStore(database, robot="r2", read_streams=())
        assert [c.text for c in only_r2.query()] == ["front view"]
        fleet.close(), only_r2.close()
    finally:
        r1.close(), r2.close()


def test_wrong_password_missing_database_and_bad_urls_are_refused(server):
    with pytest.raises(StoreRefused, match="password authentication failed"):
        PgCaptionStore(server.url(password="wrong"))
    with pytest.raises(StoreRefused, match='database "absent" does not exist'):
        PgCaptionStore(server.url("absent"))
    with pytest.raises(StoreRefused, match="malformed"):
        PgCaptionStore("postgresql://postgres@127.0.0.1:notaport/x")
    with pytest.raises(StoreUnavailable, match="unreachable"):
        PgCaptionStore("postgresql://postgres:x@127.0.0.1:9/x")  # nothing listens there
    lazy = PgCaptionStore("postgresql://postgres:x@127.0.0.1:9/x", lazy=True)
    with pytest.raises(StoreUnavailable):
        lazy.count()


def test_an_outage_spools_in_order_and_a_restart_keeps_the_spool(server, database, tmp_path):
    """The server stopped mid-stream and restarted, the writer restarted during the outage:
    every caption is on the server exactly once, in order, indices continuous."""
    def writer():
        remote = PgCaptionStore(database, "default", robot="r1", writer="w", lazy=True)
        spool = CaptionStore(tmp_path / "spool.db", "r1/default", writer="w")
        return SpooledStore(remote, spool, retry_s=0.01)

    store = writer()
    for i in range(2):
        store.add(clip(i))
    server.stop()
    try:
        for i in range(2, 4):
            store.add(clip(i))
        assert store.spooled() == 2 and isinstance(store.last_error, StoreUnavailable)
        store.close()
        store = writer()  # a restart during the outage: the spool knows the next index
        assert store.next_clip_index() == 4
        store.add(clip(4))
        assert store.spooled() == 3
    finally:
        server.start()
    wait_for(lambda: store.flush(), timeout=30)
    store.add(clip(5))
    assert store.spooled() == 0
    with PgCaptionStore(database, "default", robot="r1") as reader:
        assert [(c.clip_index, c.text) for c in reader.query()] == [
            (i, f"caption {i}") for i in range(6)]
    store.close()


def test_a_full_spool_refuses_the_caption(server, database, tmp_path):
    remote = PgCaptionStore("postgresql://postgres:x@127.0.0.1:9/x", lazy=True)
    store = SpooledStore(remote, CaptionStore(tmp_path / "spool.db", "x"), capacity=2,
                         retry_s=60)
    store.add(clip(0)), store.add(clip(1))
    with pytest.raises(StoreError, match="spool .* is full"):
        store.add(clip(2))
    store.close()


def _cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "rats_ros", *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


FAST = ["--model", "tiny-random", "--max-new-tokens", "6", "--fps", "0.5", "--clip-frames", "4",
        "--quiet"]


def test_two_robots_write_one_database_and_any_robot_asks_the_fleet(database, tmp_path,
                                                                    model_cache):
    bags = []
    for robot, seed in (("r1", 1), ("r2", 2)):
        bags.append(tmp_path / robot)
        write_sample_bag(bags[-1], seconds=16.0, fps=2.0, size=(96, 72), seed=seed)
    writers = [subprocess.Popen([sys.executable, "-m", "rats_ros", "caption",
                                 str(bag), *FAST, "--store", database, "--robot", bag.name],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for bag in bags]
    for writer in writers:  # at once, into one database
        out, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err[-2000:]
        assert len(out.splitlines()) == 2
    fleet = json.loads(_cli("ask", "What happened?", "--store", database, "--robots", "*",
                            "--json", "--max-new-tokens", "4").stdout)
    assert fleet["success"] and {e["robot"] for e in fleet["evidence"]} == {"r1", "r2"}
    one = json.loads(_cli("ask", "What happened?", "--store", database, "--robot", "r2",
                          "--json", "--max-new-tokens", "4").stdout)
    assert {e["robot"] for e in one["evidence"]} == {"r2"} and len(one["evidence"]) == 2
    for url, words in ((database.replace("rats-test", "wrong"), "password"),
                       (database.rsplit("/", 1)[0] + "/absent", "does not exist"),
                       ("postgresql://u@127.0.0.1:port/x", "malformed")):
        refused = _cli("ask", "What?", "--store", url, check=False)
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and "rats-test" not in refused.stderr


@pytest.mark.ros
def test_a_node_loses_nothing_while_the_database_is_stopped_and_restarted(
        server, database, tmp_path, domain_id, ros_client):  # noqa: F811
    """The server stopped mid-stream: WARN with the spool's backlog, captions still published;
    the node restarted during the outage; the server back: every published caption is in the
    database exactly once, indices continuous, and questions reach the fleet."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rats_ros.msg import Caption
    from rats_ros.srv import AskVideo
    from ros_fixtures import assert_no_traceback, scene_frames, start_node, start_replay

    from rats_ros.io.bags import write_image_bag

    bag = tmp_path / "bag"
    write_image_bag(bag, scene_frames(24, fps=4.0, start_s=100.0))
    captions = ros_client.collect(Caption, "/captions")
    diagnostics = ros_client.collect(DiagnosticArray, "/diagnostics")
    params = dict(store_path=database, robot_id="r1", spool_path=str(tmp_path / "spool.db"),
                  qos_reliability="reliable", remaps={"image": "/camera/image_raw"})

    def replay():
        start_replay(bag, domain_id, "--rate", "4", "--wait-subscribers", "1").communicate(
            timeout=120)

    def warned():
        return next((s for d in diagnostics[-3:] for s in d.status
                     if s.level == DiagnosticStatus.WARN and "spooled" in s.message), None)

    node = start_node(tmp_path, domain_id, **params)
    replay()
    wait_for(lambda: len(captions) >= 3, timeout=90)
    server.stop()
    try:
        replay()
        wait_for(lambda: len(captions) >= 6, timeout=90)  # published from the spool
        assert "unreachable" in wait_for(warned, timeout=30).message
        assert node.stop() == 0, node.log()[-3000:]
        node = start_node(tmp_path, domain_id, name="restarted", **params)  # still down
        replay()
        wait_for(lambda: len(captions) >= 9, timeout=90)
    finally:
        server.start()
    try:
        wait_for(lambda: diagnostics[-1].status[0].level == DiagnosticStatus.OK, timeout=60)
        fleet = ros_client.call(AskVideo, "/ask_video", AskVideo.Request(
            question="What happened?", robots=["*"]), retry_after=10.0)
        assert fleet.success, fleet.message
        assert {c.robot for c in fleet.evidence} == {"r1"}
    finally:
        assert node.stop() == 0, node.log()[-3000:]
    published = [c.clip_index for c in captions]
    assert published == list(range(len(published)))
    with PgCaptionStore(database, "default", robot="r1") as reader:
        stored = [c.clip_index for c in reader.query()]  # the bag's stamps repeat each replay
        assert sorted(stored) == published
    assert_no_traceback(node.log())


@pytest.mark.ros
def test_a_node_given_a_wrong_password_exits_2(server, tmp_path, domain_id):
    from ros_fixtures import assert_no_traceback, start_node

    node = start_node(tmp_path, domain_id, wait_active=False,
                      store_path=server.url(password="wrong"))
    assert node.wait_exit(120) == 2
    assert "password authentication failed" in node.log() and "rats-test" not in node.log()
    assert_no_traceback(node.log())


def test_retention_on_postgres_keeps_the_newest_and_the_index_count(database):
    from rats_ros.recall.store import RetentionPolicy

    store = PgCaptionStore(database, "default", robot="r1", writer="w",
                           retention=RetentionPolicy(max_rows=3))
    other = PgCaptionStore(database, "default", robot="r2", writer="w2")
    try:
        for i in range(5):
            store.add(clip(i)), other.add(clip(i))
        assert store.prune() == 2
        assert [c.clip_index for c in store.query()] == [2, 3, 4]
        assert store.stream_state() == (5, 0, 2) and other.count() == 5  # r2 untouched
        assert store.prune(now_ns=2**62) == 0  # no age limit: nothing more
    finally:
        store.close(), other.close()


@pytest.mark.ros
def test_two_robot_nodes_share_one_database_and_each_asks_the_fleet(
        database, tmp_path, domain_id, ros_client):  # noqa: F811
    """Two node processes (robots r1 and r2, own namespaces and spools) caption into one
    database; each answers fleet-wide questions with the other's captions too."""
    from rats_ros.msg import Caption
    from rats_ros.srv import AskVideo
    from ros_fixtures import assert_no_traceback, scene_frames, start_node, start_replay

    from rats_ros.io.bags import write_image_bag

    bag = tmp_path / "bag"
    write_image_bag(bag, scene_frames(24, fps=4.0, start_s=100.0))
    captions = {robot: ros_client.collect(Caption, f"/{robot}/captions") for robot in ("r1", "r2")}
    nodes = [start_node(tmp_path, domain_id, name=robot, store_path=database, robot_id=robot,
                        spool_path=str(tmp_path / f"{robot}.db"), qos_reliability="reliable",
                        remaps={"__ns": f"/{robot}", "image": "/camera/image_raw"})
             for robot in ("r1", "r2")]
    try:
        start_replay(bag, domain_id, "--rate", "4", "--wait-subscribers", "2").communicate(
            timeout=120)
        wait_for(lambda: all(len(c) >= 3 for c in captions.values()), timeout=120)
        assert {c.robot for c in captions["r2"]} == {"r2"}
        for robot in ("r1", "r2"):
            fleet = ros_client.call(AskVideo, f"/{robot}/ask_video", AskVideo.Request(
                question="What happened?", robots=["*"]), retry_after=10.0)
            assert fleet.success, fleet.message
            assert {c.robot for c in fleet.evidence} == {"r1", "r2"}
            own = ros_client.call(AskVideo, f"/{robot}/ask_video",
                                  AskVideo.Request(question="And here?"), retry_after=10.0)
            assert {c.robot for c in own.evidence} == {robot}
    finally:
        for node in nodes:
            assert node.stop() == 0, node.log()[-3000:]
    for node in nodes:
        assert_no_traceback(node.log())


def test_doctor_checks_a_store_server_for_pgvector(database, capsys):
    """Debian's PostgreSQL 15 has no pgvector: doctor reaches the server and says so, with the
    install command; an unreachable URL is reported, not raised."""
    from rats_ros.tools.cli import main

    assert main(["doctor", "--store", database]) == 0
    out = capsys.readouterr().out
    assert "PostgreSQL 15" in out and "pgvector is not available" in out
    assert "postgresql-16-pgvector" in out and PASSWORD not in out  # the password is not shown
    assert main(["doctor", "--store", "postgresql://u:pw@127.0.0.1:9/x"]) == 0
    assert "cannot reach it" in capsys.readouterr().out
