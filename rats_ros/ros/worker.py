"""The ``rats_stream`` node's threads without the node: the two threads between the image
callbacks and the ``captions`` topic (:class:`Worker`), the bounded queues between them, and
message conversions. Imports rclpy message types only; what they run on is
:class:`rats_ros.ros.parts.Parts`.
"""
from __future__ import annotations

import threading
import time
import traceback

from sensor_msgs.msg import Image
from std_msgs.msg import Header

from rats_ros.errors import FrameError, ModelError
from rats_ros.io.images import encode_raw
from rats_ros.io.overlay import selection_tile
from rats_ros.recall.backlog import StoreBacklog
from rats_ros.recall.store import ClipIndexTaken
from rats_ros.ros.diagnostics import StreamStats
from rats_ros.ros.messages import ns_to_time
from rats_ros.stream.captioner import step_many
from rats_ros.stream.queues import DropOldestQueue


def _of(camera: str) -> str:
    """`` of camera front`` for log lines; nothing for the single unnamed camera."""
    return f" of camera {camera}" if camera else ""


class Worker:
    """The sampler thread (frames -> clips, per camera) and the captioner thread (clips ->
    captions, cameras served round robin so none starves).

    Sampling never waits for the model: while a clip is captioned, the next ones are assembled;
    a camera's clips that find its backlog full push out its oldest (counted ``clip_backlog``).

    :param frames: ``(camera, Frame)`` items from the image callbacks.
    :param poses: a :class:`~rats_ros.stream.poses.PoseTrack` (None: captions carry no pose).
    """

    def __init__(self, parts, params, frames: DropOldestQueue, stats: StreamStats,
                 logger, publish, overlay_publisher=None, on_fatal=None, poses=None):
        self.parts, self.params, self.frames, self.stats = parts, params, frames, stats
        self.poses = poses
        self._on_fatal = on_fatal or (lambda message: None)
        self.backlog = StoreBacklog(self._store, params.store_backlog)
        self.clips = {lane.camera: DropOldestQueue(params.clip_queue_size)
                      for lane in parts.lanes}
        self._clip_ready = threading.Event()
        self._turn = 0  # the lane served first next time (round robin)
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

    def clips_waiting(self) -> int:
        return sum(len(queue) for queue in self.clips.values())

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
        idle_flush = self.params.idle_flush
        last_frame = {lane.camera: time.monotonic() for lane in self.parts.lanes}
        while not self._stop.is_set():
            item = self.frames.get(timeout=0.1)
            if item is not None:
                camera, frame = item
                assembler = self.parts.lane(camera).assembler
                repeated = assembler.stats.repeated_stamps
                self._enqueue(camera, assembler.push(frame))
                if assembler.stats.repeated_stamps > repeated:
                    self._repeated_stamp(camera)
                else:  # a frame stuck at one stamp is no input: idle_flush still comes
                    last_frame[camera] = time.monotonic()
            for lane in self.parts.lanes:  # a camera gone quiet: its partial clip is captioned
                if idle_flush and lane.assembler.pending and \
                        time.monotonic() - last_frame[lane.camera] > idle_flush:
                    self._enqueue(lane.camera, lane.assembler.flush())

    def _repeated_stamp(self, camera: str) -> None:
        count = self.stats.refuse("repeated_stamp", camera)
        self._logger.warning(f"refused a frame with the previous frame's header stamp ({count} "
                             f"so far){_of(camera)}: the camera driver does not stamp each "
                             "frame; fix its header stamps", throttle_duration_sec=5.0)

    def _enqueue(self, camera: str, clip) -> None:
        if clip is None:
            return
        if self.clips[camera].put(clip):
            self.stats.drop("clip_backlog", camera=camera)
            self._logger.warning(f"captioning is behind real time: dropped the oldest waiting "
                                 f"clip{_of(camera)}", throttle_duration_sec=10.0)
        self._clip_ready.set()

    def _next_clip(self):
        """The next ``(lane, clip)``, cameras in turn, or None after 0.1 s without any."""
        lanes = self.parts.lanes
        for _ in range(2):
            for step in range(len(lanes)):
                lane = lanes[(self._turn + step) % len(lanes)]
                clip = self.clips[lane.camera].get(timeout=0)
                if clip is not None:
                    self._turn = (self._turn + step + 1) % len(lanes)
                    return lane, clip
            self._clip_ready.clear()
            self._clip_ready.wait(0.1)
        return None

    def _more_clips(self, first) -> list:
        """``first`` and, with ``batch_cameras``, one waiting clip of each other camera (in
        turn): the clips captioned together."""
        items = [first]
        if self.params.batch_cameras:
            lanes = self.parts.lanes
            for step in range(len(lanes)):
                lane = lanes[(self._turn + step) % len(lanes)]
                if lane is not first[0]:
                    clip = self.clips[lane.camera].get(timeout=0)
                    if clip is not None:
                        items.append((lane, clip))
        return items

    def _caption_clips(self) -> None:
        next_spool_check = 0.0
        while not self._stop.is_set():
            item = self._next_clip()
            if item is not None:
                self._caption_together(self._more_clips(item))
            self._flush_backlog()
            if time.monotonic() >= next_spool_check:  # a quiet stream's spool drains too
                self._flush_spools()
                next_spool_check = time.monotonic() + 1.0

    def _flush_spools(self) -> None:
        """Move spooled captions to the database; WARN while any wait there."""
        spools = [lane.store for lane in self.parts.lanes if hasattr(lane.store, "spooled")]
        if not spools:
            return
        waiting = sum(0 if spool.flush() else spool.spooled() for spool in spools)
        if not waiting:
            self.stats.warn("")
            return
        reason = next((s.last_error for s in spools if s.last_error), "")
        self.stats.warn(f"caption database unreachable: {waiting} captions spooled in "
                        f"{spools[0].spool.path}, flushed in order when it returns ({reason})")

    def _caption_together(self, items) -> None:
        """Caption ``(lane, clip)`` items in one batched step. A failed batch has changed no
        captioner, so its clips are then captioned one by one, each reporting its own error."""
        captions = None
        if len(items) > 1:
            try:
                captions = step_many([lane.captioner for lane, _ in items],
                                     [clip for _, clip in items])
            except (ModelError, FrameError, MemoryError):  # retried per clip just below
                captions = None
        for index, (lane, clip) in enumerate(items):
            caption = captions[index] if captions is not None else self._step(lane, clip)
            if caption is not None:
                self._embed_and_deliver(lane, clip, caption)

    def _step(self, lane, clip):
        """One camera's clip alone: its caption, or None (reported)."""
        try:
            return lane.captioner.step(clip)
        except (ModelError, FrameError, MemoryError) as error:
            self._failed(lane, error)
            return None

    def _embed_and_deliver(self, lane, clip, caption) -> None:
        try:
            embedding = self.parts.embedder.embed([caption.text])[0]  # (d,)
        except (ModelError, MemoryError) as error:
            self._failed(lane, error)
            return
        self._deliver(lane, clip, caption, embedding)

    def _failed(self, lane, error) -> None:
        if isinstance(error, MemoryError):  # numpy's and Python's out-of-memory
            error = "out of memory while preparing a clip: use a smaller model, fewer " \
                    "frames per clip, fewer memory clips or a lower max_image_side"
        self.stats.fail(f"captioning a clip{_of(lane.camera)} failed: {error}",
                        source=f"camera {lane.camera}")
        self.stats.drop("model_error", camera=lane.camera)
        self._logger.error(f"captioning a clip{_of(lane.camera)} failed: {error}")

    def _deliver(self, lane, clip, caption, embedding) -> None:
        """Pose, backlog and (once stored) publication of one caption."""
        caption.camera = lane.camera
        self._place(caption)
        lost = self.backlog.add(caption, embedding, clip)
        if lost is not None:
            self.stats.drop("store_backlog", camera=lost.camera)
            self._logger.error(f"caption {lost.clip_index}{_of(lost.camera)} lost: the caption "
                               f"store has refused writes for {self.backlog.capacity} captions "
                               "(store_backlog)")

    def _place(self, caption) -> None:
        """Give the caption the robot's pose at its clip's end, when one is near in time."""
        if self.poses is not None and not self.poses.place(caption):
            self.stats.count("captions_without_pose")

    def _flush_backlog(self) -> None:
        """Commit waiting captions in order; each one committed is published."""
        error = self.backlog.flush(self._stored)
        if error is not None:
            message = (f"caption store refuses writes: {error}; {len(self.backlog)} captions "
                       f"held in memory (store_backlog {self.backlog.capacity}), stored and "
                       "published when it accepts writes again")
            self.stats.fail(message, source="store")
            self._logger.error(message, throttle_duration_sec=10.0)

    def _stored(self, caption, clip) -> None:
        self.stats.clear_error("store", f"camera {caption.camera}")  # what this caption proves
        self.stats.clip(caption.processing_time, camera=caption.camera)
        camera = f" camera {caption.camera}" if caption.camera else ""
        self._logger.info(f"clip {caption.clip_index}{camera} captioned in "
                          f"{caption.processing_time:.2f} s: {caption.text[:80]!r}")
        self._publish(caption)
        if self._overlay is not None:
            self._publish_overlay(clip, caption)

    def _store(self, caption, embedding) -> None:
        """Commit the caption; one whose index another writer took gets the next free index
        (and the captioner continues after it), so a collision never drops a caption."""
        parts = self.parts
        lane = parts.lane(caption.camera)
        try:
            lane.store.add(caption, embedding, parts.embedder.name, model=parts.model_name)
        except ClipIndexTaken as taken:
            caption.clip_index = lane.store.next_clip_index()
            lane.captioner.next_index = caption.clip_index + 1
            self._logger.warning(f"{taken}; stored as clip {caption.clip_index} instead")
            lane.store.add(caption, embedding, parts.embedder.name, model=parts.model_name)

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
