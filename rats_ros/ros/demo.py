"""``make demo``: the whole system on a sample stream, through real ROS 2 processes.

1. writes the sample bag (a synthetic world, :mod:`rats_ros.world`) into ``build/sample/`` if it
   is missing,
2. starts the ``rats_stream`` node (``config/stream.yaml``) as a child process,
3. replays the bag through ``rats_ros.ros.replay`` (the stand-in for ``ros2 bag play``),
4. prints every ``captions`` message as it arrives, with the true caption of that clip,
5. asks a question through the ``ask_video`` service and prints the answer, the true answer and
   the evidence,
6. stops the node with SIGINT and exits 0 when all of that worked.

Everything runs with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` in its own ``ROS_DOMAIN_ID``.
The model is ``synthetic-world`` (trained on such worlds; README "A model that sees" says how
well it does) unless ``--model`` or ``RATS_ROS_MODEL`` names another checkpoint; ``tiny-random``
has random weights, so its captions and answers are meaningless word salad.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository (make demo runs from it)
SAMPLE_DIR = ROOT / "build" / "sample"
SAMPLE_CLIPS = 6  # of 16 frames at the node's default 0.5 fps: 192 s of stream
SAMPLE_WORLD = 3  # the world's seed (evaluation range, unseen in training)
QUESTION = "What shape is the blue object?"  # the kind synthetic-world answers from captions
_NS = 1_000_000_000


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m rats_ros.ros.demo", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--model", default=os.environ.get("RATS_ROS_MODEL", "synthetic-world"),
                        help="checkpoint directory, cached Hugging Face id, synthetic-world or "
                             "tiny-random (default: $RATS_ROS_MODEL or synthetic-world)")
    parser.add_argument("--device", default="cpu", help="torch device for the model")
    parser.add_argument("--bag", type=Path, help="replay this bag instead of the sample")
    parser.add_argument("--sample-dir", type=Path, default=SAMPLE_DIR,
                        help="where the sample bag is written once (default: build/sample)")
    parser.add_argument("--rate", type=float, default=16.0, help="replay speed factor")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after seconds")
    return parser.parse_args(argv)


def sample_world():
    """:returns: the sample bag's world."""
    from rats_ros.world import scene
    from rats_ros.world.evaluate import EVAL_SEED_BASE

    return scene.generate(EVAL_SEED_BASE + SAMPLE_WORLD, SAMPLE_CLIPS)


def sample_bag(directory: Path) -> Path:
    """The sample bag in ``directory``, written once (atomically: a half-written bag is never
    left behind); a temporary directory when ``directory`` is not writable."""
    target = directory / "world_bag"
    if (target / "metadata.yaml").is_file():
        return target
    from rats_ros.io.bags import write_image_bag
    from rats_ros.world import scene

    try:
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".demo_bag-", dir=directory))
    except OSError:
        directory = Path(tempfile.mkdtemp(prefix="rats_ros_sample_"))
        target, staging = directory / "world_bag", directory / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    count = write_image_bag(staging, scene.frames(sample_world()), topic="/camera/image_raw")
    os.rename(staging, target)
    print(f"wrote the sample bag {target} ({count} frames of a synthetic world)")
    return target


def demo_env() -> dict:
    """This process's and its children's ROS environment: loopback only, a private domain."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(os.environ.get("RATS_ROS_DEMO_DOMAIN")
                                      or 101 + os.getpid() % 100)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


class Listener:
    """The demo's own rclpy node: prints captions, calls services."""

    def __init__(self, truth: list[str] | None = None):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from rats_ros.msg import Caption

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("rats_demo", context=self.context)
        self.captions = []
        self.truth = truth or []  # the sample world's true caption of each clip
        self.origin_ns = None  # stream time of the first caption: spans print relative to it
        self.node.create_subscription(Caption, "captions", self._on_caption, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_caption(self, msg) -> None:
        self.captions.append(msg)
        if self.origin_ns is None:
            self.origin_ns = _ns(msg.start)
        print(f"  caption {msg.clip_index}: {self.span(msg)} {msg.text!r}\n"
              f"    ({msg.frames} frames, kept {msg.kept_tokens}/{msg.visual_tokens} visual "
              f"tokens, {msg.memory_tokens} memory tokens, {msg.processing_time:.2f} s)"
              + (f"\n    truth: {self.truth[msg.clip_index]!r}"
                 if msg.clip_index < len(self.truth) else ""), flush=True)

    def call(self, srv_type, name, request, timeout: float):
        """Call a service (:func:`rats_ros.ros.client.call_service`). :returns: the response."""
        from rats_ros.ros.client import call_service

        return call_service(self.node, srv_type, name, request, timeout)

    def span(self, msg) -> str:
        """``[start .. end s]`` of a caption, in seconds from the first caption's start."""
        origin = self.origin_ns or 0
        return f"[{(_ns(msg.start) - origin) / _NS:.1f} .. {(_ns(msg.end) - origin) / _NS:.1f} s]"

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _ns(stamp) -> int:
    return stamp.sec * _NS + stamp.nanosec


def start_node(args, env, workdir: Path) -> tuple[subprocess.Popen, Path]:
    log_path = workdir / "rats_stream.log"
    command = [sys.executable, "-m", "rats_ros.ros.main", "--ros-args",
               "--params-file", str(ROOT / "config" / "stream.yaml"),
               *(["--params-file", str(ROOT / "config" / "synthetic_world.yaml")]
                 if args.model == "synthetic-world" else ["-p", f"model:={args.model}"]),
               "-p", f"device:={args.device}",
               "-p", f"store_path:={workdir / 'captions.db'}", "-p", "idle_flush:=3.0",
               "-p", "qos_reliability:=reliable", "-r", "image:=/camera/image_raw"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    return process, log_path


def wait_active(listener, node, log_path, timeout: float) -> None:
    from lifecycle_msgs.srv import GetState

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise RuntimeError(f"the node exited with code {node.returncode}:\n"
                               + log_path.read_text()[-3000:])
        state = listener.call(GetState, "/rats_stream/get_state", GetState.Request(),
                              deadline - time.monotonic())
        if state.current_state.label == "active":
            return
        time.sleep(0.5)
    raise TimeoutError(f"the node did not become active within {timeout:.0f} s")


def wait_captions(listener, replay, expected: int | None, timeout: float) -> None:
    """Wait for the replay to end, then for ``expected`` captions (or 15 s without a new one)."""
    replay.wait(timeout)
    deadline, last_count, quiet_since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(listener.captions)
        if expected is not None and count >= expected:
            return
        if count != last_count:
            last_count, quiet_since = count, time.monotonic()
        elif expected is None and time.monotonic() - quiet_since > 15.0:
            return
        time.sleep(0.2)


def ask(listener, question: str, truth: str | None) -> bool:
    from rats_ros.srv import AskVideo

    print(f"\nasking: {question!r}")
    response = listener.call(AskVideo, "/ask_video", AskVideo.Request(question=question), 120.0)
    if not response.success:
        print(f"  not answered: {response.message}")
        return False
    print(f"  answer ({response.processing_time:.2f} s): {response.answer!r}"
          + (f" (truth: {truth!r})" if truth is not None else ""))
    print(f"  evidence ({len(response.evidence)} captions, time order):")
    for caption in response.evidence:
        print(f"    clip {caption.clip_index} {listener.span(caption)}: {caption.text!r}")
    return True


def run(args) -> int:
    env = demo_env()
    if args.model.startswith("tiny-random"):
        print("!" * 78 + f"\n!!! model {args.model!r} has RANDOM weights: the captions and the "
              "answer below are\n!!! meaningless. Pass --model (or RATS_ROS_MODEL) with a real "
              "checkpoint.\n" + "!" * 78, flush=True)
    bag = args.bag or sample_bag(args.sample_dir)
    expected = None if args.bag else SAMPLE_CLIPS
    truth, answer = _truth(args) if not args.bag else ([], None)
    workdir = Path(tempfile.mkdtemp(prefix="rats_ros_demo_"))
    print(f"ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, node log and store in {workdir}")
    listener = Listener(truth)
    node, log_path = start_node(args, env, workdir)
    ok = False
    try:
        wait_active(listener, node, log_path, args.timeout)
        print(f"rats_stream is active (model {args.model}); replaying {bag} at {args.rate}x")
        replay = subprocess.Popen([sys.executable, "-m", "rats_ros.ros.replay", str(bag),
                                   "--rate", str(args.rate), "--wait-subscribers", "1",
                                   "--remap-to", "/camera/image_raw"], cwd=ROOT, env=env)
        wait_captions(listener, replay, expected, args.timeout)
        if replay.returncode != 0:
            print(f"replay failed with code {replay.returncode}")
        print(f"{len(listener.captions)} captions received")
        ok = replay.returncode == 0 and bool(listener.captions) \
            and ask(listener, args.question, answer)
    finally:
        listener.close()
        node.send_signal(signal.SIGINT)
        code = node.wait(60)
        print(f"node stopped with exit code {code}")
    if not ok or code != 0:
        print(f"the demo failed; node log:\n{log_path.read_text()[-3000:]}")
        return 1
    return 0


def _truth(args) -> tuple[list[str], str | None]:
    """The sample world's true captions, and the true answer when the question is one of the
    world's questions."""
    from rats_ros.world import language

    world = sample_world()
    captions = [language.caption(language.clip_facts(world, c)) for c in range(world.clips)]
    answers = {q.text: q.answer for q in language.questions(world)}
    return captions, answers.get(args.question.strip())


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
