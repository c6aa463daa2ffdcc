"""Causal caption retrieval: a time window, then the paper's budget rule with MMR.

A question sees only captions of clips that started at or after ``since`` and ended at or before
``until``. If all of them fit the context budget they are all used, in time order. Otherwise they
are ranked by Maximal Marginal Relevance,
``score = lambda * cos(q, c) - (1 - lambda) * max cos(c, chosen)``, taken in that order until the
next one no longer fits the budget (or ``max_captions`` is reached), and put back in time order.

:class:`RetrievalIndex` keeps the embeddings, token counts and stamps of every stored caption in
memory, refreshed incrementally from the store (new row ids only; a deletion counter in the
store tells it when retention removed rows), so a question costs no full read of the store:
a window mask, the MMR picks (:func:`rats_ros.recall.mmr.mmr_picks`, exact, blocked) and reading the
chosen rows.
"""
import logging
import threading
from dataclasses import dataclass

import numpy as np

from rats_ros.errors import QuestionError, StoreError
from rats_ros.recall.mmr import mmr_picks, select_under_budget
from rats_ros.recall.store import StoredCaption

# mmr_picks and select_under_budget live in rats_ros.recall.mmr; importers use them from here too.
__all__ = ["Place", "RetrievalIndex", "Selection", "check_window", "format_caption", "mmr_picks",
           "select_under_budget"]
_LOG = logging.getLogger(__name__)


def format_caption(caption, origin_ns: int) -> str:
    """One caption as it appears in the QA prompt: ``[12.0s-44.0s] text`` (seconds from the
    stream's first caption, so the numbers stay short and stable under retention), with
    ``camera front`` and ``at (x, y, z) m`` in the brackets when the caption has them, so "where"
    questions can be answered with coordinates."""
    start, end = (caption.start_ns - origin_ns) / 1e9, (caption.end_ns - origin_ns) / 1e9
    tags = [f"{start:.1f}s-{end:.1f}s"]
    if getattr(caption, "robot", ""):
        tags.append(f"robot {caption.robot}")
    if caption.camera:
        tags.append(f"camera {caption.camera}")
    if caption.has_pose:
        tags.append(f"at ({caption.pose_x:.1f}, {caption.pose_y:.1f}, {caption.pose_z:.1f}) m"
                    + (f" in {caption.pose_frame}" if caption.pose_frame else ""))
    return f"[{', '.join(tags)}] {caption.text}"


@dataclass(frozen=True)
class Place:
    """A spatial filter: captions whose pose lies within ``radius`` metres of ``(x, y, z)``.

    :raises QuestionError: a coordinate or radius that is not finite, or a radius <= 0.
    """

    x: float
    y: float
    z: float
    radius: float

    def __post_init__(self):
        values = (self.x, self.y, self.z, self.radius)
        if not all(np.isfinite(values)) or self.radius <= 0:
            raise QuestionError(f"position ({self.x}, {self.y}, {self.z}) with radius "
                                f"{self.radius}: give finite coordinates in metres and a radius "
                                "> 0")


def check_window(since_ns: int, until_ns: int):
    """:raises QuestionError: negative stamps, or ``since`` after ``until`` (``until`` 0 = open)."""
    if since_ns < 0 or until_ns < 0:
        raise QuestionError(f"time window stamps must be >= 0 ns (got since={since_ns}, "
                            f"until={until_ns}); use 0 for an open end")
    if until_ns > 0 and since_ns > until_ns:
        raise QuestionError(f"time window is inverted: since ({since_ns} ns) is after until "
                            f"({until_ns} ns); swap them or set until to 0 for 'up to now'")


@dataclass
class Selection:
    """Captions chosen for one question."""

    captions: list[StoredCaption]  # time order
    tokens: int  # prompt tokens of the chosen captions
    candidates: int  # captions in the window
    used_mmr: bool  # False: all candidates fitted and were taken


class _Columns:
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


class RetrievalIndex:
    """In-memory retrieval index over one stream of a :class:`~rats_ros.recall.store.CaptionStore`.

    Thread-safe: several question threads may call :meth:`select` at once; refreshes are
    serialised, the MMR work runs outside the lock on a snapshot.

    :param store: the caption store (its stream).
    :param embedder: ``embed(texts) -> (n, d)`` unit rows, with ``name``.
    :param count_tokens: ``count_tokens(text) -> int`` of the answering model's tokenizer.
    :param read_batch: rows read from the store per query while catching up.
    """

    def __init__(self, store, embedder, count_tokens, read_batch: int = 5000):
        self._store = store
        self._embedder = embedder
        self._count_tokens = count_tokens
        self._read_batch = read_batch
        self._lock = threading.Lock()
        self._dim = int(embedder.embed(["dimension probe"]).shape[1])
        self._cols = _Columns(self._dim)
        self._last_id = 0
        self._deleted = 0
        self._origin: int | None = None

    def __len__(self) -> int:
        return self._cols.n

    @property
    def origin_ns(self) -> int | None:
        """Start stamp of the stream's first caption; prompt times are relative to it."""
        return self._origin

    def arrays(self):
        """A consistent snapshot of the index (no refresh): ``(ids (n,), start_ns (n,),
        end_ns (n,), tokens (n,), embeddings (n, d))``, in store id order."""
        with self._lock:
            cols = self._cols.snapshot()
        return cols["ids"], cols["start"], cols["end"], cols["tokens"], cols["emb"]

    def refresh(self) -> int:
        """Read rows added since the last refresh and drop rows retention deleted.

        :returns: the number of rows added.
        """
        with self._lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> int:
        _, origin, deleted = self._store.stream_state()
        if origin is None:
            return 0
        self._origin = origin
        if deleted != self._deleted:
            # Read the counter before the ids: a prune racing with us is caught next time.
            self._deleted = deleted
            self._cols.keep(np.isin(self._cols.ids[: self._cols.n], self._store.ids()))
        added = 0
        while True:
            rows = self._store.rows_after(self._last_id, self._read_batch)
            if rows:
                self._append(rows)
                self._last_id = rows[-1].id
                added += len(rows)
            if len(rows) < self._read_batch:
                return added

    def _append(self, rows: list[StoredCaption]):
        name = self._embedder.name
        lines = [format_caption(r, self._origin) for r in rows]
        tokens = np.array([self._count_tokens(line) + 1 for line in lines])  # +1: the newline
        emb = np.empty((len(rows), self._dim), np.float32)  # (b, d)
        missing = []
        for i, row in enumerate(rows):
            e = row.embedding
            if e is not None and row.embedder == name and e.shape == (self._dim,):
                emb[i] = e
            else:
                missing.append(i)
        if missing:
            emb[missing] = self._embedder.embed([rows[i].text for i in missing])
            self._store_lazy_embeddings(rows, missing, emb)
        pose = [(r.pose_x, r.pose_y, r.pose_z) if r.has_pose else (np.nan,) * 3 for r in rows]
        self._cols.append(ids=[r.id for r in rows], start=[r.start_ns for r in rows],
                          end=[r.end_ns for r in rows], tokens=tokens, emb=emb,
                          camera=[r.camera for r in rows], pose=pose)

    def _store_lazy_embeddings(self, rows, missing, emb):
        """Keep lazily computed embeddings for rows stored without one (a cache: a failed write
        costs a recomputation after a restart, never the question)."""
        fill = [i for i in missing if rows[i].embedding is None]
        if not fill or self._store.readonly:  # a read-only store keeps them in memory only
            return
        try:
            self._store.set_embeddings([rows[i].id for i in fill], emb[fill], self._embedder.name)
        except StoreError as err:
            _LOG.warning("lazily computed embeddings not stored: %s", err)

    def select(self, query_embedding: np.ndarray, since_ns: int = 0, until_ns: int = 0,
               budget_tokens: int = 10000, mmr_lambda: float = 0.5,
               max_captions: int = 0, cameras=(), place: Place | None = None) -> Selection:
        """Choose the captions for one question.

        :param query_embedding: ``(d,)`` unit vector of the question.
        :param since_ns: earliest clip start; :param until_ns: latest clip end (0: no bound).
        :param cameras: only captions of these cameras (empty: all).
        :param place: only captions whose pose lies inside it (None: anywhere, pose or not).
        :raises QuestionError: inverted window, no captions yet, none in the window (or of
            those cameras, or near that place), or every caption in it longer than the budget.
        """
        check_window(since_ns, until_ns)
        with self._lock:
            self._refresh_locked()
            cols = self._cols.snapshot()
        ids, start, end, tokens, emb = (cols[n] for n in ("ids", "start", "end", "tokens", "emb"))
        if len(ids) == 0:
            raise QuestionError(f"no captions stored yet for stream {self._store.stream_id!r}; "
                                "ask again once the first clip has been captioned")
        until = until_ns if until_ns > 0 else np.iinfo(np.int64).max
        in_window = (start >= since_ns) & (end <= until)  # (n,)
        if not in_window.any():
            raise QuestionError(
                f"no captions in the window since={since_ns} ns, until={until_ns} ns (stored "
                f"captions span {int(start.min())}..{int(end.max())} ns); widen the window")
        in_window = _where_mask(in_window, cols["camera"], cols["pose"], cameras, place)
        usable = in_window & (tokens <= budget_tokens)
        if not usable.any():
            raise QuestionError(f"every caption in the window is longer than the context budget "
                                f"({budget_tokens} tokens); raise context_tokens")
        idx = np.arange(len(ids)) if usable.all() else np.flatnonzero(usable)
        cand_emb = emb if usable.all() else emb[idx]  # (m, d); a view when nothing is excluded
        q = np.asarray(query_embedding, np.float32).reshape(-1)  # (d,)
        picks, used_mmr = select_under_budget(cand_emb, tokens[idx], q, budget_tokens,
                                              mmr_lambda, max_captions)
        chosen = idx[picks]
        return Selection(self._store.get_many(ids[chosen]), int(tokens[chosen].sum()),
                         int(in_window.sum()), used_mmr)


def _where_mask(in_window, camera: np.ndarray, pose: np.ndarray, cameras, place: Place | None):
    """``(n,)`` bool: rows in the window, of the wanted cameras, near the wanted place.

    :param in_window: ``(n,)`` bool; :param camera: ``(n,)`` camera names;
    :param pose: ``(n, 3)`` positions, NaN without pose.
    :raises QuestionError: when no row is left, naming the filter that left none.
    """
    mask = in_window.copy()
    if cameras:
        mask &= np.isin(camera, list(cameras))
        if not mask.any():
            raise QuestionError(f"no captions of cameras {sorted(cameras)} (stored cameras: "
                                f"{sorted(set(camera.tolist()))}) in the window")
    if place is not None:
        offset = pose - np.array([place.x, place.y, place.z])  # (n, 3)
        with np.errstate(invalid="ignore"):
            mask &= np.sqrt((offset ** 2).sum(axis=1)) <= place.radius  # NaN (no pose): False
        if not mask.any():
            raise QuestionError(f"no captions with a pose within {place.radius} m of "
                                f"({place.x}, {place.y}, {place.z}) in the window; widen the "
                                "radius or check pose_topic")
    return mask
