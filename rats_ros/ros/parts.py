"""What the ``rats_stream`` node's configure builds from its parameters (:class:`Parts`): one
model, embedder and question answerer for every camera, and per camera a :class:`Lane` (its
store stream, clip assembler, captioner with its own memory and clip indices). No rclpy here
beyond the parameter record; the threads that use these are :mod:`rats_ros.ros.worker`.
"""
from __future__ import annotations

from dataclasses import dataclass

from rats_ros.errors import QuestionError
from rats_ros.ros import params as node_params

_NS = 1_000_000_000


@dataclass
class Lane:
    """One camera's share of the pipeline.

    :param camera: the camera's name (``""`` for the single unnamed camera).
    :param stream_id: its stream in the store.
    :param store: the store object that writes that stream (holding its writer claim).
    :param assembler: frames -> clips for this camera (kept across deactivate/activate so
        sampled frames of a partial clip are not lost).
    :param captioner: this camera's recurrent captioner (memory, clip indices).
    """

    camera: str
    stream_id: str
    store: object
    assembler: object
    captioner: object


class Parts:
    """What configure builds from the parameters: stores, the pipeline (model, embedder), one
    lane per camera, and the question answerer.

    Heavy imports (torch, transformers) happen here, so a node with bad parameters fails fast;
    the stores are opened before the model loads, so a bad ``store_path`` fails in a second.

    :param params: the node's parameters.
    :param writer: who writes (the node's name and pid), named by the stream claims.
    :raises RatsError: when a store cannot be opened or claimed, or the model cannot be loaded.
    """

    def __init__(self, params: node_params.NodeParams, writer: str):
        from rats_ros.recall.stores import default_robot, is_url

        self.model_name, self.params = params.model, params
        self.store_path = params.resolved_store_path()
        self.robot = (params.robot_id or default_robot()) if is_url(self.store_path) else ""
        self._stores, self._fleet = [], {}
        try:
            self._open_stores(params, writer)
            self._build(params)
        except BaseException:
            self.close()
            raise

    def _open_stores(self, params, writer: str) -> None:
        """Per camera a writer (for PostgreSQL spooled: an unreachable server is an outage,
        a refusing one an error); a reader of every camera's stream for questions."""
        from rats_ros.recall.retention import RetentionPolicy
        from rats_ros.recall.stores import SpoolConfig, open_reader, open_writer

        retention = RetentionPolicy(max_age_s=params.retention_max_age_s,
                                    max_rows=params.retention_max_rows)
        spool = SpoolConfig(params.resolved_spool_path(), params.spool_max_rows) \
            if self.robot else None
        for _, stream in params.camera_streams():
            self._stores.append(open_writer(self.store_path, stream, writer=writer,
                                            robot=self.robot, retention=retention,
                                            spool=spool))
        streams = tuple(store.stream_id for store in self._stores)
        if len(streams) == 1 and not self.robot:  # a single camera's writer reads its own
            self.store = self._stores[0]
        else:
            self.store = open_reader(self.store_path, streams[0], robot=self.robot,
                                     streams=streams, lazy=True)

    def _build(self, params) -> None:
        from rats_ros.models.base import BackendConfig
        from rats_ros.pipeline import Pipeline, PipelineConfig
        from rats_ros.recall.qa import QAConfig
        from rats_ros.stream.captioner import CaptionerConfig

        self.pipeline = Pipeline(PipelineConfig(
            BackendConfig(params.model, params.device, params.dtype, engine=params.engine,
                          engine_dir=params.engine_dir, weights=params.weights,
                          cache_dir=params.resolved_cache_dir()),
            CaptionerConfig(keep_ratio=params.keep_ratio, memory_clips=params.memory_clips,
                            selection=params.selection, recurrence=params.recurrence,
                            max_new_tokens=params.max_caption_tokens),
            QAConfig(context_tokens=params.context_tokens,
                     max_answer_tokens=params.max_answer_tokens, mmr_pool=params.mmr_pool,
                     time_format=params.time_format, timezone=params.timezone,
                     temporal=params.temporal_evidence),
            embedder=params.embedder, fps=params.fps, clip_frames=params.clip_frames))
        self.backend, self.embedder = self.pipeline.backend, self.pipeline.embedder
        self.lanes = [Lane(camera, store.stream_id, store, self.pipeline.assembler(),
                           self.pipeline.captioner(store.next_clip_index()))
                      for (camera, _), store in zip(params.camera_streams(), self._stores,
                                                    strict=True)]
        # tiles timed and kernels compiled here, not inside the first captions' latency
        self.prepare_s = self.pipeline.prepare(len(self.lanes) if params.batch_cameras else 1)
        self.qa = self.pipeline.answerer(self.store)

    def lane(self, camera: str) -> Lane:
        """The lane of ``camera``. :raises KeyError: for a camera this node does not have."""
        return next(lane for lane in self.lanes if lane.camera == camera)

    def summary(self) -> str:
        """The model summary of ``rats-ros check-model`` for this node's clips (4:3 frames at
        most max_image_side wide), on one line for the log."""
        from rats_ros.models.summary import summarize
        from rats_ros.stream.captioner import DEFAULT_PROMPT

        p = self.params
        width = min(640, p.max_image_side)
        summary = summarize(self.backend, p.clip_frames, width * 3 // 4, width, p.memory_clips,
                            p.keep_ratio, p.context_tokens, p.max_answer_tokens,
                            prompt=DEFAULT_PROMPT)
        return "; ".join(line.replace("\n", "\\n") for line in summary.lines())

    def ask(self, request, now_ns: int | None = None, progress=None):
        """Answer an ``AskVideo`` request (service request or action goal) asked at ``now_ns``
        (the node's clock; ages in the prompt count from it), reporting to ``progress``
        (:class:`~rats_ros.recall.qa.AskProgress`, the action's feedback and cancel).

        :raises RatsError: the reason it cannot be answered."""
        from rats_ros.recall.retrieval import Place

        if not request.robots and self.store.count() == 0:
            raise QuestionError("no captions exist yet: the node has not captioned a clip; "
                                "send camera images for clip_frames / fps seconds and ask again")
        for name in ("since", "until"):
            if getattr(request, name).nanosec >= _NS:
                raise QuestionError(f"{name}.nanosec must be below 1e9 (the seconds go in "
                                    f"{name}.sec), got {getattr(request, name).nanosec}")
        unknown = sorted(set(request.cameras) - {lane.camera for lane in self.lanes})
        if unknown:
            raise QuestionError(f"unknown cameras {unknown}: this node captions "
                                f"{[lane.camera for lane in self.lanes]}")
        place = None
        if request.use_position:
            p = request.position
            place = Place(p.x, p.y, p.z, float(request.radius))
        return self._answerer(tuple(request.robots)).ask(
            request.question, since_ns=_time_ns(request.since), until_ns=_time_ns(request.until),
            max_captions=int(request.max_captions), cameras=tuple(request.cameras), place=place,
            now_ns=now_ns, progress=progress)

    def _answerer(self, robots: tuple[str, ...]):
        """This robot's answerer, or one over other robots' captions (a fleet store), kept per
        set of robots so its retrieval index stays warm."""
        if not robots or robots == (self.robot,):
            return self.qa
        if not self.robot:
            raise QuestionError("questions about other robots need a shared store: set "
                                "store_path to a postgresql:// URL")
        key = ("*",) if "*" in robots else tuple(sorted(set(robots)))
        if key not in self._fleet:
            from rats_ros.recall.stores import open_reader

            store = open_reader(self.store_path, self.store.stream_id, robot=self.robot,
                                robots=key, streams=(), lazy=True)
            self._fleet[key] = self.pipeline.answerer(store)
        return self._fleet[key]

    def close(self) -> None:
        """Close every store (idempotent)."""
        fleet = [qa.store for qa in self._fleet.values()]
        for store in {id(s): s for s in [*self._stores, getattr(self, "store", None), *fleet]
                      if s is not None}.values():
            store.close()


def _time_ns(stamp) -> int:
    return int(stamp.sec) * _NS + int(stamp.nanosec)
