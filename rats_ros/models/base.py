"""The model-family-independent backend contract: what the captioner and QA need from a model."""
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from rats_ros.errors import AnswerCancelled, ConfigError


def clock(device) -> float:
    """``time.perf_counter()`` once the calling thread's work on ``device`` is done.

    Waits for this thread's current CUDA stream only, never the whole device: while another
    thread captures a CUDA graph (the answer and caption decoders run in parallel), a
    device-wide synchronize is refused ("operation not permitted when stream is capturing",
    seen on the H200 in bench_busy_ask).
    """
    if torch.device(device).type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    return time.perf_counter()

@dataclass(frozen=True)
class FastConfig:
    """Which parts of the CUDA fast path run. Every part is on by default where it applies;
    benchmarks and tests turn one off to measure or check what it buys.

    :param decode: the static-KV-cache / CUDA-graph decoders (:mod:`rats_ros.models.fast`):
        ``None`` = on CUDA for the language models they serve, off on the CPU.
    :param fused_batch: several cameras' decode step as the fused Triton step (else torch's).
    :param encode_together: clips of one shape through the vision tower in one forward.
    :param varlen_vision: Qwen towers' segment attention as varlen flash on CUDA.
    :param vision_rope: Qwen towers' RoPE as one Triton kernel on CUDA.
    :param siglip: LLaVA-OV's tower with the fused fc1 + GELU and cuDNN attention on CUDA.
    :raises ConfigError: for a value that is not a bool (``decode``: or None).
    """

    decode: bool | None = None
    fused_batch: bool = True
    encode_together: bool = True
    varlen_vision: bool = True
    vision_rope: bool = True
    siglip: bool = True

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, bool) or (f.name == "decode" and value is None)):
                raise ConfigError(f"fast.{f.name} must be true or false, got {value!r}")


def stream_step(stream, decode: Callable[[list[int]], str]) -> Callable:
    """The per-step callable a decode loop calls as ``step(count, ids)`` before each decode
    step of an answer that streams (``count`` tokens so far; ``ids()`` gives them, read only
    when text is wanted): the text so far goes to ``stream.on_text``, then the cancel is polled.

    :param stream: any object with ``on_text`` (``(str) -> None`` or None) and
        ``cancelled`` (``() -> bool``), e.g. :class:`rats_ros.recall.qa.AskProgress`.
    :raises AnswerCancelled: (from the step) once ``stream.cancelled()`` is true.
    """
    def step(count: int, ids: Callable[[], list[int]]) -> None:
        if stream.on_text is not None:
            stream.on_text(decode(ids()))
        if stream.cancelled():
            raise AnswerCancelled(f"the question was cancelled after {count} answer tokens")
    return step


@dataclass(frozen=True, eq=False)
class ClipTokens:
    """One clip as the language model sees it (what :meth:`VideoBackend.encode_clip` gives).

    :param tokens: ``(N, D)`` visual tokens in LLM embedding space, temporal/raster order.
    :param deepstack: ``(K, N, D)`` features the LLM adds after its first K layers (Qwen3-VL's
        DeepStack), or None.
    """

    tokens: torch.Tensor
    deepstack: torch.Tensor | None = None

    @classmethod
    def of(cls, visual) -> "ClipTokens":
        """``visual`` as is, or a bare ``(N, D)`` tensor as a clip without DeepStack."""
        return visual if isinstance(visual, ClipTokens) else cls(visual)

    @property
    def count(self) -> int:
        """N, the clip's visual tokens."""
        return int(self.tokens.shape[0])


@dataclass(frozen=True, eq=False)
class PrefillInputs:
    """What one prefill needs: the prompt's embeddings, where the clip's keys are (the
    read-out's span) and the clip's DeepStack features at their positions.

    :param embeds: ``(1, L, D)`` prompt embeddings.
    :param key_start: key position of the clip's first visual token (0 for text-only prompts).
    :param num_keys: the clip's visual tokens N (0 for text-only prompts).
    :param deepstack: ``(K, N, D)`` DeepStack features of those N positions, or None.
    """

    embeds: torch.Tensor
    key_start: int = 0
    num_keys: int = 0
    deepstack: torch.Tensor | None = None

    @property
    def span(self) -> tuple[int, int]:
        """``(start, end)`` key positions of the clip's tokens."""
        return self.key_start, self.key_start + self.num_keys

    def positions(self) -> torch.Tensor:
        """``(N,)`` the clip's positions in the prompt."""
        return torch.arange(*self.span, device=self.embeds.device)


ENGINES = ("torch", "onnx")
WEIGHTS = ("native", "int8", "int4")  # rats_ros.models.fast.quant.matrix builds each
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class BackendConfig:
    """How to load and run a backend.

    :param model: local checkpoint directory, cached Hugging Face id, or a tiny-random name.
    :param device: ``cpu``, ``cuda`` or ``cuda:N``.
    :param dtype: ``float32``, ``bfloat16`` or ``float16``.
    :param readout_layers: how many LLM layers to read attention from (spread over depth as in
        the paper), or an explicit tuple of 0-indexed layers.
    :param engine: what runs the vision tower and the LLM: ``torch``, or ``onnx`` (ONNX Runtime
        over an export of this checkpoint, :mod:`rats_ros.models.onnx`).
    :param engine_dir: the export directory (``rats-ros export-onnx``) of engine ``onnx``.
    :param weights: the LLM's projection weights: ``native`` (``dtype``), or weight-only
        ``int8`` / ``int4`` on the fast decode path (:mod:`rats_ros.models.fast.quant`).
    :param fast: which parts of the CUDA fast path run (:class:`FastConfig`).
    :param cache_dir: where the fast path keeps its tile choices across restarts
        (:mod:`rats_ros.models.fast.tile_cache`); empty: in memory only.
    """

    model: str
    device: str = "cpu"
    dtype: str = "float32"
    readout_layers: int | tuple[int, ...] = 4
    engine: str = "torch"
    engine_dir: str = ""
    weights: str = "native"
    fast: FastConfig = field(default_factory=FastConfig)
    cache_dir: str = ""

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("model must be a checkpoint directory, a cached Hugging Face id or "
                              "'tiny-random' / 'tiny-random-qwen2_5_vl' / 'tiny-random-qwen3_vl'")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype {self.dtype!r} is not supported; use one of {sorted(DTYPES)}")
        if not isinstance(self.device, str) or not (
                self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device {self.device!r} is not supported; use 'cpu' or 'cuda[:N]'")
        if self.engine not in ENGINES:
            raise ConfigError(f"engine {self.engine!r} is not supported; use one of {ENGINES}")
        if self.engine == "onnx" and not str(self.engine_dir).strip():
            raise ConfigError("engine 'onnx' needs engine_dir: the directory `rats-ros "
                              "export-onnx MODEL DIR` wrote")
        if not isinstance(self.fast, FastConfig):
            raise ConfigError(f"fast must be a FastConfig, got {type(self.fast).__name__}")
        if self.weights not in WEIGHTS:
            raise ConfigError(f"weights {self.weights!r} is not supported; use one of {WEIGHTS}")
        if self.weights != "native" and self.engine != "torch":
            raise ConfigError(f"weights {self.weights!r} runs on the torch engine's fast path; "
                              "export the native weights for engine 'onnx'")
        if self.weights == "int4" and self.device.startswith("cuda") and \
                self.dtype != "bfloat16":
            raise ConfigError("weights 'int4' on CUDA needs dtype 'bfloat16' (its kernel's)")
        layers = self.readout_layers
        if isinstance(layers, list):
            layers = self.readout_layers = tuple(layers)
        if isinstance(layers, bool) or not (
                (isinstance(layers, int) and layers >= 1)
                or (isinstance(layers, tuple) and layers
                    and all(isinstance(i, int) and i >= 0 for i in layers))):
            raise ConfigError(f"readout_layers must be a count >= 1 or a non-empty tuple of "
                              f"0-indexed layers, got {self.readout_layers!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        """:returns: the torch dtype named by :attr:`dtype`."""
        return DTYPES[self.dtype]


@dataclass
class CaptionOutput:
    """One greedy caption and, when read out, the attention scores of the clip's tokens.

    :param text: decoded caption (special tokens removed).
    :param token_ids: generated ids (without the prompt; a final end-of-turn id included).
    :param scores: ``(N,)`` float32 on the model's device, mean attention of the last prompt
        position and every fed-back caption token to each visual token; None without read-out.
    :param timings: seconds per phase (``prefill``, ``decode``).
    """

    text: str
    token_ids: list[int]
    scores: torch.Tensor | None
    timings: dict = field(default_factory=dict)


class VideoBackend(ABC):
    """A Video-LLM as the rLiVS loop sees it. ``caption`` and ``generate`` may run concurrently
    from two threads; any per-call state (KV cache, read-out) lives in the call."""

    name: str
    #: visual tokens per frame (Qwen2.5-VL: half of a frame pair's tokens at the largest frame
    #: size its preprocessing allows; use :meth:`num_visual_tokens` for an exact count).
    tokens_per_frame: int
    hidden_size: int
    device: torch.device
    dtype: torch.dtype

    def clock(self) -> float:
        """``time.perf_counter()`` once the calling thread's work on the device is done (how
        the captioner times its phases)."""
        return time.perf_counter()

    @abstractmethod
    def encode_clip(self, pixels) -> ClipTokens:
        """Encode ``(T, H, W, 3)`` uint8 frames.

        :returns: the clip's :class:`ClipTokens` (``tokens``: ``(N, D)``).
        """

    def encode_clips(self, clips: list) -> list[ClipTokens]:
        """:meth:`encode_clip` of each clip (cameras captioned together); a family whose tower
        takes several clips in one forward overrides this, with the same results.

        :raises FrameError: when any clip's pixels are unusable (none is encoded then).
        """
        return [self.encode_clip(pixels) for pixels in clips]

    #: frames that share one grid of tokens (1; Qwen2.5-VL pairs frames: 2).
    frames_per_group: int = 1

    @abstractmethod
    def token_grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Layout of :meth:`encode_clip`'s tokens for ``num_frames`` frames of that size.

        :returns: ``(groups, rows, cols)``: token ``i`` covers frames
            ``g * frames_per_group ...`` with ``g = i // (rows * cols)``, grid cell
            ``divmod(i % (rows * cols), cols)``.
        """

    def num_visual_tokens(self, num_frames: int, height: int, width: int) -> int:
        """:returns: N that :meth:`encode_clip` gives for ``num_frames`` frames of that size."""
        groups, rows, cols = self.token_grid(num_frames, height, width)
        return groups * rows * cols

    @abstractmethod
    def caption(self, memory: torch.Tensor, visual: ClipTokens | torch.Tensor, prompt: str,
                max_new_tokens: int, readout: bool) -> CaptionOutput:
        """Greedy caption of ``[prefix][memory (M, D)][visual (N, D)][suffix]`` (a bare
        ``(N, D)`` tensor is a clip without DeepStack features)."""

    def caption_many(self, items: list[tuple[torch.Tensor, ClipTokens]], prompt: str,
                     max_new_tokens: int, readout: bool) -> list[CaptionOutput]:
        """:meth:`caption` of several ``(memory, visual)`` clips; a backend may batch them."""
        return [self.caption(m, v, prompt, max_new_tokens, readout) for m, v in items]

    def prepare(self, cameras: int) -> float:
        """Build now what the first clip or question would otherwise build (a backend with a
        fast path: its decoders, their tiles timed and kernels compiled), for ``cameras``
        cameras captioned together. :returns: seconds spent (0.0 when there is nothing to
        build)."""
        return 0.0

    @abstractmethod
    def generate(self, prompt: str, max_new_tokens: int, stream=None) -> str:
        """Greedy text-only answer to the user message ``prompt`` (chat template applied).

        :param stream: ``on_text`` gets the answer so far after each token and ``cancelled()``
            is polled before each decode step (:func:`stream_step`); None: neither.
        :raises AnswerCancelled: ``stream.cancelled()`` turned true; nothing more is generated.
        """

    @abstractmethod
    def embed_text(self, texts: list[str]) -> np.ndarray:
        """:returns: ``(n, D)`` float32 mean-pooled input token embeddings (zeros for '')."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """:returns: number of tokens of ``text`` (no special tokens added)."""
