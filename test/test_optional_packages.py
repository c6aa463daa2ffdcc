"""Optional packages are imported only on the path that needs them: with one hidden (a robot
without it), the CLI captions into a SQLite store and answers, and the path that needs it says
which package to install, exit 2, no traceback."""
import subprocess
import sys

import pytest
from helpers import wait_for
from ros_fixtures import (  # noqa: F401
    assert_no_traceback,
    ros_client,
    scene_frames,
    start_node,
    start_replay,
)

from rats_ros.io.bags import write_image_bag
from rats_ros.tools.cli import main

#: packages a robot may lack, and what each serves
OPTIONAL = ("psycopg", "onnx", "onnxruntime", "triton", "sentence_transformers")


def cli_without(package: str, *argv) -> subprocess.CompletedProcess:
    """``rats-ros ARGV`` in a fresh process where ``import package`` fails, as when it is not
    installed."""
    code = (f"import sys; sys.modules[{package!r}] = None\n"
            "from rats_ros.tools.cli import main\n"
            f"sys.exit(main({[str(a) for a in argv]!r}))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def bag(tmp_path_factory, model_cache):
    path = tmp_path_factory.mktemp("optional") / "bag"
    assert main(["sample-bag", str(path), "--clips", "1"]) == 0
    return path


@pytest.mark.parametrize("package", OPTIONAL)
def test_caption_and_ask_on_sqlite_need_none_of_the_optional_packages(bag, tmp_path, package):
    embedder = "model" if package == "sentence_transformers" else "sentence"
    store = tmp_path / "captions.db"
    done = cli_without(package, "caption", bag, "--model", "synthetic-world", "--store", store,
                       "--embedder", embedder, "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    done = cli_without(package, "ask", "--store", store, "--embedder", embedder,
                       "What shape is the blue object?")
    assert done.returncode == 0 and done.stdout.strip(), done.stderr[-2000:]


@pytest.mark.parametrize("package, argv, says", [
    ("psycopg", ["ask", "--store", "postgresql://u@127.0.0.1:1/db", "what?"],
     "needs psycopg 3: pip install 'psycopg[binary]'"),
    ("sentence_transformers", ["caption", "BAG", "--model", "synthetic-world", "--store",
                               "STORE", "--quiet"],
     "needs the package sentence-transformers: pip install -r requirements/robot.txt"),
    ("onnxruntime", ["caption", "BAG", "--model", "synthetic-world", "--engine", "onnx",
                     "--engine-dir", "EXPORT", "--quiet"],
     "engine 'onnx' needs the onnxruntime package: pip install onnxruntime"),
])
def test_the_path_that_needs_a_missing_package_names_it(bag, tmp_path, package, argv, says):
    argv = [{"BAG": bag, "STORE": tmp_path / "c.db", "EXPORT": tmp_path}.get(a, a)
            for a in argv]
    done = cli_without(package, *argv)
    assert done.returncode == 2 and says in done.stderr, done.stderr[-2000:]
    assert_no_traceback(done.stderr)


def test_the_node_captions_and_answers_without_any_optional_package(tmp_path, domain_id,
                                                                    ros_client):  # noqa: F811
    """The node with every optional package hidden at once (the model embedder, a SQLite
    store): it captions a replayed bag and answers over DDS."""
    from rats_ros.msg import Caption
    from rats_ros.srv import AskVideo

    hide = "; ".join(f"sys.modules[{name!r}] = None" for name in OPTIONAL)
    command = [sys.executable, "-c", f"import sys; {hide}\n"
               "from rats_ros.ros.main import main; sys.exit(main(sys.argv[1:]))"]
    write_image_bag(tmp_path / "bag", scene_frames(16, fps=4.0), topic="/camera/image_raw")
    captions = ros_client.collect(Caption, "/captions")
    node = start_node(tmp_path, domain_id, command=command, embedder="model",
                      qos_reliability="reliable", remaps={"image": "/camera/image_raw"})
    try:
        replay = start_replay(tmp_path / "bag", domain_id, "--rate", "4")
        _, err = replay.communicate(timeout=120)
        assert replay.returncode == 0, err
        wait_for(lambda: len(captions) >= 1, timeout=60)
        answer = ros_client.call(AskVideo, "/ask_video", AskVideo.Request(question="What?"),
                                 retry_after=10.0)
        assert answer.success, answer.message
    finally:
        assert node.stop() == 0, node.log()[-3000:]
    assert_no_traceback(node.log())


def test_a_node_asked_for_what_is_missing_exits_2_naming_the_package(tmp_path, domain_id):
    """embedder sentence without sentence-transformers: an install to fix, so exit 2 (a
    supervisor does not restart it in a loop), the message says what to install."""
    command = [sys.executable, "-c", "import sys; sys.modules['sentence_transformers'] = None\n"
               "from rats_ros.ros.main import main; sys.exit(main(sys.argv[1:]))"]
    node = start_node(tmp_path, domain_id, wait_active=False, command=command,
                      embedder="sentence")
    assert node.wait_exit(120) == 2, node.log()[-3000:]
    assert "pip install -r requirements/robot.txt" in node.log()
    assert_no_traceback(node.log())
