"""RecurrentCaptioner: the rLiVS streaming loop, one call per clip.

encode the clip -> caption ``[prompt][memory][clip][prompt]`` with the attention read-out ->
keep the top-k clip tokens (temporal order restored) -> push them into the FIFO memory.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from rats_ros.errors import ConfigError
from rats_ros.records import CaptionRecord
from rats_ros.stream.memory import TokenMemory
from rats_ros.stream.selection import METHODS, keep_count, select

DEFAULT_PROMPT = "Describe what's happening in this video."


@dataclass
class CaptionerConfig:
    """Parameters of the loop (defaults: the paper's).

    :param keep_ratio: fraction of a clip's N tokens kept, ``k = max(1, round(N * keep_ratio))``.
    :param memory_clips: clips in the FIFO memory.
    :param selection: ``attention`` (rLiVS), ``uniform``, ``random`` or ``all``.
    :param recurrence: feed the memory back into the next clip's prompt.
    :param prompt: the captioning instruction.
    :param max_new_tokens: caption length limit.
    :param seed: seed of the ``random`` selection.
    :raises ConfigError: for values out of range.
    """

    keep_ratio: float = 1 / 16
    memory_clips: int = 16
    selection: str = "attention"
    recurrence: bool = True
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = 64
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.keep_ratio, bool) or not isinstance(self.keep_ratio, (int, float)) \
                or not 0 < self.keep_ratio <= 1:
            raise ConfigError(
                f"keep_ratio must be in (0, 1] (paper: 1/16), got {self.keep_ratio!r}")
        for name in ("memory_clips", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        if self.selection not in METHODS:
            raise ConfigError(
                f"selection {self.selection!r} is unknown; use one of {list(METHODS)}")
        if not isinstance(self.recurrence, bool):
            raise ConfigError(f"recurrence must be true or false, got {self.recurrence!r}")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ConfigError("prompt must be a non-empty string")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an int >= 0, got {self.seed!r}")


@dataclass
class ClipCaption(CaptionRecord):
    """One clip's caption (the record) and what the loop did for it.

    :param token_ids: the caption's token ids.
    :param kept_indices: indices of the clip's visual tokens kept in memory, ascending.
    :param token_grid: ``(groups, rows, cols)`` layout of the clip's visual tokens, with
        ``frames_per_group`` frames per group (see ``VideoBackend.token_grid``).
    :param timings: seconds per phase: ``encode``, ``prefill``, ``decode``, ``select``.
    """

    token_ids: list[int] = field(default_factory=list)
    kept_indices: list[int] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    token_grid: tuple[int, int, int] = (0, 0, 0)
    frames_per_group: int = 1


class RecurrentCaptioner:
    """Captions a stream clip by clip with recurrent attention-based token selection.

    Not thread-safe itself (one captioning worker); the backend may answer questions from
    another thread meanwhile.

    :param backend: a loaded ``VideoBackend``.
    :param config: loop parameters.
    :param start_index: clip index of the first clip (e.g. ``store.next_clip_index()``).
    """

    def __init__(self, backend, config: CaptionerConfig | None = None, start_index: int = 0):
        self.backend = backend
        self.config = config or CaptionerConfig()
        self.start_index = start_index
        self.memory = TokenMemory(self.config.memory_clips, dim=backend.hidden_size)
        self.reset()

    def reset(self) -> None:
        """Empty the memory and restart clip numbering and the random selection's seed."""
        self.memory.clear()
        self.next_index = self.start_index
        self.generator = torch.Generator().manual_seed(self.config.seed)

    def step(self, clip) -> ClipCaption:
        """Caption one clip and update the memory.

        :param clip: a ``clips.Clip`` (``pixels()``, ``start_ns``, ``end_ns``, ``frames``).
        :returns: the clip's :class:`ClipCaption`.
        :raises FrameError: for unusable pixels; :raises ModelError: when the model fails.
        """
        return step_many([self], [clip])[0]

    def _prepare(self, clip, pixels, visual, started: float, encoded: float) -> _Pending:
        """``clip`` encoded (``visual``: the backend's ``ClipTokens`` of its ``pixels``) with
        this camera's memory in front: the first half of :meth:`step`."""
        tokens = visual.tokens  # (N, D)
        memory = (self.memory.tokens() if self.config.recurrence
                  else tokens.new_empty(0, tokens.shape[1]))
        return _Pending(clip, pixels, visual, memory, started, encoded)

    def _finish(self, pending: _Pending, out) -> ClipCaption:
        """Select the kept tokens from ``out`` (a ``CaptionOutput``), update the memory and
        number the clip: the second half of :meth:`step`."""
        cfg, captioned = self.config, time.perf_counter()
        visual = pending.visual.tokens  # (N, D)
        n = visual.shape[0]
        kept = select(out.scores if cfg.selection == "attention" else n,
                      keep_count(n, cfg.keep_ratio), cfg.selection, self.generator)
        if cfg.recurrence:
            self.memory.append(visual.index_select(0, kept.to(visual.device)))  # (k, D)
        kept_indices = kept.tolist()
        done = self.backend.clock()
        timings = {"encode": pending.encoded - pending.started, **out.timings,
                   "select": done - captioned}
        index, self.next_index = self.next_index, self.next_index + 1
        clip, pixels = pending.clip, pending.pixels
        return ClipCaption(
            clip_index=index, start_ns=int(clip.start_ns), end_ns=int(clip.end_ns), text=out.text,
            token_ids=list(out.token_ids), frames=len(clip.frames), visual_tokens=n,
            kept_tokens=len(kept_indices), memory_tokens=pending.memory.shape[0],
            processing_time=done - pending.started, kept_indices=kept_indices, timings=timings,
            model=self.backend.name, token_grid=tuple(self.backend.token_grid(*pixels.shape[:3])),
            frames_per_group=self.backend.frames_per_group)


@dataclass
class _Pending:
    """A clip encoded and waiting for its caption (between ``_prepare`` and ``_finish``)."""

    clip: object
    pixels: object
    visual: object  # the backend's ClipTokens: .tokens (N, D)
    memory: torch.Tensor  # (M, D)
    started: float
    encoded: float


def step_many(captioners: list[RecurrentCaptioner], clips: list) -> list[ClipCaption]:
    """One clip per captioner (one camera each) over their shared backend, decoded together
    where the backend batches (``caption_many``); each result equals that captioner's own
    ``step`` of its clip.

    :raises FrameError: for unusable pixels (no captioner's state has changed then);
    :raises ModelError: when the model fails.
    """
    if len(captioners) != len(clips) or not captioners:
        raise ConfigError("step_many needs one clip per captioner")
    backend, cfg = captioners[0].backend, captioners[0].config
    if any(c.backend is not backend or c.config.prompt != cfg.prompt
           or c.config.max_new_tokens != cfg.max_new_tokens
           or c.config.selection != cfg.selection for c in captioners):
        raise ConfigError("captioners batched together must share the backend, the prompt, "
                          "max_new_tokens and the selection method")
    started = time.perf_counter()
    pixels = [clip.pixels() for clip in clips]  # each (T, H, W, 3)
    visuals = backend.encode_clips(pixels)  # ClipTokens each; one forward where it can
    encoded = backend.clock()
    pending = [c._prepare(clip, p, v, started, encoded)
               for c, clip, p, v in zip(captioners, clips, pixels, visuals, strict=True)]
    outputs = backend.caption_many([(p.memory, p.visual) for p in pending], cfg.prompt,
                                   cfg.max_new_tokens, readout=cfg.selection == "attention")
    return [c._finish(p, out) for c, p, out in zip(captioners, pending, outputs, strict=True)]
