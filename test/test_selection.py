"""Token selection rules: top-k by attention, uniform, seeded random, all; order and errors."""
import pytest
import torch

from rats_ros.errors import ConfigError
from rats_ros.stream.selection import METHODS, keep_count, select


def test_attention_keeps_top_k_in_temporal_order():
    scores = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.05, 0.7])
    kept = select(scores, 3, "attention")
    assert kept.tolist() == [1, 3, 5] and kept.dtype == torch.int64


def test_attention_ties_go_to_earlier_tokens():
    scores = torch.tensor([0.5, 0.2, 0.5, 0.5, 0.1])
    assert select(scores, 2, "attention").tolist() == [0, 2]


def test_attention_needs_scores():
    with pytest.raises(ConfigError, match="readout=True"):
        select(10, 2, "attention")


def test_uniform_is_evenly_spaced_and_distinct():
    assert select(16, 4, "uniform").tolist() == [2, 6, 10, 14]
    assert select(3136, 196, "uniform").tolist() == list(range(8, 3136, 16))
    for n, k in [(7, 7), (10, 3), (5, 1), (257, 16)]:
        kept = select(n, k, "uniform")
        assert len(set(kept.tolist())) == k and kept.min() >= 0 and kept.max() < n
        assert torch.equal(kept, kept.sort().values)


def test_random_is_seeded_sorted_and_distinct():
    a = select(100, 10, "random", torch.Generator().manual_seed(7))
    b = select(100, 10, "random", torch.Generator().manual_seed(7))
    c = select(100, 10, "random", torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, a.sort().values) and len(set(a.tolist())) == 10


def test_all_keeps_every_token():
    assert select(torch.rand(5), 1, "all").tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("method", METHODS[:3])
def test_bad_k_raises(method):
    for k in (0, 11, 2.5, True):
        with pytest.raises(ConfigError, match="k must be"):
            select(torch.rand(10), k, method)


def test_bad_method_and_shape_raise():
    with pytest.raises(ConfigError, match="unknown"):
        select(torch.rand(4), 2, "kmeans")
    with pytest.raises(ConfigError, match="1-D"):
        select(torch.rand(2, 4), 2, "attention")


def test_keep_count():
    assert keep_count(3136, 1 / 16) == 196
    assert keep_count(256, 1 / 16) == 16
    assert keep_count(5, 1 / 16) == 1
    assert keep_count(10, 1.0) == 10
