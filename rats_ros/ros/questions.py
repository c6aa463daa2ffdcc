"""The ``ask_video`` desk: every request gets a response, none is silently lost.

The service and the action (:mod:`rats_ros.ros.ask_action`) share it: one capacity, one answer
at a time, the same refusals.

Requests are taken off the service as fast as they arrive (a reentrant callback group and
enough executor threads), so DDS never drops one from the service's history. Up to
``capacity`` questions are held: one is answered at a time (they share the model with the
captioner), the rest wait their turn; a request beyond that is refused at once with "busy,
retry". A question that meets an unexpected error is answered ``success=false`` with the
reason; the node keeps serving.
"""
from __future__ import annotations

import threading
import time
import traceback

from rats_ros.errors import AnswerCancelled, RatsError
from rats_ros.ros.messages import caption_msg, target_pose


class QuestionDesk:
    """Answers ``AskVideo`` requests with bounded waiting; see the module docstring.

    :param node: the ``rats_stream`` node (its ``parts``, ``stats``, logger, state).
    :param capacity: questions held at once (answered + waiting).
    """

    def __init__(self, node, capacity: int):
        self.node, self.capacity = node, capacity
        self._slots = threading.BoundedSemaphore(capacity)
        self._turn = threading.Lock()  # one answer at a time

    def answer(self, request, response, progress=None):
        """The service callback, and the action's body (``response``: its result; ``progress``:
        its feedback and cancel, :class:`~rats_ros.recall.qa.AskProgress`).

        :returns: ``response``, always filled.
        """
        started = time.monotonic()
        if not self._slots.acquire(blocking=False):
            self.node.stats.question("busy")
            return self._refuse(response, started, f"busy: {self.capacity} questions are already "
                                                   "waiting or being answered; retry shortly")
        try:
            with self._turn:
                return self._answer(request, response, started, progress)
        finally:
            self._slots.release()

    def _answer(self, request, response, started: float, progress=None):
        node = self.node
        parts, state = node.parts, node.state_label()
        if parts is None or state != "active":
            node.stats.question("refused")
            return self._refuse(response, started, f"rats_stream is {state}, not active: "
                                                   "configure and activate it, then ask")
        try:
            answer = parts.ask(request, now_ns=node.get_clock().now().nanoseconds,
                               progress=progress)
        except AnswerCancelled as error:
            node.stats.question("cancelled")
            return self._refuse(response, started, str(error))
        except RatsError as error:
            node.stats.question("refused")
            return self._refuse(response, started, str(error))
        except Exception as error:  # noqa: BLE001 - the callback's boundary: report, keep serving
            node.stats.question("failed")
            node.get_logger().error(f"answering failed: {type(error).__name__}: {error}")
            node.get_logger().debug(traceback.format_exc())
            return self._refuse(response, started, f"internal error while answering "
                                                   f"({type(error).__name__}: {error})")
        node.stats.question("answered")
        response.success, response.answer = True, answer.text
        response.evidence = [caption_msg(c, node.frame_ids.get(c.camera, ""), c.model)
                             for c in answer.evidence]
        if answer.target is not None:  # a "where" question: where to go
            response.has_target, response.target_pose = True, target_pose(answer.target)
        response.processing_time = float(answer.processing_time)
        return response

    @staticmethod
    def _refuse(response, started: float, message: str):
        response.success, response.message = False, message
        response.processing_time = time.monotonic() - started
        return response
