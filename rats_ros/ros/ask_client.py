"""``rats-ros ask-node``: ask a running node's ``ask_video`` from another shell.

    rats-ros ask-node "What shape is the blue object?" ["Which object left last?" ...]
    rats-ros ask-node --stream "Describe the last hour."   # the action: tokens as they come

The node keeps its model loaded, so each answer takes the model's answering time alone (the
offline ``rats-ros ask`` loads the model on every call). Several questions go in one call, in
order. Exit codes: 0 every question answered, 1 a question was not answered (the node's message
says why) or no node answered, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import threading

_NS = 1_000_000_000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rats-ros ask-node", description="Ask a running rats_stream node's ask_video "
        "service (the same ROS_DOMAIN_ID as the node: source scripts/env.sh in both shells).")
    parser.add_argument("questions", nargs="+", help="one or more questions, asked in order")
    parser.add_argument("--service", default="ask_video",
                        help="the service name, relative to the root namespace unless it starts "
                             "with / (default: ask_video)")
    parser.add_argument("--cameras", default="", help="only these cameras, comma-separated")
    parser.add_argument("--since", default="0",
                        help="only clips that started at or after this time: a duration back "
                             "from now (2h, 90min), an ISO time or seconds (default 0: all)")
    parser.add_argument("--until", default="0",
                        help="only clips that ended at or before this time, as --since "
                             "(default 0: now)")
    parser.add_argument("--max-captions", type=int, default=0,
                        help="cap on the captions used (default 0: as many as fit the budget)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the node and for each answer (default 120)")
    parser.add_argument("--json", action="store_true", help="one JSON object per question")
    parser.add_argument("--stream", action="store_true",
                        help="ask through the ask_video action: print the answer as it is "
                             "generated; Ctrl-C cancels it on the node")
    return parser


def clock_time(stamp) -> str:
    """A ``builtin_interfaces/Time`` as local ISO time to the second."""
    seconds = (stamp.sec * _NS + stamp.nanosec) / _NS
    return datetime.datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")


def _report(question: str, response, as_json: bool, streamed: bool = False) -> None:
    """Print one answer; ``streamed``: its question and text are already out (``--stream``)."""
    evidence = [{"clip_index": c.clip_index, "start": clock_time(c.start),
                 "end": clock_time(c.end), "camera": c.camera, "text": c.text}
                for c in response.evidence]
    target = None
    if response.has_target:  # a "where" question: the pose to drive to
        p, q = response.target_pose.pose.position, response.target_pose.pose.orientation
        target = {"frame": response.target_pose.header.frame_id,
                  "at": clock_time(response.target_pose.header.stamp),
                  "position": [p.x, p.y, p.z], "orientation": [q.x, q.y, q.z, q.w]}
    if as_json:
        print(json.dumps({"question": question, "success": response.success,
                          "message": response.message, "answer": response.answer,
                          "processing_time": response.processing_time, "evidence": evidence,
                          "target": target}))
        return
    if not response.success:
        print(f"{question}\n  not answered: {response.message}")
        return
    stats = f"({response.processing_time:.2f} s, {len(evidence)} captions)"
    print(f"  {stats}" if streamed else f"{question}\n  {response.answer}  {stats}", flush=True)
    if target is not None:
        x, y, z = target["position"]
        print(f"  go to ({x:.2f}, {y:.2f}, {z:.2f}) in {target['frame'] or 'the poses frame'} "
              f"(seen {target['at']})", flush=True)
    for item in evidence:
        camera = f" {item['camera']}" if item["camera"] else ""
        print(f"    [{item['start']} .. {item['end']}{camera}] #{item['clip_index']}: "
              f"{item['text']}", file=sys.stderr, flush=True)


def _time(stamp_ns: int, time_type):
    """``stamp_ns`` as a ``builtin_interfaces/Time``."""
    return time_type(sec=stamp_ns // _NS, nanosec=stamp_ns % _NS)


def _streamed(node, args, question: str, request):
    """Ask through the action, printing the answer's new text as feedback brings it (plain
    output only). :returns: the result (the service's response fields)."""
    from rats_ros.action import AskVideo as AskAction
    from rats_ros.ros.client import call_action

    shown = [""]

    def on_feedback(feedback) -> None:
        text = feedback.partial_answer
        if args.json or not text or not text.startswith(shown[0]):
            return  # a stage's feedback (no text yet), or a text that rewrote its start
        if not shown[0]:
            print(f"{question}\n  ", end="")
        print(text[len(shown[0]):], end="", flush=True)
        shown[0] = text

    goal = AskAction.Goal(**{f: getattr(request, f)
                             for f in AskAction.Goal.get_fields_and_field_types()})
    _, result = call_action(node, AskAction, args.service, goal, args.timeout, on_feedback)
    if shown[0]:
        print(flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run ``rats-ros ask-node``. :returns: the exit code."""
    args = build_parser().parse_args(argv)  # exits 2 on bad arguments
    from rats_ros.errors import QuestionError
    from rats_ros.recall.clock import parse_when

    try:  # the window on this machine's clock, the node's too unless it runs on sim time
        window = [parse_when(text) for text in (args.since, args.until)]
    except QuestionError as error:
        print(f"rats-ros ask-node: {error}", file=sys.stderr)
        return 2
    import rclpy
    from builtin_interfaces.msg import Time
    from rclpy.executors import SingleThreadedExecutor

    from rats_ros.ros.client import call_service
    from rats_ros.srv import AskVideo

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"rats_ask_{os.getpid()}", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    cameras = [c.strip() for c in args.cameras.split(",") if c.strip()]
    status = 0
    try:
        for question in args.questions:
            request = AskVideo.Request(question=question, max_captions=args.max_captions,
                                       cameras=cameras, since=_time(window[0], Time),
                                       until=_time(window[1], Time))
            if args.stream:
                response = _streamed(node, args, question, request)
            else:
                response = call_service(node, AskVideo, args.service, request, args.timeout)
            _report(question, response, args.json, streamed=args.stream)
            status = status or (0 if response.success else 1)
    except TimeoutError as error:
        print(f"rats-ros ask-node: {error}: is the node running in this ROS_DOMAIN_ID "
              f"({os.environ.get('ROS_DOMAIN_ID', '0')})? source scripts/env.sh in both shells",
              file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        status = 130
    finally:
        executor.shutdown()
        spinner.join(timeout=10)  # a thread still in rcl at exit aborts the process
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return status


if __name__ == "__main__":
    sys.exit(main())
