"""The robot's build: ``colcon build`` of a fresh copy of this checkout, and the installed node.

The workspace holds a copy of the package under ``src/`` and the ROS 2 prefix of the PyPI wheels
(the virtual environment) on the paths, as ``rosdep install`` + ``colcon build`` give a robot. The
installed ``lib/rats_ros/stream_node`` then runs with only the install tree and the venv on the
Python path: this checkout's sources are not importable from it.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rats_ros.srv import AskVideo
from ros_fixtures import FAST_PARAMS, ROOT, NodeProcess, assert_no_traceback, ros_client  # noqa: F401

pytestmark = [pytest.mark.ros, pytest.mark.slow]
VENV = Path(sys.prefix)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``colcon build`` of a copy of this checkout. :returns: the install tree."""
    ws = tmp_path_factory.mktemp("colcon_ws")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "colcon_build.sh"), str(VENV), str(ws),
                           str(ws / "install"), str(ROOT)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return ws / "install"


def install_env(install: Path) -> dict:
    """What ``source install/setup.bash`` adds, on top of the ROS prefix of the venv only."""
    site = next((install / "lib").glob("python3*/site-packages"))
    # The wheels' own library directories stay on LD_LIBRARY_PATH (ros-wheels-bootstrapper put
    # them there when this venv's interpreter started); the install tree's go in front.
    libraries = os.environ.get("LD_LIBRARY_PATH", str(VENV / "lib"))
    return {"PYTHONPATH": str(site), "AMENT_PREFIX_PATH": f"{install}:{VENV}",
            "LD_LIBRARY_PATH": f"{install / 'lib'}:{libraries}",
            "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}"}


def test_install_tree_has_the_executables_launch_config_and_manifest(installed):
    for path in ("lib/rats_ros/stream_node", "lib/rats_ros/replay_node", "lib/rats_ros/rats-ros",
                 "bin/rats-ros",
                 "share/rats_ros/launch/stream.launch.py", "share/rats_ros/config/stream.yaml",
                 "share/rats_ros/package.xml",
                 "share/ament_index/resource_index/packages/rats_ros"):
        assert (installed / path).is_file(), path
    assert os.access(installed / "lib/rats_ros/stream_node", os.X_OK)
    assert os.access(installed / "bin/rats-ros", os.X_OK)


def test_interfaces_and_sources_import_as_one_package_from_the_install_tree(installed, tmp_path):
    code = ("import rats_ros, rats_ros.msg, rats_ros.srv, rats_ros.ros.node; "
            "print(rats_ros.__file__); print(rats_ros.srv.__file__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env=os.environ | install_env(installed), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    for line in done.stdout.split():
        assert line.startswith(str(installed)), line  # not this checkout's rats_ros/


def test_installed_rats_ros_command_runs_from_the_install_tree(installed, tmp_path):
    done = subprocess.run([str(installed / "bin" / "rats-ros"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, env=os.environ | install_env(installed),
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ask-node" in done.stdout and "caption" in done.stdout


def test_installed_node_refuses_a_bad_parameter_with_exit_2(installed, tmp_path, domain_id):
    node = NodeProcess(tmp_path, domain_id, {"fps": 0.0}, params_file=None,
                       command=[str(installed / "lib/rats_ros/stream_node")],
                       env=install_env(installed))
    assert node.wait_exit(timeout=120) == 2, node.log()
    assert "fps" in node.log() and "[0.01, 60.0]" in node.log()
    assert_no_traceback(node.log())


def test_installed_node_serves_ask_video(installed, tmp_path, domain_id, model_cache,
                                         ros_client):  # noqa: F811
    params = {**FAST_PARAMS, "store_path": str(tmp_path / "captions.db")}
    node = NodeProcess(tmp_path, domain_id, params,
                       params_file=installed / "share/rats_ros/config/stream.yaml",
                       command=[str(installed / "lib/rats_ros/stream_node")],
                       env=install_env(installed) | {"RATS_ROS_CACHE": str(model_cache)})
    try:
        node.wait_log("active: listening", timeout=180)
        response = ros_client.call(AskVideo, "/ask_video", AskVideo.Request(question="What?"),
                                   timeout=60, retry_after=5.0)
        assert not response.success and "no captions" in response.message
    finally:
        assert node.stop() == 0, node.log()[-3000:]
    assert_no_traceback(node.log())
