"""Which of a clip's visual tokens go into the memory: model-agnostic selection rules.

Every rule returns indices sorted ascending, so kept tokens keep their temporal/raster order.
"""
import torch

from rats_ros.errors import ConfigError

METHODS = ("attention", "uniform", "random", "all")


def select(scores: torch.Tensor | int, k: int, method: str = "attention",
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick ``k`` of a clip's ``N`` visual tokens.

    - ``attention``: the ``k`` highest scores (ties go to the earlier token);
    - ``uniform``: evenly spaced, the centre of each of ``k`` equal bins;
    - ``random``: ``k`` distinct tokens drawn with ``generator`` (seed it for repeatability);
    - ``all``: every token (``k`` is ignored).

    :param scores: ``(N,)`` attention scores, or just ``N`` for the methods that need no scores.
    :param k: number of tokens to keep, ``1 <= k <= N``.
    :returns: ``(k,)`` int64 indices on the scores' device (CPU for an int), sorted ascending.
    :raises ConfigError: for an unknown method, a bad ``k``, or ``attention`` without scores.
    """
    if method not in METHODS:
        raise ConfigError(f"selection method {method!r} is unknown; use one of {list(METHODS)}")
    if isinstance(scores, torch.Tensor):
        if scores.ndim != 1:
            raise ConfigError(f"scores must be 1-D (N,), got shape {tuple(scores.shape)}")
        n, device = scores.shape[0], scores.device
    elif method == "attention":
        raise ConfigError("attention selection needs the (N,) read-out scores; caption with "
                          "readout=True")
    else:
        n, device = int(scores), torch.device("cpu")
    if method == "all":
        return torch.arange(n, device=device)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ConfigError(f"k must be an int in 1..{n} (the clip's token count), got {k!r}")
    if method == "attention":
        order = torch.sort(scores, descending=True, stable=True).indices  # ties: earlier first
        return order[:k].sort().values
    if method == "uniform":
        # centre of bin i of k equal bins over n tokens; distinct because n / k >= 1
        return ((2 * torch.arange(k, device=device) + 1) * n) // (2 * k)
    return torch.randperm(n, generator=generator)[:k].sort().values.to(device)


def keep_count(num_tokens: int, keep_ratio: float) -> int:
    """:returns: ``max(1, round(num_tokens * keep_ratio))``, at most ``num_tokens``."""
    return min(num_tokens, max(1, round(num_tokens * keep_ratio)))
