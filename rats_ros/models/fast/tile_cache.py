"""The fused products' tile choices on disk, so a restarted node does not time them again.

Timing every candidate tile of every product takes seconds per decoder on a cold start
(:mod:`rats_ros.models.fast.tiles`); the choice depends only on the GPU, its driver, the
product's shape and the software that compiles the kernels. ``tiles.json`` in the cache
directory maps that key to the chosen tile. A file that does not parse or is not this format
is ignored (logged) and overwritten by the next choice; malformed entries and entries of another
driver, torch, Triton or package version are dropped when the file is read; a tile that is no
longer a candidate is timed again. Writes go to a temporary file renamed over the old one: a
crash never leaves half a file. Triton keeps the compiled kernels in its own on-disk cache.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)
FORMAT = 1


def software_stamp() -> str:
    """What a tile choice is only valid for besides the GPU and shape: driver (CUDA runtime
    on CPU builds), torch, Triton and this package's versions."""
    import torch

    import rats_ros

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return (f"{_driver()}|cuda{torch.version.cuda}|torch{torch.__version__}|"
            f"triton{triton_version}|rats_ros{rats_ros.__version__}")


def _driver() -> str:
    """The NVIDIA driver's version line (Linux), or "" where there is none to read."""
    try:
        line = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        return ""
    return " ".join(line.split()[-6:]).replace("|", "/")


class TileCache:
    """Tile choices kept in ``directory/tiles.json`` (module docstring).

    :param directory: the cache directory (created when first written).
    :param stamp: the software stamp entries must carry (default :func:`software_stamp`).
    """

    def __init__(self, directory: str | os.PathLike, stamp: str | None = None):
        self.path = Path(directory) / "tiles.json"
        self.stamp = stamp if stamp is not None else software_stamp()
        self._lock = threading.Lock()
        self._entries = self._load()

    def get(self, key: str) -> tuple[int, ...] | None:
        """The stored tile of ``key`` (:meth:`key`), or None."""
        with self._lock:
            tile = self._entries.get(key)
        return tuple(tile) if tile is not None else None

    def put(self, key: str, tile: tuple[int, ...]) -> None:
        """Store ``tile`` for ``key`` and write the file (a failed write is logged: the choice
        is timed again on the next start, nothing else is lost)."""
        with self._lock:
            self._entries[key] = [int(v) for v in tile]
            body = {"format": FORMAT, "entries": dict(sorted(self._entries.items()))}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=".tiles.",
                                             delete=False) as tmp:
                json.dump(body, tmp, indent=1)
            os.replace(tmp.name, self.path)
        except OSError as err:
            log.warning("tile choices not saved to %s (%s); they are timed again next start",
                        self.path, err)

    def key(self, gpu: str, product: str, shape, layers: int, bias: bool, batched: bool) -> str:
        """The key of one product's choice on ``gpu`` with this software."""
        rows = "batched" if batched else "one-row"
        return (f"{gpu}|{self.stamp}|{product}|{'x'.join(str(int(s)) for s in shape)}|"
                f"{layers}|{'bias' if bias else 'nobias'}|{rows}")

    def __len__(self) -> int:
        return len(self._entries)

    def _load(self) -> dict:
        """The file's entries of this software stamp; {} for a missing, corrupt or foreign
        file (logged, and rebuilt by the next :meth:`put`)."""
        try:
            body = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            log.warning("tile cache %s unreadable (%s): rebuilt", self.path, err)
            return {}
        entries = body.get("entries") if isinstance(body, dict) else None
        if not isinstance(entries, dict) or body.get("format") != FORMAT:
            log.warning("tile cache %s is not format %d: rebuilt", self.path, FORMAT)
            return {}
        good = {k: v for k, v in entries.items() if isinstance(k, str) and _is_tile(v)}
        current = {k: v for k, v in good.items() if f"|{self.stamp}|" in k}
        if len(current) < len(entries):
            log.info("tile cache %s: %d entries of other software or malformed, dropped",
                     self.path, len(entries) - len(current))
        return current


def _is_tile(value) -> bool:
    return (isinstance(value, list) and len(value) in (3, 4)
            and all(isinstance(v, int) and v > 0 for v in value))
