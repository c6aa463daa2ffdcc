"""The ``ask_video`` action: a question whose answer streams as feedback and can be cancelled.

Goal and result are the service's request and response (``action/AskVideo.action``), answered by
the same :class:`~rats_ros.ros.questions.QuestionDesk` (one capacity, one answer at a time, the
same refusals: a goal beyond the capacity is accepted and aborted at once with "busy, retry", so
its client reads why). Feedback: the stage (``retrieving``, ``answering``), the evidence count,
and the answer so far after every generated token. A cancel is polled before every decode step:
generation stops within one step, the goal ends ``CANCELED`` and the answerer takes the next
question.
"""
from __future__ import annotations

import threading

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup

from rats_ros.action import AskVideo
from rats_ros.recall.qa import AskProgress


class AskAction:
    """The action server of ``node`` (a ``rats_stream`` node), answering through ``desk``."""

    def __init__(self, node, desk):
        self.desk = desk
        self.server = ActionServer(node, AskVideo, "ask_video", execute_callback=self._execute,
                                   goal_callback=lambda goal: GoalResponse.ACCEPT,
                                   cancel_callback=lambda handle: CancelResponse.ACCEPT,
                                   callback_group=ReentrantCallbackGroup())

    def _execute(self, handle):
        """One goal: answered by the desk with feedback; its end state from the outcome."""
        feedback = _Feedback(handle)
        progress = AskProgress(on_stage=feedback.stage, on_text=feedback.text,
                               cancelled=lambda: handle.is_cancel_requested)
        result = self.desk.answer(handle.request, AskVideo.Result(), progress)
        if handle.is_cancel_requested and not result.success:
            handle.canceled()
        elif result.success:
            handle.succeed()
        else:
            handle.abort()
        return result


class _Feedback:
    """Publishes a goal's feedback: the stage and evidence count stay, the text grows."""

    def __init__(self, handle):
        self._handle = handle
        self._lock = threading.Lock()
        self._msg = AskVideo.Feedback()

    def stage(self, stage: str, evidence: int) -> None:
        with self._lock:
            self._msg.stage, self._msg.evidence_count = stage, int(evidence)
            self._handle.publish_feedback(self._msg)

    def text(self, text: str) -> None:
        with self._lock:
            self._msg.partial_answer = text
            self._handle.publish_feedback(self._msg)
