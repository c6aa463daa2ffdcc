"""Session-wide fixtures: the network rule, a private ROS domain, a tiny offline model."""
import os

import pytest
import torch

# Network rule: every rclpy context in this test process stays on loopback, in its own domain
# (never the user's: a node they run in another shell must not see the tests' nodes).
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = os.environ.get("RATS_TEST_ROS_DOMAIN_ID") or str(
    os.getpid() % 90 + 10)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Two cores are shared by pytest and the node processes it starts: one BLAS thread each avoids
# oversubscription (measured 3-4x slower model tests without it on the CI machine size).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Without a GPU the fused decode kernels (Triton) run in Triton's interpreter, which Triton reads
# from the environment when it is first imported (rats_ros.models.fast.fused).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def domain_id() -> int:
    """The ROS domain of this test run (child processes get it through ``helpers.ros_env``)."""
    return int(os.environ["ROS_DOMAIN_ID"])


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """A per-run cache directory where tiny-random models are built once and loaded from disk."""
    path = tmp_path_factory.mktemp("model_cache")
    os.environ["RATS_ROS_CACHE"] = str(path)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models are overhead-bound: one intra-op thread avoids OpenMP spin-waits, which slow
    model tests several-fold on a busy 2-core machine (OMP_NUM_THREADS covers child processes)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
