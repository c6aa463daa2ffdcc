"""The fast path's tile choices on disk (tile_cache.TileCache) and the choice that uses them
(tiles.choose): a restart reuses a choice, a corrupt, foreign or stale file is rebuilt, a tile
that is no longer a candidate is timed again. On the CPU: the timing function here is a plain
function of the tile (on a GPU, tiles.tuned_tiles passes a CUDA-graph replay)."""
import json
import logging

import pytest

from rats_ros.errors import ModelError
from rats_ros.models.fast import fused, tiles
from rats_ros.models.fast.tile_cache import TileCache, software_stamp
from rats_ros.ros import params as node_params

OPTIONS = [(1, 512, 8), (4, 1024, 4), (8, 2048, 4)]
KEY_PARTS = ("NVIDIA H200", "down", (896, 4864), 24, False, False)


class Timer:
    """Milliseconds per tile (the middle one fastest), counting calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, tile):
        self.calls.append(tile)
        return {(1, 512, 8): 3.0, (4, 1024, 4): 1.0, (8, 2048, 4): 2.0}[tile]


def test_a_restart_reuses_the_choice_without_timing(tmp_path):
    cache = TileCache(tmp_path)
    timer = Timer()
    key = cache.key(*KEY_PARTS)
    assert tiles.choose(OPTIONS, timer, cache, key) == (4, 1024, 4) and len(timer.calls) == 3
    restarted, again = TileCache(tmp_path), Timer()
    assert len(restarted) == 1
    assert tiles.choose(OPTIONS, again, restarted, key) == (4, 1024, 4) and again.calls == []
    body = json.loads((tmp_path / "tiles.json").read_text())
    assert body["format"] == 1 and body["entries"] == {key: [4, 1024, 4]}
    assert software_stamp() in key and "896x4864" in key


def test_a_corrupt_file_is_rebuilt_and_logged(tmp_path, caplog):
    (tmp_path / "tiles.json").write_text('{"format": 1, "entries": {"k": [1, 2')  # cut off
    with caplog.at_level(logging.WARNING):
        cache = TileCache(tmp_path)
    assert len(cache) == 0 and "unreadable" in caplog.text
    timer = Timer()
    tiles.choose(OPTIONS, timer, cache, cache.key(*KEY_PARTS))
    assert len(timer.calls) == 3 and json.loads((tmp_path / "tiles.json").read_text())
    for junk in ('[1, 2, 3]', '{"format": 99, "entries": {}}', '{"entries": "x"}'):
        (tmp_path / "tiles.json").write_text(junk)
        assert len(TileCache(tmp_path)) == 0  # not this format: rebuilt


def test_another_software_version_or_a_malformed_entry_is_not_used(tmp_path):
    old = TileCache(tmp_path, stamp="cuda12|torch2.0|tritonX|rats_ros0.0.1")
    tiles.choose(OPTIONS, Timer(), old, old.key(*KEY_PARTS))
    body = json.loads((tmp_path / "tiles.json").read_text())
    body["entries"]["bad"] = [0, -1, 4]
    (tmp_path / "tiles.json").write_text(json.dumps(body))
    current, timer = TileCache(tmp_path), Timer()
    assert len(current) == 0  # the other version's entry and the malformed one dropped
    tiles.choose(OPTIONS, timer, current, current.key(*KEY_PARTS))
    assert len(timer.calls) == 3


def test_a_stored_tile_that_is_no_longer_a_candidate_is_timed_again(tmp_path):
    cache = TileCache(tmp_path)
    key = cache.key(*KEY_PARTS)
    cache.put(key, (2, 256, 4))  # a candidate of an older release
    timer = Timer()
    assert tiles.choose(OPTIONS, timer, cache, key) == (4, 1024, 4) and len(timer.calls) == 3
    assert TileCache(tmp_path).get(key) == (4, 1024, 4)


@pytest.mark.skipif(not fused.KERNEL_ERRORS, reason="Triton is not installed")
def test_tiles_that_do_not_compile_are_skipped_and_none_is_a_model_error(tmp_path):
    def some_fail(tile):
        if tile != (8, 2048, 4):
            raise fused.KERNEL_ERRORS[-1]("out of registers", 0, "shared")
        return 1.0

    assert tiles.choose(OPTIONS, some_fail, None) == (8, 2048, 4)
    with pytest.raises(ModelError, match="no tile of the fused down on H200 product compiles"):
        tiles.choose(OPTIONS[:2], some_fail, None, what="down on H200")


def test_an_unwritable_cache_costs_a_warning_not_the_choice(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = TileCache(blocker / "cache")
    with caplog.at_level(logging.WARNING):
        assert tiles.choose(OPTIONS, Timer(), cache, cache.key(*KEY_PARTS)) == (4, 1024, 4)
    assert "not saved" in caplog.text


def test_the_nodes_cache_dir_defaults_under_ros_home_and_none_keeps_nothing(monkeypatch,
                                                                          tmp_path):
    monkeypatch.setenv("ROS_HOME", str(tmp_path))
    defaults = {s.name: s.default for s in node_params.SPECS}
    assert node_params.NodeParams(**defaults).resolved_cache_dir() == \
        str(tmp_path / "rats_ros" / "cache")
    assert node_params.NodeParams(**{**defaults, "cache_dir": "none"}).resolved_cache_dir() == ""
