"""Replay a rosbag2 image topic live: this project's stand-in for ``ros2 bag play``.

``rats-ros replay BAG [--topic T] [--rate R] [--loop] [--clock [HZ]] [--remap-to TOPIC]``
(also ``python -m rats_ros.ros.replay``). The bag is read with ``rosbags`` (sqlite3 or mcap)
and each message's recorded CDR bytes are published unchanged (``Publisher.publish(bytes)``), as
``ros2 bag play`` does, on a ``sensor_msgs/Image`` or ``CompressedImage`` publisher, at the
recorded log-time spacing divided by ``--rate``. ``--clock`` also publishes ``/clock``
(``rosgraph_msgs/Clock``) with the bag's log time, so nodes with ``use_sim_time`` follow the bag.
``--loop`` starts over at the end; header stamps then go backwards, as with ``ros2 bag play -l``.

QoS: reliable, keep last 10, volatile by default (what ``ros2 bag play`` offers for a topic
recorded without QoS metadata). A reliable publisher matches both reliable and best-effort
(sensor-data) subscribers, so the node's default subscription receives it; ``--qos best_effort``
mimics a camera driver. It waits (``--wait-timeout``, 60 s) until ``--wait-subscribers``
subscriptions (1) are matched, so nothing is published into the void while the receiving node
is still starting; ``--wait-subscribers 0`` plays at once. Exit codes: 0 played, 2 bad input or
options (a missing bag, an unknown topic, a rate of 0), 1 a fault.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from rosbags.rosbag2 import Reader, ReaderError

from rats_ros.errors import InputError
from rats_ros.io.bags import COMPRESSED, IMAGE, list_image_topics

_NS = 1_000_000_000
_WAIT_TIMEOUT_S = 60.0
_ACK_TIMEOUT_S = 5.0
_LINGER_S = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the replay options to ``parser`` (shared with the ``rats-ros replay`` subcommand)."""
    parser.add_argument("bag", help="rosbag2 directory (or its .db3/.mcap file)")
    parser.add_argument("--topic", help="image topic in the bag (default: the only one)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (> 0)")
    parser.add_argument("--loop", action="store_true", help="start over at the end of the bag")
    parser.add_argument("--clock", nargs="?", type=float, const=40.0, default=0.0, metavar="HZ",
                        help="publish /clock with the bag time at HZ (default 40) for use_sim_time")
    parser.add_argument("--remap-to", dest="remap_to", metavar="TOPIC",
                        help="publish on this topic instead of the recorded one")
    parser.add_argument("--qos", choices=("reliable", "best_effort"), default="reliable",
                        help="reliability of the image publisher (default: reliable)")
    parser.add_argument("--wait-subscribers", type=int, default=1, metavar="N",
                        help="wait for N matched subscriptions before playing (default 1; 0: "
                             "play at once)")
    parser.add_argument("--wait-timeout", type=float, default=_WAIT_TIMEOUT_S, metavar="S",
                        help="play anyway after this many seconds without them (default 60)")


def _bag_dir(path: Path) -> Path:
    suffix_file = path.is_file() and path.suffix in (".db3", ".mcap")
    return path.parent if suffix_file and (path.parent / "metadata.yaml").exists() else path


def pick_topic(bag: Path, topic: str | None) -> tuple[str, str]:
    """Choose the image topic to replay.

    :returns: ``(topic, msgtype)``.
    :raises InputError: missing/corrupt bag, unknown topic, none or several image topics.
    """
    topics = list_image_topics(bag)
    names = ", ".join(f"{name} ({msgtype})" for name, msgtype, _ in topics) or "none"
    if topic is not None:
        match = [(name, msgtype) for name, msgtype, _ in topics if name == topic]
        if not match:
            raise InputError(f"bag {str(bag)!r} has no image topic {topic!r}; "
                             f"image topics: {names}")
        return match[0]
    if len(topics) != 1:
        raise InputError(f"bag {str(bag)!r} needs --topic: image topics are {names}")
    return topics[0][0], topics[0][1]


def iter_raw(bag: Path, topic: str):
    """Yield ``(log_time_ns, cdr_bytes)`` of one topic, in log order, streaming from disk.

    :raises InputError: when the bag cannot be read.
    """
    try:
        with Reader(bag) as reader:
            connections = [c for c in reader.connections if c.topic == topic]
            for _, log_ns, raw in reader.messages(connections=connections):
                yield int(log_ns), bytes(raw)
    except (ReaderError, OSError, ValueError, KeyError) as error:
        raise InputError(f"bag {str(bag)!r} cannot be read ({type(error).__name__}: {error}); "
                         "re-record it or `ros2 bag reindex` it") from None


class Player:
    """Publishes one topic of a bag with its recorded timing.

    :param node: an rclpy node to create the publishers on.
    :param bag: bag directory.
    :param topic: recorded topic; ``msgtype`` its type (Image or CompressedImage).
    :param options: parsed :func:`add_arguments` namespace.
    :param stop: set it to stop playback early.
    """

    def __init__(self, node, bag: Path, topic: str, msgtype: str, options, stop: threading.Event):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CompressedImage, Image

        msg_class = {IMAGE: Image, COMPRESSED: CompressedImage}[msgtype]
        reliability = (ReliabilityPolicy.RELIABLE if options.qos == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        qos = QoSProfile(depth=10, reliability=reliability)
        self.publisher = node.create_publisher(msg_class, options.remap_to or topic, qos)
        self.clock_publisher = node.create_publisher(Clock, "/clock", 10) if options.clock else None
        self._clock_msg = Clock
        self._node, self._bag, self._topic, self._options, self._stop = (
            node, bag, topic, options, stop)
        self.published = 0

    def wait_for_subscribers(self, count: int) -> bool:
        """Wait until ``count`` subscriptions match the image publisher (or stop/timeout)."""
        deadline = time.monotonic() + self._options.wait_timeout
        while self.publisher.get_subscription_count() < count:
            if self._stop.wait(0.05) or time.monotonic() > deadline:
                return False
        return True

    def play(self) -> int:
        """Publish the bag once, or until stopped when looping.

        :returns: the number of messages published.
        """
        from rclpy.duration import Duration

        while not self._stop.is_set():
            self._play_once()
            if not self._options.loop:
                break
        # Reliable: let subscribers acknowledge the last messages, then give them a moment to
        # take them: Fast DDS drops a reader's not-yet-taken samples of a writer that is gone.
        self.publisher.wait_for_all_acked(Duration(seconds=_ACK_TIMEOUT_S))
        self._stop.wait(_LINGER_S)
        return self.published

    def _play_once(self) -> None:
        start_wall = first_ns = None
        for log_ns, raw in iter_raw(self._bag, self._topic):
            if first_ns is None:  # the schedule starts with the first message, after opening
                first_ns, start_wall = log_ns, time.monotonic()  # the bag (slow under load)
            due = start_wall + (log_ns - first_ns) / _NS / self._options.rate
            if not self._sleep_until(due, first_ns, start_wall):
                return
            self._publish_clock(log_ns)
            self.publisher.publish(raw)
            self.published += 1

    def _sleep_until(self, due: float, first_ns: int, start_wall: float) -> bool:
        """Sleep until ``due`` (monotonic), publishing /clock meanwhile; False when stopped."""
        period = 1.0 / self._options.clock if self.clock_publisher else None
        while True:
            now = time.monotonic()
            if now >= due:
                return not self._stop.is_set()
            wait = due - now if period is None else min(period, due - now)
            if self._stop.wait(wait):
                return False
            if period is not None and time.monotonic() < due:
                elapsed = (time.monotonic() - start_wall) * self._options.rate
                self._publish_clock(first_ns + int(elapsed * _NS))

    def _publish_clock(self, bag_ns: int) -> None:
        if self.clock_publisher is None:
            return
        msg = self._clock_msg()
        msg.clock.sec, msg.clock.nanosec = divmod(bag_ns, _NS)
        self.clock_publisher.publish(msg)


def run(options) -> int:
    """Replay as the parsed options say. :returns: the process exit code."""
    if not options.rate > 0:
        print(f"replay: --rate must be > 0, got {options.rate}", file=sys.stderr)
        return 2
    bag = _bag_dir(Path(options.bag))
    try:
        topic, msgtype = pick_topic(bag, options.topic)
    except InputError as error:
        print(f"replay: {error}", file=sys.stderr)
        return 2
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("rats_replay", context=context)
    try:
        player = Player(node, bag, topic, msgtype, options, stop)
        if options.wait_subscribers:
            print(f"replay: waiting up to {options.wait_timeout:.0f} s for "
                  f"{options.wait_subscribers} subscriber(s) on {player.publisher.topic_name} "
                  "(--wait-subscribers 0 plays at once)", file=sys.stderr)
        if options.wait_subscribers and not player.wait_for_subscribers(options.wait_subscribers):
            if not stop.is_set():
                print(f"replay: no {options.wait_subscribers} subscriber(s) within "
                      f"{options.wait_timeout:.0f} s; playing anyway", file=sys.stderr)
        count = player.play()
        print(f"replay: published {count} messages from {topic} "
              f"on {player.publisher.topic_name}", file=sys.stderr)
        return 0
    except InputError as error:
        print(f"replay: {error}", file=sys.stderr)
        return 2
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def main(argv: list[str] | None = None) -> int:
    """``python -m rats_ros.ros.replay BAG ...``; ROS arguments after ``--ros-args`` are ignored."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--ros-args" in argv:
        argv = argv[:argv.index("--ros-args")]
    parser = argparse.ArgumentParser(prog="rats-ros replay", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
