"""Calling a service of the running node from a client process (the demo, ``rats-ros ask-node``)."""
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
