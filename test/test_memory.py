"""TokenMemory: bounded FIFO of kept tokens, oldest first."""
import pytest
import torch

from rats_ros.errors import ConfigError
from rats_ros.stream.memory import TokenMemory


def clip_tokens(value, k=3, d=4):
    return torch.full((k, d), float(value))


def test_empty_memory_has_width():
    memory = TokenMemory(3, dim=4)
    assert memory.tokens().shape == (0, 4) and len(memory) == 0 and memory.num_tokens == 0


def test_fifo_order_and_eviction():
    memory = TokenMemory(2, dim=4)
    memory.append(clip_tokens(1))
    memory.append(clip_tokens(2, k=2))
    assert memory.tokens()[:, 0].tolist() == [1, 1, 1, 2, 2]
    memory.append(clip_tokens(3))
    assert len(memory) == 2 and memory.num_tokens == 5
    assert memory.tokens()[:, 0].tolist() == [2, 2, 3, 3, 3]  # clip 1 fell out


def test_never_exceeds_max_clips_over_a_long_stream():
    memory = TokenMemory(16, dim=4)
    for i in range(200):
        memory.append(clip_tokens(i, k=2))
        assert len(memory) == min(i + 1, 16)
    assert memory.tokens().shape == (32, 4)
    assert memory.tokens()[::2, 0].tolist() == list(range(184, 200))


def test_clear_keeps_width():
    memory = TokenMemory(2)
    memory.append(clip_tokens(1, d=6))
    memory.clear()
    assert memory.tokens().shape == (0, 6) and len(memory) == 0


def test_appended_tensor_is_not_aliased_by_later_appends():
    memory = TokenMemory(2, dim=4)
    memory.append(clip_tokens(1))
    first = memory.tokens().clone()
    memory.append(clip_tokens(2))
    assert torch.equal(memory.tokens()[:3], first)


def test_bad_inputs_raise_config_error():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="max_clips"):
            TokenMemory(bad)
    memory = TokenMemory(2, dim=4)
    memory.append(clip_tokens(1))
    with pytest.raises(ConfigError, match="memory tokens"):
        memory.append(torch.zeros(3, 5))
    with pytest.raises(ConfigError, match="memory tokens"):
        memory.append(torch.zeros(3))
