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
from dataclasses import dataclass, field

import numpy as np

from rats_ros.errors import QuestionError, StoreError
from rats_ros.recall.clock import TimeStyle
from rats_ros.recall.columns import Columns
from rats_ros.recall.coverage import NOTE_TOKENS, Coverage, QuestionPlan, WordIndex, cover
from rats_ros.recall.filters import Place, check_window, where_mask
from rats_ros.recall.mmr import mmr_picks, select_under_budget
from rats_ros.recall.store import StoredCaption

# mmr_picks and select_under_budget live in rats_ros.recall.mmr; importers use them from here too.
__all__ = ["Place", "RetrievalIndex", "Selection", "check_window", "format_caption", "mmr_picks",
           "select_under_budget"]
_LOG = logging.getLogger(__name__)
STREAM_TIMES = TimeStyle("stream")


def format_caption(caption, origin_ns: int, style: TimeStyle = STREAM_TIMES,
                   now_ns: int | None = None) -> str:
    """One caption as it appears in the QA prompt: its span as ``style`` writes it
    (:mod:`rats_ros.recall.clock`: ``[14:03, 2 h 5 min ago]`` or seconds from the
    stream's first caption, ``[12.0s-44.0s]``), with ``camera front`` and ``at (x, y, z) m`` in
    the brackets when the caption has them, so "where" questions can be answered with
    coordinates. :param now_ns: the question's time (None: the longest age, to count tokens)."""
    tags = [style.span(caption.start_ns, caption.end_ns, origin_ns, now_ns)]
    if getattr(caption, "robot", ""):
        tags.append(f"robot {caption.robot}")
    if caption.camera:
        tags.append(f"camera {caption.camera}")
    if caption.has_pose:
        tags.append(f"at ({caption.pose_x:.1f}, {caption.pose_y:.1f}, {caption.pose_z:.1f}) m"
                    + (f" in {caption.pose_frame}" if caption.pose_frame else ""))
    return f"[{', '.join(tags)}] {caption.text}"


@dataclass
class Selection:
    """Captions chosen for one question."""

    captions: list[StoredCaption]  # time order
    tokens: int  # prompt tokens of the chosen captions
    candidates: int  # captions in the window
    used_mmr: bool  # False: all candidates fitted and were taken
    kind: str = "plain"  # the question's kind (rats_ros.recall.coverage.KINDS)
    coverage: list[Coverage] = field(default_factory=list)  # temporal kinds: per subject


class RetrievalIndex:
    """In-memory retrieval index over one stream of a :class:`~rats_ros.recall.store.CaptionStore`.

    Thread-safe: several question threads may call :meth:`select` at once; refreshes are
    serialised, the MMR work runs outside the lock on a snapshot.

    :param store: the caption store (its stream).
    :param embedder: ``embed(texts) -> (n, d)`` unit rows, with ``name``.
    :param count_tokens: ``count_tokens(text) -> int`` of the answering model's tokenizer.
    :param read_batch: rows read from the store per query while catching up.
    :param style: how prompt lines write times (their token counts assume the longest age).
    """

    def __init__(self, store, embedder, count_tokens, read_batch: int = 5000,
                 style: TimeStyle = STREAM_TIMES):
        self._store = store
        self._style = style
        self._embedder = embedder
        self._count_tokens = count_tokens
        self._read_batch = read_batch
        self._lock = threading.Lock()
        self._dim = int(embedder.embed(["dimension probe"]).shape[1])
        self._cols = Columns(self._dim)
        self._words = WordIndex()
        self._date_tokens = _date_tokens(count_tokens)
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
        lines = [format_caption(r, self._origin, self._style) for r in rows]
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
        self._words.add([r.id for r in rows], [r.text for r in rows])

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
               max_captions: int = 0, cameras=(), place: Place | None = None,
               plan: QuestionPlan | None = None, subject_vecs: np.ndarray | None = None,
               mmr_pool: int = 0, now_ns: int | None = None) -> Selection:
        """Choose the captions for one question.

        :param query_embedding: ``(d,)`` unit vector of the question.
        :param since_ns: earliest clip start; :param until_ns: latest clip end (0: no bound).
        :param cameras: only captions of these cameras (empty: all).
        :param place: only captions whose pose lies inside it (None: anywhere, pose or not).
        :param plan: a temporal question's kind and subjects (:mod:`rats_ros.recall.coverage`):
            their matches come first, MMR fills the rest of the budget; None or ``plain``: MMR.
        :param mmr_pool: MMR ranks only this many most relevant candidates (0: all;
            :func:`rats_ros.recall.mmr.select_under_budget`).
        :param subject_vecs: ``(s, d)`` the plan's subjects embedded (embedded here if None;
            callers embed them with the question in one call).
        :param now_ns: the question's time: clock lines of its day cost their tokens without
            the date they were counted with (None: every line costs its count).
        :raises QuestionError: inverted window, no captions yet, none in the window (or of
            those cameras, or near that place), or every caption in it longer than the budget.
        """
        check_window(since_ns, until_ns)
        with self._lock:
            self._refresh_locked()
            cols = self._cols.snapshot()
        if now_ns is not None:
            cols["tokens"] = self._line_tokens(cols, now_ns)
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
        in_window = where_mask(in_window, cols["camera"], cols["pose"], cameras, place)
        usable = in_window & (tokens <= budget_tokens)
        if not usable.any():
            raise QuestionError(f"every caption in the window is longer than the context budget "
                                f"({budget_tokens} tokens); raise context_tokens")
        idx = np.arange(len(ids)) if usable.all() else np.flatnonzero(usable)
        q = np.asarray(query_embedding, np.float32).reshape(-1)  # (d,)
        if plan is not None and plan.kind != "plain":
            if subject_vecs is None:
                subject_vecs = self._embedder.embed(list(plan.subjects))  # (s, d)
            return self._covering(plan, subject_vecs, cols, idx, q, budget_tokens,
                                  (mmr_lambda, mmr_pool), int(in_window.sum()))
        chosen, used_mmr = _ranked(cols, idx, q, budget_tokens, mmr_lambda, max_captions,
                                   mmr_pool)
        return Selection(self._store.get_many(ids[chosen]), int(tokens[chosen].sum()),
                         int(in_window.sum()), used_mmr)

    def _line_tokens(self, cols, now_ns: int) -> np.ndarray:
        """``(n,)`` prompt tokens per caption for a question at ``now_ns``."""
        if self._origin is None or not self._style.uses_clock(self._origin):
            return cols["tokens"]
        today = cols["start"] >= self._style.day_start_ns(now_ns)  # (n,) written undated
        return cols["tokens"] - self._date_tokens * today

    def _covering(self, plan, vecs, cols, idx, q, budget: int, mmr: tuple, in_window: int):
        """A temporal question: every subject's matches (earliest and latest always), then
        MMR over the other candidates for the budget left; time order."""
        order = idx[np.argsort(cols["start"][idx], kind="stable")]  # (m,) time order
        budget = max(1, budget - NOTE_TOKENS * len(plan.subjects))
        must, report = cover(plan, vecs, cols, order, self._words, budget)
        left = budget - int(cols["tokens"][must].sum())
        rest = np.setdiff1d(idx, must)
        if left > 0 and len(rest):
            extra, _ = _ranked(cols, rest, q, left, mmr[0], 0, mmr[1])
            must = np.concatenate([must, extra])
        chosen = np.sort(must)
        return Selection(self._store.get_many(cols["ids"][chosen]),
                         int(cols["tokens"][chosen].sum()), in_window, True, plan.kind, report)


def _date_tokens(count_tokens) -> int:
    """Tokens a clock line's date costs at least (its count includes one; a line of the
    question's day has none), one less for merges across its edges: counts stay upper bounds."""
    age = ", 1 h 0 min ago] x"
    dated = min(count_tokens(f"[{day} 00:00{age}") for day in (
        "2024-01-01", "2025-06-15", "2026-12-31", "2027-09-30", "2031-11-11"))
    return max(0, dated - count_tokens(f"[00:00{age}") - 1)


def _ranked(cols, idx, q, budget: int, lam: float, max_captions: int, pool: int):
    """The paper's rule over rows ``idx``; with ``pool`` > 0, MMR ranks only the ``pool`` most
    relevant of them (a budget holds a few hundred captions, and MMR's picks come from the
    relevant end: ``bench/bench_retrieval.py`` measures how often a pool changes them).

    :returns: ``(chosen rows, used_mmr)``.
    """
    tokens = cols["tokens"]
    if int(tokens[idx].sum()) <= budget and (max_captions <= 0 or len(idx) <= max_captions):
        return idx, False
    if 0 < pool < len(idx):
        rel = (cols["emb"] @ q)[idx]  # (m,): a product over all rows, no (m, d) gather
        idx = idx[np.sort(np.argpartition(-rel, pool - 1)[:pool])]  # store order kept
    emb = cols["emb"] if len(idx) == len(cols["ids"]) else cols["emb"][idx]
    picks, used = select_under_budget(emb, tokens[idx], q, budget, lam, max_captions)
    return idx[picks], used
