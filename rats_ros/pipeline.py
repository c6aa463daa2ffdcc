"""The rLiVS pipeline assembled once: model, embedder, per-camera clip assembler and captioner,
and the question answerer over a store. The node, every CLI command and the evaluations build
it here from one :class:`PipelineConfig`; none of them wires the parts itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from rats_ros.errors import ConfigError
from rats_ros.models import load_backend
from rats_ros.models.base import BackendConfig
from rats_ros.recall.embedders import ModelEmbedder, make_embedder
from rats_ros.recall.qa import QAConfig, QuestionAnswerer
from rats_ros.stream.captioner import CaptionerConfig, RecurrentCaptioner
from rats_ros.stream.clips import ClipAssembler

EMBEDDERS = ("sentence", "model", "none")


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a pipeline is built from; each part validates its own fields.

    :param backend: the model and how it runs.
    :param captioner: the rLiVS loop's parameters.
    :param qa: question answering's parameters.
    :param embedder: caption embedder: ``sentence`` (bundled MiniLM), ``model`` (the LLM's
        token embeddings, the paper's) or ``none`` (captions embedded at the first question).
    :param fps: frames sampled per second of stream time.
    :param clip_frames: sampled frames per clip.
    :raises ConfigError: an unknown embedder, or a sampling the assembler refuses.
    """

    backend: BackendConfig
    captioner: CaptionerConfig = field(default_factory=CaptionerConfig)
    qa: QAConfig = field(default_factory=QAConfig)
    embedder: str = "sentence"
    fps: float = 0.5
    clip_frames: int = 16

    def __post_init__(self):
        if self.embedder not in EMBEDDERS:
            raise ConfigError(f"embedder must be one of {list(EMBEDDERS)}, got "
                              f"{self.embedder!r}")
        self.assembler()  # refuses a bad fps or clip_frames before the model loads

    def assembler(self) -> ClipAssembler:
        """A new clip assembler (one per camera: it holds that camera's partial clip)."""
        return ClipAssembler(self.fps, self.clip_frames)


class Pipeline:
    """The loaded model and embedder, and the per-camera parts made from them.

    :param config: what to build.
    :raises ModelError: the model cannot be loaded or its engine cannot take these clips.
    """

    def __init__(self, config: PipelineConfig):
        self.config = config
        b = config.backend
        self.backend = load_backend(**{f.name: getattr(b, f.name) for f in fields(b)})
        if self.backend.engine is not None:
            self.backend.engine.check_clip_frames(config.clip_frames)
        self.embedder = (None if config.embedder == "none"
                         else make_embedder(config.embedder, backend=self.backend))

    def assembler(self) -> ClipAssembler:
        """A camera's clip assembler."""
        return self.config.assembler()

    def captioner(self, start_index: int = 0,
                  config: CaptionerConfig | None = None) -> RecurrentCaptioner:
        """A camera's captioner: its own memory, clip indices from ``start_index``; ``config``
        replaces the pipeline's loop parameters (evaluations compare several)."""
        return RecurrentCaptioner(self.backend, config or self.config.captioner, start_index)

    def prepare(self, cameras: int) -> float:
        """Build the decoders the first clips and question use (``VideoBackend.prepare``).
        :returns: seconds spent."""
        return self.backend.prepare(cameras)

    def answerer(self, store) -> QuestionAnswerer:
        """A question answerer over ``store`` (captions embedded lazily with the pipeline's
        embedder; the model's own when the pipeline embeds none)."""
        embedder = self.embedder if self.embedder is not None else ModelEmbedder(self.backend)
        return QuestionAnswerer(store, embedder, self.backend, self.config.qa)

    def embed(self, text: str):
        """``text``'s embedding and the embedder's name, or ``(None, "")`` without one."""
        if self.embedder is None:
            return None, ""
        return self.embedder.embed([text])[0], self.embedder.name
