"""Maximal Marginal Relevance: exact MMR order (textbook and lazy) and the paper's budget rule.

``score = lambda * cos(q, c) - (1 - lambda) * max cos(c, chosen)``; see
:mod:`rats_ros.recall.retrieval` for how a question's candidates are chosen before these run.
"""
import numpy as np

_ACTIVE_CHUNK = 512  # candidates scored exactly within a block, grown on demand
_REBASE_EVERY = 32  # most picks between two recomputations of all n bounds
_LAZY_MIN_N = 20000  # below this the textbook update is faster (bench/bench_retrieval.py)


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
