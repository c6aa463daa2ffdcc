"""Calling a service or an action of the running node from a client process (the demo,
``rats-ros ask-node``)."""
from __future__ import annotations

import threading
import time


def call_service(node, srv_type, name: str, request, timeout: float):
    """Call ``name`` from ``node`` (whose executor spins in another thread); re-send every 5 s
    while discovery settles.

    :returns: the response. :raises TimeoutError: no response within ``timeout`` seconds.
    """
    client = node.create_client(srv_type, name)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not client.wait_for_service(timeout_sec=1.0):
                continue
            future = client.call_async(request)
            done = threading.Event()
            future.add_done_callback(lambda _, event=done: event.set())
            if done.wait(min(5.0, max(0.1, deadline - time.monotonic()))):
                return future.result()
            client.remove_pending_request(future)
        raise TimeoutError(f"{node.resolve_service_name(name)} did not answer within "
                           f"{timeout:.0f} s")
    finally:
        node.destroy_client(client)


def call_action(node, action_type, name: str, goal, timeout: float, on_feedback=None):
    """Send ``goal`` to the action ``name`` from ``node`` (spun in another thread) and wait.

    :param on_feedback: called with each feedback message (from the executor's thread).
    :returns: ``(status, result)`` (``action_msgs/GoalStatus`` code and the result).
    :raises TimeoutError: no server, no acceptance or no result within ``timeout`` seconds;
        the goal, if sent, is cancelled first. A ``KeyboardInterrupt`` cancels it too.
    """
    from rclpy.action import ActionClient

    client = ActionClient(node, action_type, name)
    deadline = time.monotonic() + timeout
    handle = None
    try:
        if not client.wait_for_server(timeout_sec=timeout):
            raise TimeoutError(f"action {name} has no server after {timeout:.0f} s")
        sent = client.send_goal_async(
            goal, feedback_callback=(lambda msg: on_feedback(msg.feedback)) if on_feedback
            else None)
        handle = _wait(sent, deadline, f"action {name} did not accept the goal")
        outcome = _wait(handle.get_result_async(), deadline, f"action {name} gave no result")
        handle = None
        return outcome.status, outcome.result
    finally:
        if handle is not None:  # timed out or interrupted while the node answers: stop it
            handle.cancel_goal_async()
        client.destroy()


def _wait(future, deadline: float, what: str):
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    if not done.wait(max(0.0, deadline - time.monotonic())):
        raise TimeoutError(f"{what} in time")
    return future.result()
