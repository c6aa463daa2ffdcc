"""`make demo` (python -m rats_ros.ros.demo): real node, real replay, captions and an answer."""
import subprocess
import sys

import pytest
from helpers import ros_env
from ros_fixtures import ROOT, assert_no_traceback

pytestmark = pytest.mark.ros


def test_demo_prints_captions_and_an_answer_and_exits_zero(tmp_path, domain_id, model_cache):
    env = ros_env(domain_id)
    env["RATS_ROS_DEMO_DOMAIN"] = str(domain_id)  # the demo's own domain: this run's
    env.pop("RATS_ROS_MODEL", None)
    done = subprocess.run([sys.executable, "-m", "rats_ros.ros.demo", "--sample-dir",
                           str(tmp_path / "sample")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "RANDOM weights" not in output  # the default is the trained synthetic-world model
    assert "model synthetic-world" in output
    assert (tmp_path / "sample" / "world_bag" / "metadata.yaml").is_file()
    for index in range(6):
        assert f"caption {index}: [" in output
    assert output.count("    truth: 'the ") == 6  # each caption beside the world's truth
    assert "6 captions received" in output
    assert "asking: 'What shape is the blue object?'" in output and "(truth: 'a " in output
    assert "answer (" in output and "evidence (6 captions, time order)" in output
    assert "node stopped with exit code 0" in output
    assert_no_traceback(output)
