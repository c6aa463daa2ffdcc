"""The ``rats_stream`` node's moving parts without the node: what configure builds (:class:`Parts`),
the two threads between the image callback and the ``captions`` topic (:class:`Worker`), the
bounded queues between them, and message conversions. Imports rclpy message types only.
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import deque

from builtin_interfaces.msg import Time as TimeMsg
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from rats_ros.errors import FrameError, ModelError, QuestionError
from rats_ros.io.images import encode_raw
from rats_ros.msg import Caption
from rats_ros.recall.backlog import StoreBacklog
from rats_ros.recall.store import ClipIndexTaken
from rats_ros.records import record_values
from rats_ros.ros import params as node_params
from rats_ros.ros.diagnostics import StreamStats
from rats_ros.stream.clips import ClipAssembler
from rats_ros.tools.overlay import selection_tile

_NS = 1_000_000_000


def time_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` -> int nanoseconds."""
    return int(stamp.sec) * _NS + int(stamp.nanosec)


def ns_to_time(stamp_ns: int) -> TimeMsg:
    """Int nanoseconds -> ``builtin_interfaces/Time``."""
    sec, nanosec = divmod(int(stamp_ns), _NS)
    return TimeMsg(sec=sec, nanosec=nanosec)


def caption_msg(caption, frame_id: str, model: str) -> Caption:
    """A caption record (``ClipCaption``, ``StoredCaption``) as a ``rats_ros/Caption``: every
    record field by name, ``start_ns``/``end_ns`` as times, stamped with the clip's end."""
    values = record_values(caption, model=model)
    start, end = ns_to_time(values.pop("start_ns")), ns_to_time(values.pop("end_ns"))
    return Caption(header=Header(stamp=end, frame_id=frame_id), start=start, end=end, **values)


class DropOldestQueue:
    """A bounded FIFO shared by two threads; a put into a full queue drops the oldest item."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: deque = deque()
        self._ready = threading.Condition()

    def put(self, item) -> bool:
        """:returns: True when the oldest item was dropped to make room."""
        with self._ready:
            dropped = len(self._items) >= self.capacity
            if dropped:
                self._items.popleft()
            self._items.append(item)
            self._ready.notify()
            return dropped

    def get(self, timeout: float):
        """:returns: the oldest item, or None after ``timeout`` seconds without one."""
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            return self._items.popleft() if self._items else None

    def clear(self) -> None:
        with self._ready:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class Parts:
    """What configure builds from the parameters: store, model, captioner, embedder, QA.

    Heavy imports (torch, transformers) happen here, so a node with bad parameters fails fast.

    :raises RatsError: when the store cannot be opened or the model cannot be loaded.
    """

    def __init__(self, params: node_params.NodeParams, writer: str):
        from rats_ros.models import load_backend
        from rats_ros.recall.embedders import make_embedder
        from rats_ros.recall.qa import QAConfig, QuestionAnswerer
        from rats_ros.recall.store import CaptionStore, RetentionPolicy
        from rats_ros.stream.captioner import CaptionerConfig, RecurrentCaptioner

        self.model_name, self.params = params.model, params
        self.store_path = params.resolved_store_path()
        retention = RetentionPolicy(max_age_s=params.retention_max_age_s,
                                    max_rows=params.retention_max_rows)
        self.store = CaptionStore(self.store_path, params.stream_id, retention, writer=writer)
        try:
            self.backend = load_backend(params.model, params.device, params.dtype)
            self.embedder = make_embedder(params.embedder, self.backend)
            self.start_index = self.store.next_clip_index()
            self.captioner = RecurrentCaptioner(self.backend, CaptionerConfig(
                keep_ratio=params.keep_ratio, memory_clips=params.memory_clips,
                selection=params.selection, recurrence=params.recurrence,
                max_new_tokens=params.max_caption_tokens), start_index=self.start_index)
            self.qa = QuestionAnswerer(self.store, self.embedder, self.backend, QAConfig(
                context_tokens=params.context_tokens, max_answer_tokens=params.max_answer_tokens))
        except BaseException:
            self.store.close()
            raise
        # Kept across deactivate/activate so sampled frames of a partial clip are not lost.
        self.assembler = ClipAssembler(params.fps, params.clip_frames)

    def summary(self) -> str:
        """The model summary of ``rats-ros check-model`` for this node's clips (4:3 frames at
        most max_image_side wide), on one line for the log."""
        from rats_ros.models.summary import summarize

        p = self.params
        width = min(640, p.max_image_side)
        summary = summarize(self.backend, p.clip_frames, width * 3 // 4, width, p.memory_clips,
                            p.keep_ratio, p.context_tokens, p.max_answer_tokens)
        return "; ".join(line.replace("\n", "\\n") for line in summary.lines())

    def ask(self, request):
        """Answer an ``AskVideo`` request. :raises RatsError: the reason it cannot be answered."""
        if self.store.count() == 0:
            raise QuestionError("no captions exist yet: the node has not captioned a clip; "
                                "send camera images for clip_frames / fps seconds and ask again")
        for name in ("since", "until"):
            if getattr(request, name).nanosec >= _NS:
                raise QuestionError(f"{name}.nanosec must be below 1e9 (the seconds go in "
                                    f"{name}.sec), got {getattr(request, name).nanosec}")
        return self.qa.ask(request.question, since_ns=time_to_ns(request.since),
                           until_ns=time_to_ns(request.until),
                           max_captions=int(request.max_captions))

    def close(self) -> None:
        self.store.close()


class Worker:
    """The sampler thread (frames -> clips) and the captioner thread (clips -> captions).

    Sampling never waits for the model: while a clip is captioned, the next one is assembled;
    clips that find the backlog full push out the oldest (counted ``clip_backlog``).
    """

    def __init__(self, parts: Parts, params, frames: DropOldestQueue, stats: StreamStats,
                 logger, publish, overlay_publisher=None, on_fatal=None):
        self.parts, self.params, self.frames, self.stats = parts, params, frames, stats
        self._on_fatal = on_fatal or (lambda message: None)
        self.backlog = StoreBacklog(self._store, params.store_backlog)
        self.clips = DropOldestQueue(params.clip_queue_size)
        self._logger, self._publish, self._overlay = logger, publish, overlay_publisher
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample_loop, name="rats-sampler"),
                         threading.Thread(target=self._caption_loop, name="rats-captioner")]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop both threads; a clip being captioned is finished first."""
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _sample_loop(self) -> None:
        self._guarded(self._sample_frames, "sampling")

    def _caption_loop(self) -> None:
        self._guarded(self._caption_clips, "captioning")

    def _guarded(self, loop, what: str) -> None:
        """Run a thread's loop; an unexpected error ends it, and then the process (code 1)."""
        try:
            loop()
        except Exception as error:  # noqa: BLE001 - the thread's boundary: report, then end
            message = (f"{what} stopped by an unexpected {type(error).__name__}: {error}; "
                       "the process exits with code 1 so that it is restarted")
            self.stats.fail(message)
            self._logger.fatal(message)
            self._logger.debug(traceback.format_exc())
            self._on_fatal(message)

    def _sample_frames(self) -> None:
        assembler, idle_flush = self.parts.assembler, self.params.idle_flush
        last_frame = time.monotonic()
        while not self._stop.is_set():
            frame = self.frames.get(timeout=0.1)
            if frame is not None:
                repeated = assembler.stats.repeated_stamps
                self._enqueue(assembler.push(frame))
                if assembler.stats.repeated_stamps > repeated:
                    self._repeated_stamp()
                else:  # a frame stuck at one stamp is no input: idle_flush still comes
                    last_frame = time.monotonic()
            elif idle_flush and assembler.pending and time.monotonic() - last_frame > idle_flush:
                self._enqueue(assembler.flush())

    def _repeated_stamp(self) -> None:
        count = self.stats.refuse("repeated_stamp")
        self._logger.warning(f"refused a frame with the previous frame's header stamp ({count} "
                             "so far): the camera driver does not stamp each frame; fix its "
                             "header stamps", throttle_duration_sec=5.0)

    def _enqueue(self, clip) -> None:
        if clip is not None and self.clips.put(clip):
            self.stats.drop("clip_backlog")
            self._logger.warning("captioning is behind real time: dropped the oldest waiting "
                                 "clip", throttle_duration_sec=10.0)

    def _caption_clips(self) -> None:
        while not self._stop.is_set():
            clip = self.clips.get(timeout=0.1)
            if clip is not None:
                self._caption(clip)
            self._flush_backlog()

    def _caption(self, clip) -> None:
        parts = self.parts
        try:
            caption = parts.captioner.step(clip)
            embedding = parts.embedder.embed([caption.text])[0]  # (d,)
        except (ModelError, FrameError, MemoryError) as error:
            if isinstance(error, MemoryError):  # numpy's and Python's out-of-memory
                error = "out of memory while preparing a clip: use a smaller model, fewer " \
                        "frames per clip, fewer memory clips or a lower max_image_side"
            self.stats.fail(f"captioning a clip failed: {error}")
            self.stats.drop("model_error")
            self._logger.error(f"captioning a clip failed: {error}")
            return
        lost = self.backlog.add(caption, embedding, clip)
        if lost is not None:
            self.stats.drop("store_backlog")
            self._logger.error(f"caption {lost.clip_index} lost: the caption store has refused "
                               f"writes for {self.backlog.capacity} captions (store_backlog)")

    def _flush_backlog(self) -> None:
        """Commit waiting captions in order; each one committed is published."""
        error = self.backlog.flush(self._stored)
        if error is not None:
            message = (f"caption store refuses writes: {error}; {len(self.backlog)} captions "
                       f"held in memory (store_backlog {self.backlog.capacity}), stored and "
                       "published when it accepts writes again")
            self.stats.fail(message)
            self._logger.error(message, throttle_duration_sec=10.0)

    def _stored(self, caption, clip) -> None:
        self.stats.clear_error()
        self.stats.clip(caption.processing_time)
        self._publish(caption)
        if self._overlay is not None:
            self._publish_overlay(clip, caption)

    def _store(self, caption, embedding) -> None:
        """Commit the caption; one whose index another writer took gets the next free index
        (and the captioner continues after it), so a collision never drops a caption."""
        parts = self.parts
        try:
            parts.store.add(caption, embedding, parts.embedder.name, model=parts.model_name)
        except ClipIndexTaken as taken:
            caption.clip_index = parts.store.next_clip_index()
            parts.captioner.next_index = caption.clip_index + 1
            self._logger.warning(f"{taken}; stored as clip {caption.clip_index} instead")
            parts.store.add(caption, embedding, parts.embedder.name, model=parts.model_name)

    def _publish_overlay(self, clip, caption) -> None:
        try:
            tile = selection_tile(clip.pixels(), caption.kept_indices, caption.token_grid,
                                  caption.frames_per_group)
        except ValueError as error:
            self._logger.warning(f"no selection overlay: {error}", once=True)
            return
        encoding, width, height, step, data = encode_raw(tile, "rgb8")
        self._overlay.publish(Image(header=Header(stamp=ns_to_time(caption.end_ns)),
                                    encoding=encoding, width=width, height=height, step=step,
                                    data=data))
