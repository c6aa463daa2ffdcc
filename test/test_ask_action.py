"""The ``ask_video`` action over DDS: a real node process, an rclpy ActionClient, streamed
feedback, cancel, and the service's capacity rule. The tiny random model answers (meaningless
text, up to 2,000 tokens: long enough to cancel mid-answer on any machine)."""
import signal
import threading

import pytest
from action_msgs.msg import GoalStatus
from helpers import wait_for
from rats_ros.action import AskVideo as AskAction
from rats_ros.msg import Caption
from rats_ros.srv import AskVideo
from rclpy.action import ActionClient
from ros_fixtures import ros_client, scene_frames, start_node, start_replay  # noqa: F401

from rats_ros.io.bags import write_image_bag

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def node(tmp_path_factory, domain_id, model_cache, ros_client):  # noqa: F811
    """A node that has captioned 3 clips of a bag, answering up to 2,000 tokens."""
    tmp = tmp_path_factory.mktemp("action")
    bag = tmp / "bag"
    write_image_bag(bag, scene_frames(24, fps=4.0), topic="/camera/image_raw")
    captions = ros_client.collect(Caption, "/captions")
    process = start_node(tmp, domain_id, qos_reliability="reliable",
                         max_answer_tokens=2000, question_queue_size=1,
                         remaps={"image": "/camera/image_raw"})
    replay = start_replay(bag, domain_id, "--rate", "4", "--wait-subscribers", "1")
    assert replay.wait(timeout=60) == 0
    wait_for(lambda: len(captions) >= 3, timeout=60)
    yield process
    if process.alive():
        process.stop(signal.SIGKILL)


class Goal:
    """One goal sent through an ActionClient: its feedback, status and result as they come."""

    def __init__(self, client: ActionClient, question: str, cancel_after: int = 0):
        self.feedback, self.done = [], threading.Event()
        self.status, self.result, self.handle = None, None, None
        self._cancel_after = cancel_after
        accepted = threading.Event()

        def on_goal(future):
            self.handle = future.result()
            accepted.set()
            self.handle.get_result_async().add_done_callback(self._on_result)

        client.send_goal_async(AskAction.Goal(question=question),
                               feedback_callback=self._on_feedback).add_done_callback(on_goal)
        assert accepted.wait(30), "goal not answered"

    def _on_feedback(self, message):
        self.feedback.append(message.feedback)
        if self._cancel_after and len(self.feedback) == self._cancel_after:
            self.handle.cancel_goal_async()

    def _on_result(self, future):
        self.status, self.result = future.result().status, future.result().result
        self.done.set()


@pytest.fixture(scope="module")
def action(node, ros_client):  # noqa: F811
    client = ActionClient(ros_client.node, AskAction, "/ask_video")
    assert client.wait_for_server(timeout_sec=30)
    yield client
    client.destroy()


def test_the_answer_streams_as_feedback_and_the_result_is_the_services(action, ros_client):  # noqa: F811
    goal = Goal(action, "What moves?")
    assert goal.done.wait(120) and goal.status == GoalStatus.STATUS_SUCCEEDED
    result = goal.result
    assert result.success and result.message == "" and result.answer
    stages = [f.stage for f in goal.feedback]
    assert stages[0] == "retrieving" and goal.feedback[0].evidence_count == 0
    answering = [f for f in goal.feedback if f.stage == "answering"]
    assert answering and all(f.evidence_count == len(result.evidence) for f in answering)
    texts = [f.partial_answer for f in answering if f.partial_answer]
    assert len(texts) >= 10 and texts[-1].strip() == result.answer  # grows to the answer
    assert sum(a != b for a, b in zip(texts, texts[1:], strict=False)) >= len(texts) // 2
    service = ros_client.call(AskVideo, "/ask_video", AskVideo.Request(question="What moves?"))
    assert service.success and service.answer == result.answer  # greedy: the same answer
    assert [c.clip_index for c in service.evidence] == [c.clip_index for c in result.evidence]


def test_a_cancel_stops_the_answer_within_a_step_and_frees_the_answerer(action):
    goal = Goal(action, "Describe everything you saw.", cancel_after=5)
    assert goal.done.wait(120) and goal.status == GoalStatus.STATUS_CANCELED
    assert not goal.result.success and "cancelled" in goal.result.message
    streamed = max(len(f.partial_answer) for f in goal.feedback)
    full = Goal(action, "Describe everything you saw.")
    assert full.done.wait(120) and full.status == GoalStatus.STATUS_SUCCEEDED
    assert len(full.result.answer) > streamed  # the cancelled one stopped early
    assert len(full.feedback) > len(goal.feedback)


def test_beyond_the_capacity_a_goal_is_aborted_with_busy(action):
    """question_queue_size 1: a second goal while one answers is refused at once, as the
    service refuses ("busy"), with the reason in its result."""
    first = Goal(action, "Describe everything you saw.")
    wait_for(lambda: any(f.stage == "answering" for f in first.feedback), timeout=60)
    second = Goal(action, "What moves?")
    assert second.done.wait(60) and second.status == GoalStatus.STATUS_ABORTED
    assert not second.result.success and second.result.message.startswith("busy")
    assert first.done.wait(120) and first.status == GoalStatus.STATUS_SUCCEEDED


def test_ask_node_stream_prints_the_answer_as_it_comes(node, domain_id, action,
                                                      ros_client):  # noqa: F811
    """``rats-ros ask-node --stream`` from another process: the action's text, then the
    answer's line; a question the node refuses is exit 1 with its reason."""
    import subprocess
    import sys

    from helpers import ros_env
    from ros_fixtures import assert_no_traceback

    command = [sys.executable, "-m", "rats_ros", "ask-node", "--stream", "--timeout", "60"]
    done = subprocess.run([*command, "What moves?"], env=ros_env(domain_id),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    head, _, rest = done.stdout.partition("\n  ")
    streamed, _, stats = rest.rstrip("\n").rpartition("\n")
    assert head == "What moves?" and stats.startswith("  (") and stats.endswith(" captions)")
    service = ros_client.call(AskVideo, "/ask_video", AskVideo.Request(question="What moves?"))
    assert streamed.strip() == service.answer  # the text as it came is the answer
    refused = subprocess.run([*command, " "], env=ros_env(domain_id), capture_output=True,
                             text=True, timeout=180)
    assert refused.returncode == 1 and "not answered: the question is empty" in refused.stdout
    assert_no_traceback(refused.stderr)
    recent = subprocess.run([*command, "--since", "2h", "What moves?"], env=ros_env(domain_id),
                            capture_output=True, text=True, timeout=180)  # the bag is at 1970
    assert recent.returncode == 1 and "no captions in the window" in recent.stdout
    bad = subprocess.run([*command, "--since", "yesterday", "What moves?"],
                         env=ros_env(domain_id), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "is not a time" in bad.stderr
