"""Optional packages are imported only on the path that needs them: with one hidden (a robot
without it), the CLI captions into a SQLite store and answers, and the path that needs it says
which package to install, exit 2, no traceback."""
import subprocess
import sys

import pytest
from ros_fixtures import assert_no_traceback

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
     "needs the package sentence-transformers: pip install -r requirements/ml.txt"),
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
