"""Counters of the streaming pipeline and the ``/diagnostics`` status built from them.

:class:`StreamStats` is written by the image callback, the worker threads and the service
(one lock, cheap updates) and read by the diagnostics timer. :func:`diagnostic_array` turns one
:meth:`StreamStats.snapshot` into a ``diagnostic_msgs/DiagnosticArray`` with one status:

- ERROR when the model failed (load or inference),
- WARN when captioning falls behind real time (average processing time per clip above the clip's
  stream duration, clips dropped from the backlog in the last window, or the frame queue full),
  when a camera's topic brought no message for ``input_timeout_s`` (a driver gone, a wrong
  remapping, or frames lost before the node: DDS out of memory), or frames were refused in the
  last window,
- OK otherwise.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

STATUS_NAME = "rats_stream: captioning"


class _Rate:
    """Events per second over a sliding window of monotonic times."""

    def __init__(self, window_s: float):
        self._window = window_s
        self._times: deque[float] = deque()
        self._start = time.monotonic()

    def add(self, now: float, count: int = 1) -> None:
        self._times.extend([now] * count)

    def per_second(self, now: float) -> float:
        while self._times and self._times[0] < now - self._window:
            self._times.popleft()
        span = min(self._window, max(now - self._start, 1e-3))
        return len(self._times) / span

    def recent(self, now: float) -> int:
        self.per_second(now)
        return len(self._times)


class StreamStats:
    """Thread-safe counters of one streaming session.

    :param window_s: the window of the frame/clip rates and of "recent" drops and refusals.
    """

    def __init__(self, window_s: float = 10.0):
        self._lock = threading.Lock()
        self._window = window_s
        self.frames = 0                       # decoded frames put on the queue
        self.refused: Counter[str] = Counter()  # bad frames, by reason
        self.dropped: Counter[str] = Counter()  # good frames/clips lost to overload, by reason
        self.questions: Counter[str] = Counter()  # answered / refused
        self.clips = 0
        self._errors: dict[str, str] = {}  # source -> its failure, ERROR while any is set
        self.warning = ""
        self._processing: deque[float] = deque(maxlen=50)
        self._frame_rate = _Rate(window_s)
        self._clip_rate = _Rate(window_s)
        self._recent_refused = _Rate(window_s)
        self._last_refused: dict[str, float] = {}  # reason -> monotonic time of its last refusal
        self._recent_backlog = _Rate(window_s)
        self.cameras: dict[str, Counter[str]] = {}  # named camera -> its own counters
        self.counts: Counter[str] = Counter()  # other events (captions_without_pose, poses...)
        self._topics: dict[str, str] = {}  # camera -> its image topic, watched while active
        self._heard: dict[str, float] = {}  # camera -> monotonic time of its last message
        self._ever: set[str] = set()  # cameras that brought a message since listen()
        self.input_timeout_s = 0.0

    def _camera(self, camera: str | None, key: str, count: int = 1) -> None:
        """Count ``key`` for a named camera too (the single unnamed camera has the totals)."""
        if camera:
            self.cameras.setdefault(camera, Counter())[key] += count

    def count(self, key: str, count: int = 1) -> None:
        """Count an event that has no rate (e.g. ``captions_without_pose``)."""
        with self._lock:
            self.counts[key] += count

    def listen(self, topics: dict[str, str], timeout_s: float) -> None:
        """Watch each camera's image topic (``camera -> topic``) from now on: a camera whose
        topic brings no message for ``timeout_s`` (0: never) is reported; ``{}`` stops."""
        with self._lock:
            now = time.monotonic()
            self._topics, self.input_timeout_s = dict(topics), timeout_s
            self._heard, self._ever = {camera: now for camera in topics}, set()

    def heard(self, camera: str) -> None:
        """A message arrived on ``camera``'s topic (usable or not: the camera is alive); a
        camera not watched now (a callback late after deactivation) is ignored."""
        with self._lock:
            if camera in self._topics:
                self._heard[camera] = time.monotonic()
                self._ever.add(camera)

    def frame(self, camera: str | None = None) -> None:
        """One frame decoded and queued."""
        with self._lock:
            self.frames += 1
            self._frame_rate.add(time.monotonic())
            self._camera(camera, "frames_received")

    def refuse(self, reason: str, camera: str | None = None) -> int:
        """One bad frame refused; :returns: how many were refused for this reason so far."""
        with self._lock:
            self.refused[reason] += 1
            self._camera(camera, "refused")
            now = time.monotonic()
            self._recent_refused.add(now)
            self._last_refused[reason] = now
            return self.refused[reason]

    def drop(self, reason: str, count: int = 1, camera: str | None = None) -> None:
        """Good input lost to overload (``queue_full``, ``clip_backlog``, ...)."""
        if count <= 0:
            return
        with self._lock:
            self.dropped[reason] += count
            self._camera(camera, "dropped", count)
            if reason == "clip_backlog":
                self._recent_backlog.add(time.monotonic(), count)

    def clip(self, processing_time: float, camera: str | None = None) -> None:
        """One clip captioned, stored and published."""
        with self._lock:
            self.clips += 1
            self._camera(camera, "clips_captioned")
            self._processing.append(processing_time)
            self._clip_rate.add(time.monotonic())

    def question(self, outcome: str) -> None:
        """One AskVideo request: ``answered`` or ``refused``."""
        with self._lock:
            self.questions[outcome] += 1

    def fail(self, message: str, source: str = "node") -> None:
        """Remember a failure (configure, store, worker; a camera's captioning): ERROR until
        :meth:`clear_error` of its ``source``, so one camera's success does not hide another's
        failure."""
        with self._lock:
            self._errors[source] = message

    def clear_error(self, *sources: str) -> None:
        """Forget the failures of ``sources`` (all of them when none is named)."""
        with self._lock:
            for source in sources or list(self._errors):
                self._errors.pop(source, None)

    @property
    def error(self) -> str:
        """The failures remembered now, ``; ``-joined (empty: none)."""
        with self._lock:
            return self._joined_errors()

    def _joined_errors(self) -> str:
        return "; ".join(self._errors.values())

    def warn(self, message: str) -> None:
        """A lasting condition worth a WARN (e.g. captions spooled during a database outage);
        an empty message clears it."""
        with self._lock:
            self.warning = message

    def snapshot(self) -> dict:
        """A consistent copy of every counter and rate (seconds, frames/s, clips/s)."""
        now = time.monotonic()
        with self._lock:
            times = list(self._processing)
            return {
                "frames": self.frames,
                "input_fps": self._frame_rate.per_second(now),
                "clips": self.clips,
                "clip_rate": self._clip_rate.per_second(now),
                "refused": dict(self.refused),
                "dropped": dict(self.dropped),
                "questions": dict(self.questions),
                "recent_refused": self._recent_refused.recent(now),
                "recent_refused_reasons": sorted(
                    r for r, t in self._last_refused.items() if t >= now - self._window),
                "recent_backlog_drops": self._recent_backlog.recent(now),
                "last_processing_time": times[-1] if times else 0.0,
                "avg_processing_time": sum(times) / len(times) if times else 0.0,
                "error": self._joined_errors(),
                "warning": self.warning,
                "cameras": {name: dict(c) for name, c in self.cameras.items()},
                "counts": dict(self.counts),
                "input_age": {camera: now - t for camera, t in self._heard.items()},
                "silent": [(self._topics[camera], now - t, camera in self._ever)
                           for camera, t in self._heard.items()
                           if self.input_timeout_s and now - t > self.input_timeout_s],
            }


def level_and_message(snap: dict, clip_duration_s: float, queue_full: bool) -> tuple[int, str]:
    """Pick the status level and a one-line message from a snapshot.

    :param snap: :meth:`StreamStats.snapshot`.
    :param clip_duration_s: stream seconds per clip (the real-time budget of one clip).
    :param queue_full: the frame queue is at capacity right now.
    :returns: ``(DiagnosticStatus level, message)``.
    """
    if snap["error"]:
        return DiagnosticStatus.ERROR, snap["error"]
    if snap.get("warning"):
        return DiagnosticStatus.WARN, snap["warning"]
    behind = []
    if snap["avg_processing_time"] > clip_duration_s:
        behind.append(f"{snap['avg_processing_time']:.3g} s per clip > clip duration "
                      f"{clip_duration_s:.3g} s")
    if snap["recent_backlog_drops"]:
        behind.append(f"{snap['recent_backlog_drops']} clips dropped from the backlog")
    if queue_full:
        behind.append("frame queue full")
    if behind:
        return DiagnosticStatus.WARN, "captioning behind real time: " + "; ".join(behind)
    if snap.get("silent"):
        return DiagnosticStatus.WARN, silence_message(snap["silent"])
    if snap["recent_refused"]:
        reasons = ", ".join(snap["recent_refused_reasons"])
        return DiagnosticStatus.WARN, f"refusing input frames ({reasons})"
    return DiagnosticStatus.OK, "captioning"


def silence_message(silent: list) -> str:
    """The WARN message of cameras whose topics went quiet: ``(topic, seconds, ever)``."""
    quiet = "; ".join(f"{topic} for {age:.0f} s" if ever else
                      f"{topic} since activation {age:.0f} s ago" for topic, age, ever in silent)
    return (f"no image message on {quiet}: check the camera driver, the topic remapping and "
            "QoS (frames lost before the node, e.g. DDS short of memory, show only here)")


def diagnostic_array(stamp, snap: dict, info: dict, clip_duration_s: float,
                     queue_depth: int, queue_capacity: int) -> DiagnosticArray:
    """Build the ``/diagnostics`` message.

    :param stamp: ``builtin_interfaces/Time`` of the message (node clock).
    :param snap: :meth:`StreamStats.snapshot`.
    :param info: fixed key/values (``state``, ``model``, ``device``, ...), shown first.
    :param clip_duration_s: stream seconds per full clip.
    :param queue_depth: frames waiting now.
    :param queue_capacity: the frame queue's size.
    :returns: an array with one :data:`STATUS_NAME` status.
    """
    level, message = level_and_message(snap, clip_duration_s, queue_depth >= queue_capacity)
    if info.get("state") not in (None, "active") and level == DiagnosticStatus.OK:
        message = f"not captioning: lifecycle state {info['state']}"
    values = dict(info)
    values.update({
        "input_frame_rate": f"{snap['input_fps']:.2f}",
        "frames_received": snap["frames"],
        "clip_rate": f"{snap['clip_rate']:.4f}",
        "clips_captioned": snap["clips"],
        "queue_depth": queue_depth,
        "queue_capacity": queue_capacity,
        "last_processing_time": f"{snap['last_processing_time']:.3f}",
        "avg_processing_time": f"{snap['avg_processing_time']:.3f}",
        "clip_duration": f"{clip_duration_s:.3f}",
        "dropped_total": sum(snap["dropped"].values()),
        "refused_total": sum(snap["refused"].values()),
        "questions_answered": snap["questions"].get("answered", 0),
        "questions_refused": snap["questions"].get("refused", 0),
    })
    values.update({f"dropped.{k}": v for k, v in sorted(snap["dropped"].items())})
    values.update({f"refused.{k}": v for k, v in sorted(snap["refused"].items())})
    values.update(sorted(snap["counts"].items()))
    for camera, counts in sorted(snap["cameras"].items()):
        values.update({f"camera.{camera}.{k}": v for k, v in sorted(counts.items())})
    for camera, age in sorted(snap.get("input_age", {}).items()):
        values[f"camera.{camera}.seconds_since_message" if camera
               else "seconds_since_message"] = f"{age:.1f}"
    status = DiagnosticStatus(level=level, name=STATUS_NAME, message=message,
                              hardware_id=str(info.get("device", "")),
                              values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])
