"""TokenMemory: the FIFO of the kept visual tokens of the last ``max_clips`` clips."""
from collections import deque

import torch

from rats_ros.errors import ConfigError


class TokenMemory:
    """Kept tokens of past clips, oldest first; the oldest clip falls out when full.

    Its size is bounded by construction (``max_clips`` entries), so a long stream keeps memory
    flat. Memory tokens are only ever read back as LLM input, never re-selected.

    :param max_clips: clips kept, >= 1.
    :param dim: token width D, used for the empty ``(0, D)`` result before the first append.
    :raises ConfigError: when ``max_clips`` < 1.
    """

    def __init__(self, max_clips: int, dim: int = 0):
        if isinstance(max_clips, bool) or not isinstance(max_clips, int) or max_clips < 1:
            raise ConfigError(f"max_clips must be an int >= 1 (paper: 16), got {max_clips!r}")
        self.max_clips = max_clips
        self.dim = dim
        self._clips: deque[torch.Tensor] = deque(maxlen=max_clips)
        self._cached: torch.Tensor | None = None  # concatenation, rebuilt after a change

    def append(self, tokens: torch.Tensor) -> None:
        """Add one clip's kept tokens ``(k, D)``; evicts the oldest clip when full.

        :raises ConfigError: when ``tokens`` is not 2-D or its width differs from earlier clips.
        """
        if tokens.ndim != 2 or (self._clips and tokens.shape[1] != self._clips[0].shape[1]):
            raise ConfigError(f"memory tokens must be (k, {self.dim or 'D'}), got "
                              f"{tuple(tokens.shape)}")
        self.dim = tokens.shape[1]
        self._clips.append(tokens.detach())
        self._cached = None

    def tokens(self) -> torch.Tensor:
        """:returns: ``(M, D)`` all kept tokens, oldest clip first (``(0, D)`` when empty)."""
        if not self._clips:
            return torch.empty(0, self.dim)
        if self._cached is None:
            self._cached = torch.cat(list(self._clips))
        return self._cached

    @property
    def num_tokens(self) -> int:
        """M, the number of tokens held."""
        return sum(c.shape[0] for c in self._clips)

    def __len__(self) -> int:
        return len(self._clips)

    def clear(self) -> None:
        """Forget every clip (the width D is kept)."""
        self._clips.clear()
        self._cached = None
