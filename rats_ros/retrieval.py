"""Causal caption retrieval: a time window, then the paper's budget rule with MMR.

A question sees only captions of clips that started at or after ``since`` and ended at or before
``until``. If all of them fit the context budget they are all used, in time order. Otherwise they
are ranked by Maximal Marginal Relevance,
``score = lambda * cos(q, c) - (1 - lambda) * max cos(c, chosen)``, taken in that order until the
next one no longer fits the budget (or ``max_captions`` is reached), and put back in time order.

:class:`RetrievalIndex` keeps the embeddings, token counts and stamps of every stored caption in
memory, refreshed incrementally from the store (new row ids only; a deletion counter in the
store tells it when retention removed rows), so a question costs no full read of the store:
a window mask, the MMR picks (:func:`mmr_picks`, exact, blocked) and reading the chosen rows.
"""
import logging
import threading
from dataclasses import dataclass

import numpy as np

from rats_ros.errors import QuestionError, StoreError
from rats_ros.store import StoredCaption

_LOG = logging.getLogger(__name__)
_ACTIVE_CHUNK = 512  # candidates scored exactly within a block, grown on demand
_REBASE_EVERY = 32  # most picks between two recomputations of all n bounds
_LAZY_MIN_N = 20000  # below this the textbook update is faster (bench/bench_retrieval.py)


def format_caption(start_ns: int, end_ns: int, text: str, origin_ns: int) -> str:
    """One caption as it appears in the QA prompt: ``[12.0s-44.0s] text`` (seconds from the
    stream's first caption, so the numbers stay short and stable under retention)."""
    return f"[{(start_ns - origin_ns) / 1e9:.1f}s-{(end_ns - origin_ns) / 1e9:.1f}s] {text}"


def check_window(since_ns: int, until_ns: int):
    """:raises QuestionError: negative stamps, or ``since`` after ``until`` (``until`` 0 = open)."""
    if since_ns < 0 or until_ns < 0:
        raise QuestionError(f"time window stamps must be >= 0 ns (got since={since_ns}, "
                            f"until={until_ns}); use 0 for an open end")
    if until_ns > 0 and since_ns > until_ns:
        raise QuestionError(f"time window is inverted: since ({since_ns} ns) is after until "
                            f"({until_ns} ns); swap them or set until to 0 for 'up to now'")


def mmr_picks(emb: np.ndarray, query: np.ndarray, lam: float = 0.5, lazy: bool | None = None):
    """Yield indices of ``emb`` in exact MMR order (the first pick is the most relevant).

    Textbook MMR updates the max-similarity of all n captions after every pick (n d work per
    pick); it is used below ``_LAZY_MIN_N`` captions (``lazy=None``), where it is fastest.
    The lazy variant brings a caption's max-similarity up to date only when it could matter:
    a score computed against fewer chosen captions bounds its current score from above (scores
    only fall as captions are chosen), so candidates are visited in order of that bound and
    scored exactly (one small matrix product per group) until the best exact score beats every
    remaining bound. Bounds are recomputed over all n once per block of 1, 2, 4, ... up to
    ``_REBASE_EVERY`` picks (O(n) each). Exact ties may break differently than textbook MMR.

    :param emb: ``(n, d)`` unit rows. :param query: ``(d,)`` unit vector.
    """
    n = len(emb)
    if n == 0:
        return
    rel = emb @ query  # (n,)
    if lam >= 1.0:  # relevance only: no similarity needed
        yield from (int(i) for i in np.argsort(-rel, kind="stable"))
        return
    first = int(np.argmax(rel))
    yield first
    if not (lazy if lazy is not None else n >= _LAZY_MIN_N):
        yield from _textbook_picks(emb, rel, lam, first)
        return
    lam_rel = lam * rel  # (n,)
    taken = np.zeros(n, dtype=bool)
    taken[first] = True
    state = _MaxSim(emb, first)
    while len(state.chosen) < n:
        bound = lam_rel - (1.0 - lam) * state.maxsim  # (n,) upper bounds, exact where current
        bound[taken] = -np.inf
        block = min(_REBASE_EVERY, len(state.chosen), n - len(state.chosen))
        for pick in _block_picks(state, lam_rel, bound, lam, block):
            taken[pick] = True
            yield pick


def _textbook_picks(emb, rel, lam: float, first: int):
    """Picks after ``first``: the full max-similarity vector updated after every pick."""
    maxsim = emb @ emb[first]  # (n,)
    taken = np.zeros(len(emb), dtype=bool)
    taken[first] = True
    for _ in range(len(emb) - 1):
        score = lam * rel - (1.0 - lam) * maxsim  # (n,)
        score[taken] = -np.inf
        pick = int(np.argmax(score))
        taken[pick] = True
        yield pick
        np.maximum(maxsim, emb @ emb[pick], out=maxsim)


class _MaxSim:
    """Max-similarity to the chosen captions, each row current up to ``applied[i]`` picks."""

    def __init__(self, emb, first: int):
        self.emb = emb
        self.chosen = [first]
        self.maxsim = emb @ emb[first]  # (n,)
        self.applied = np.ones(len(emb), dtype=np.int32)  # (n,)

    def catch_up(self, idx: np.ndarray) -> np.ndarray:
        """Bring rows ``idx`` up to date with every chosen caption; :returns: their maxsim."""
        k = len(self.chosen)
        behind = self.applied[idx]
        for done in np.unique(behind[behind < k]):  # one group per staleness level
            rows = idx[behind == done]
            missing = self.emb[self.chosen[done:]]  # (k - done, d)
            sims = (self.emb[rows] @ missing.T).max(axis=1)  # (r,)
            self.maxsim[rows] = np.maximum(self.maxsim[rows], sims)
        self.applied[idx] = k
        return self.maxsim[idx]


def _block_picks(state: _MaxSim, lam_rel, bound, lam: float, count: int):
    """``count`` exact MMR picks, scoring exactly only the candidates with the highest bounds."""
    emb = state.emb
    n, dim = emb.shape
    k = min(n, _ACTIVE_CHUNK)
    part = np.argpartition(-bound, k - 1) if k < n else np.arange(n)
    head, tail = part[:k], part[k:]
    order = head[np.lexsort((head, -bound[head]))]  # by bound, ties to the lower index
    act_emb = np.empty((n, dim), emb.dtype)  # (n, d) capacity; pages touched as it grows
    act_score = np.empty(n, np.float32)  # exact scores of the active set; -inf once taken
    m = 0
    for _ in range(count):
        while True:
            if m == len(order) and len(tail):
                order = np.concatenate([order, tail[np.lexsort((tail, -bound[tail]))]])
                tail = tail[:0]
            outside = bound[order[m]] if m < len(order) else -np.inf
            j = int(np.argmax(act_score[:m])) if m else -1
            if m and act_score[j] >= outside:
                break
            new = order[m:m + _ACTIVE_CHUNK]  # join the active set, scored exactly
            c = len(new)
            act_emb[m:m + c] = emb[new]
            act_score[m:m + c] = np.where(np.isfinite(bound[new]), lam_rel[new] - (1.0 - lam)
                                          * state.catch_up(new), -np.inf)
            m += c
        pick = int(order[j])
        state.chosen.append(pick)
        yield pick
        active = order[:m]
        sims = act_emb[:m] @ emb[pick]  # (m,)
        state.maxsim[active] = np.maximum(state.maxsim[active], sims)
        state.applied[active] = len(state.chosen)
        np.minimum(act_score[:m], lam_rel[active] - (1.0 - lam) * sims, out=act_score[:m])
        act_score[j] = -np.inf


def select_under_budget(emb, tokens, query, budget: int, lam: float = 0.5,
                        max_captions: int = 0) -> tuple[np.ndarray, bool]:
    """The paper's rule on one candidate set.

    :param emb: ``(n, d)`` unit rows. :param tokens: ``(n,)`` prompt tokens per caption.
    :returns: ``(indices into the candidates, used_mmr)``; indices in pick order.
    """
    n = len(tokens)
    if int(tokens.sum()) <= budget and (max_captions <= 0 or n <= max_captions):
        return np.arange(n), False
    picked, used = [], 0
    for i in mmr_picks(emb, query, lam):
        if used + int(tokens[i]) > budget:
            break
        picked.append(i)
        used += int(tokens[i])
        if 0 < max_captions <= len(picked):
            break
    return np.array(picked, dtype=np.int64), True


@dataclass
class Selection:
    """Captions chosen for one question."""

    captions: list[StoredCaption]  # time order
    tokens: int  # prompt tokens of the chosen captions
    candidates: int  # captions in the window
    used_mmr: bool  # False: all candidates fitted and were taken


class _Columns:
    """Growable column arrays (amortised doubling); slices handed out stay valid."""

    def __init__(self, dim: int):
        self.n = 0
        self.ids = np.empty(0, np.int64)
        self.start = np.empty(0, np.int64)
        self.end = np.empty(0, np.int64)
        self.tokens = np.empty(0, np.int64)
        self.emb = np.empty((0, dim), np.float32)

    def append(self, ids, start, end, tokens, emb):
        need = self.n + len(ids)
        if need > len(self.ids):
            cap = max(need, 2 * len(self.ids), 1024)
            for name in ("ids", "start", "end", "tokens", "emb"):
                old = getattr(self, name)
                new = np.empty((cap,) + old.shape[1:], old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        sl = slice(self.n, need)
        self.ids[sl], self.start[sl], self.end[sl] = ids, start, end
        self.tokens[sl], self.emb[sl] = tokens, emb
        self.n = need

    def keep(self, mask):
        """Drop rows where ``mask`` is False (into fresh arrays: old snapshots stay intact)."""
        for name in ("ids", "start", "end", "tokens", "emb"):
            setattr(self, name, getattr(self, name)[: self.n][mask].copy())
        self.n = int(mask.sum())

    def snapshot(self):
        n = self.n
        return self.ids[:n], self.start[:n], self.end[:n], self.tokens[:n], self.emb[:n]


class RetrievalIndex:
    """In-memory retrieval index over one stream of a :class:`~rats_ros.store.CaptionStore`.

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
            return self._cols.snapshot()

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
        lines = [format_caption(r.start_ns, r.end_ns, r.text, self._origin) for r in rows]
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
        ids = [r.id for r in rows]
        starts = [r.start_ns for r in rows]
        ends = [r.end_ns for r in rows]
        self._cols.append(ids, starts, ends, tokens, emb)

    def _store_lazy_embeddings(self, rows, missing, emb):
        """Keep lazily computed embeddings for rows stored without one (a cache: a failed write
        costs a recomputation after a restart, never the question)."""
        fill = [i for i in missing if rows[i].embedding is None]
        if not fill:
            return
        try:
            self._store.set_embeddings([rows[i].id for i in fill], emb[fill], self._embedder.name)
        except StoreError as err:
            _LOG.warning("lazily computed embeddings not stored: %s", err)

    def select(self, query_embedding: np.ndarray, since_ns: int = 0, until_ns: int = 0,
               budget_tokens: int = 10000, mmr_lambda: float = 0.5,
               max_captions: int = 0) -> Selection:
        """Choose the captions for one question.

        :param query_embedding: ``(d,)`` unit vector of the question.
        :param since_ns: earliest clip start; :param until_ns: latest clip end (0: no bound).
        :raises QuestionError: inverted window, no captions yet, none in the window, or every
            caption in the window longer than the budget.
        """
        check_window(since_ns, until_ns)
        with self._lock:
            self._refresh_locked()
            ids, start, end, tokens, emb = self._cols.snapshot()
        if len(ids) == 0:
            raise QuestionError(f"no captions stored yet for stream {self._store.stream_id!r}; "
                                "ask again once the first clip has been captioned")
        until = until_ns if until_ns > 0 else np.iinfo(np.int64).max
        in_window = (start >= since_ns) & (end <= until)  # (n,)
        if not in_window.any():
            raise QuestionError(
                f"no captions in the window since={since_ns} ns, until={until_ns} ns (stored "
                f"captions span {int(start.min())}..{int(end.max())} ns); widen the window")
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
