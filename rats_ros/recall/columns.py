"""The retrieval index's per-caption columns: growable arrays whose snapshots stay valid."""
import numpy as np


class Columns:
    """Growable column arrays (amortised doubling); slices handed out stay valid."""

    NAMES = ("ids", "start", "end", "tokens", "emb", "camera", "pose")

    def __init__(self, dim: int):
        self.n = 0
        self.ids = np.empty(0, np.int64)
        self.start = np.empty(0, np.int64)
        self.end = np.empty(0, np.int64)
        self.tokens = np.empty(0, np.int64)
        self.emb = np.empty((0, dim), np.float32)
        self.camera = np.empty(0, object)  # camera names
        self.pose = np.empty((0, 3), np.float64)  # (x, y, z); NaN: no pose

    def append(self, **columns):
        need = self.n + len(columns["ids"])
        if need > len(self.ids):
            cap = max(need, 2 * len(self.ids), 1024)
            for name in self.NAMES:
                old = getattr(self, name)
                new = np.empty((cap,) + old.shape[1:], old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        for name in self.NAMES:
            getattr(self, name)[self.n:need] = columns[name]
        self.n = need

    def keep(self, mask):
        """Drop rows where ``mask`` is False (into fresh arrays: old snapshots stay intact)."""
        for name in self.NAMES:
            setattr(self, name, getattr(self, name)[: self.n][mask].copy())
        self.n = int(mask.sum())

    def snapshot(self) -> dict:
        return {name: getattr(self, name)[: self.n] for name in self.NAMES}
