"""Evidence that covers a temporal question: first / last sightings, every occurrence, the order.

Similarity ranking (MMR) answers "what is on the table?" well and "when did I first see the red
mug?" badly: over a day the mug's sightings are worded alike, so the first and the last are no
more relevant than the hundred between them and fall out of the budget. A question is therefore
read first (:func:`plan_question`, rules over its words):

- ``first`` (first, earliest, initially), ``last`` (last, latest, most recent), ``count``
  (how many times, how often), ``order`` (before, after, which came first, X or Y);
- everything else is ``plain`` and keeps the paper's MMR.

For the temporal kinds the question's subject (the words left once question, time and filler
words are gone, e.g. "red mug") is matched against every caption of the window: a caption matches
when its embedding is near the subject's (``cos >= MATCH_COS``) and its text holds the subject's
words (verbs optional: "a visitor comes in through the front door" is a "front door open"), or
when it is very near (``cos >= SURE_COS``, a synonym). Matches are shown in time order, the
earliest and the latest always; when they do not fit the budget one caption of every episode
comes before a second of any, and a note line says how many captions matched, in how many
separate episodes, over which span, and how many are shown. The thresholds are measured by
``rats-ros eval recall`` (docs/EVALUATION.md).
"""
from __future__ import annotations

import re
from array import array
from dataclasses import dataclass

import numpy as np

KINDS = ("plain", "first", "last", "count", "order")
MATCH_COS = 0.30  # embedding pre-filter: the subject's words must then be in the text
SURE_COS = 0.80  # near enough to match without the words (a synonym, a reworded sighting)
EPISODE_GAP_NS = 60 * 1_000_000_000  # matches closer than this are one episode
NOTE_TOKENS = 64  # budget kept per subject for the note line that reports its matches

_WHICH_FIRST = re.compile(r"\bwhich (came|happened|was) first\b", re.IGNORECASE)
_ORDER = re.compile(r"\b(before|after|earlier than|later than)\b", re.IGNORECASE)
_COUNT = re.compile(r"\b(how many times|how often|number of times|how many separate|count "
                    r"the times)\b", re.IGNORECASE)
_FIRST = re.compile(r"\b(first|earliest|initially|for the first time)\b", re.IGNORECASE)
_LAST = re.compile(r"\b(last|latest|most recent(ly)?|final)\b", re.IGNORECASE)
_SPLIT = re.compile(r"\b(?:before|after|earlier than|later than)\b|,?\s\bor\b\s", re.IGNORECASE)
_FILLER = frozenset("""
a an the this that these those of in on at to by for from with into onto near next
what when which who whom whose where why how many much often times time number count did do
does was were is are be been being has have had will would can could should i you we it they me
us see seen saw spot spotted notice noticed observe observed appear appeared
show shown visible there any ever again first earliest initially last latest most recent
recently final before after earlier later than came happened happen occur occurred separate
come or and then yet so far today yesterday past through across around up down out off over
under inside outside away back someone somebody anyone anybody something thing
things
""".split())
#: verbs (stemmed) a subject may hold: optional in the text ("a visitor comes in through the front
#: door" is a "front door open"), the other words are required
_VERBS = frozenset("""
open close shut drive come go went gone arrive leave left enter exit use get make pass walk run
move fall break ring beep start stop turn switch pick put place take drop carry bring deliver
water clean wash cook eat drink sit stand jump fly land ride push pull knock play bark wipe fix
repair flash sound light
""".split())
_EGO = re.compile(r"\b(the robot|the camera|you|i|we)\s+(first |last |ever )?(see|saw|seen|spot|"
                  r"spotted|notice|noticed|observe|observed|detect|detected|record|recorded)\b",
                  re.IGNORECASE)


@dataclass(frozen=True)
class QuestionPlan:
    """How a question's evidence is chosen: ``kind`` (one of :data:`KINDS`) and, for the
    temporal kinds, the subjects to find (two for ``order``)."""

    kind: str
    subjects: tuple[str, ...] = ()


def plan_question(question: str) -> QuestionPlan:
    """Read a question's kind and subjects (module docstring)."""
    text = question.strip().rstrip("?")
    which_first = _WHICH_FIRST.search(text)
    body = re.sub(r"^.*?\bfirst\s*[,:]\s*", "", text) if which_first else text
    if which_first or _ORDER.search(text):
        parts = [subject_of(p) for p in _SPLIT.split(body)]
        subjects = tuple(p for p in parts if p)
        if len(subjects) >= 2:
            return QuestionPlan("order", subjects[:2])
    for kind, rule in (("count", _COUNT), ("first", _FIRST), ("last", _LAST)):
        if rule.search(text):
            subject = subject_of(text)
            return QuestionPlan(kind, (subject,)) if subject else QuestionPlan("plain")
    return QuestionPlan("plain")


def subject_of(text: str) -> str:
    """The content words of ``text`` in order (question, time and filler words removed; "the
    robot saw" is the asker, "a delivery robot" a subject)."""
    return " ".join(w for w in _words(_EGO.sub(" ", text)) if w not in _FILLER)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _stem(word: str) -> str:
    """A crude stem so "mugs" finds "mug" and "opened" finds "opens"."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def required_words(subject: str) -> tuple[list[str], int]:
    """The stems a matching text must hold and how many of them: every non-verb word (all but
    one of three or more); a subject of verbs alone needs all its verbs."""
    stems = [_stem(w) for w in subject.split()]
    nouns = [w for w in stems if w not in _VERBS] or stems
    return nouns, len(nouns) if len(nouns) <= 2 else len(nouns) - 1


class WordIndex:
    """Stem -> row ids of the captions that hold it, so a subject's words are looked up, not
    searched for in every caption. Ids only grow; a pruned id stays in its lists harmlessly
    (lookups keep only the ids of the snapshot they are given)."""

    def __init__(self):
        self._postings: dict[str, array] = {}

    def add(self, ids, texts) -> None:
        for row_id, text in zip(ids, texts, strict=True):
            for stem in {_stem(w) for w in _words(text)}:
                self._postings.setdefault(stem, array("q")).append(int(row_id))

    def holds(self, ids: np.ndarray, stem: str) -> np.ndarray:
        """``(n,)`` bool: which of ``ids`` (ascending) hold ``stem``."""
        out = np.zeros(len(ids), dtype=bool)
        posting = self._postings.get(stem)
        if posting is None or not len(ids):
            return out
        have = np.frombuffer(posting, dtype=np.int64)[: len(posting)]
        pos = np.minimum(np.searchsorted(ids, have), len(ids) - 1)
        out[pos[ids[pos] == have]] = True
        return out


def match(subject: str, sims: np.ndarray, ids: np.ndarray, words: WordIndex) -> np.ndarray:
    """Positions of the captions that match ``subject`` (module docstring).

    :param sims: ``(n,)`` cosine of each caption with the subject; :param ids: ``(n,)`` their
        row ids, ascending.
    """
    required, need = required_words(subject)
    present = sum(words.holds(ids, w).astype(np.int32) for w in required)  # (n,)
    return np.flatnonzero((sims >= SURE_COS) | ((sims >= MATCH_COS) & (present >= need)))


def episodes(start_ns: np.ndarray, end_ns: np.ndarray) -> int:
    """Separate episodes among matches in time order: a gap over :data:`EPISODE_GAP_NS`
    between one's end and the next's start begins a new one. :param start_ns: ``(m,)``."""
    if len(start_ns) == 0:
        return 0
    return 1 + int((start_ns[1:] - end_ns[:-1] > EPISODE_GAP_NS).sum())


def spread(matches: np.ndarray, tokens: np.ndarray, start_ns: np.ndarray, end_ns: np.ndarray,
           budget: int, kind: str) -> np.ndarray:
    """The matches shown when not all fit: the first and the last always, then the ones the
    kind needs most (``first``: the earliest, ``last``: the latest, else one caption of every
    episode, spread coarse to fine, before a second of any) while the budget lasts.

    :param matches: ``(m,)`` in time order; :param tokens:, :param start_ns:, :param end_ns:
        per candidate. :returns: a subset of ``matches``, time order.
    """
    if int(tokens[matches].sum()) <= budget:
        return matches
    m = len(matches)
    if kind == "first":
        order = [0, m - 1, *range(1, m - 1)]
    elif kind == "last":
        order = [m - 1, 0, *range(m - 2, 0, -1)]
    else:
        order = _episode_order(start_ns[matches], end_ns[matches])
    chosen, used = [], 0
    for i in order:
        cost = int(tokens[matches[i]])
        if used + cost > budget:
            continue
        chosen.append(i)
        used += cost
    return matches[np.sort(np.array(chosen, dtype=np.int64))]


def _episode_order(start_ns: np.ndarray, end_ns: np.ndarray) -> list[int]:
    """Positions ``0 .. m-1`` of time-ordered matches: the first and the last, then each
    episode's first match (episodes coarse to fine over time), then the rest likewise."""
    m = len(start_ns)
    begins = np.flatnonzero(np.r_[True, start_ns[1:] - end_ns[:-1] > EPISODE_GAP_NS])  # (e,)
    heads = [int(begins[i]) for i in _coarse_to_fine(len(begins))]
    return list(dict.fromkeys([0, m - 1, *heads, *_coarse_to_fine(m)]))


def _coarse_to_fine(m: int) -> list[int]:
    """``0 .. m-1`` ordered so every prefix is spread over the whole range (ends first)."""
    order = dict.fromkeys([0, m - 1])
    step = m - 1
    while step > 1:
        step = max(1, step // 2)
        order.update(dict.fromkeys(range(0, m, step)))
    return list(order)


@dataclass
class Coverage:
    """What a temporal question's matches were, per subject: ``found`` captions, in
    ``episodes`` separate episodes, spanning ``first_ns`` .. ``last_ns``, ``shown`` of them."""

    subject: str
    found: int
    episodes: int
    first_ns: int = 0
    last_ns: int = 0
    shown: int = 0


def cover(plan: QuestionPlan, subject_vecs: np.ndarray, cols: dict, order: np.ndarray,
          words: WordIndex, budget: int) -> tuple[np.ndarray, list[Coverage]]:
    """The matches each subject's evidence must hold, within ``budget`` tokens.

    :param subject_vecs: ``(s, d)`` one unit row per subject.
    :param cols: the index's columns (``ids``, ``emb``, ``tokens``, ``start``, ``end``; n rows,
        ids ascending); :param order: ``(m,)`` the usable rows, in time order.
    :returns: ``(rows to show, time order; one Coverage per subject)``.
    """
    share = budget // len(plan.subjects)
    shown, report = [], []
    ids, start, end = cols["ids"][order], cols["start"][order], cols["end"][order]
    by_id = np.argsort(ids, kind="stable")  # match() wants ascending ids
    for subject, vec in zip(plan.subjects, subject_vecs, strict=True):
        sims = cols["emb"] @ vec  # (n,) over all rows: no (m, d) gather
        hits = by_id[match(subject, sims[order][by_id], ids[by_id], words)]
        found = np.sort(hits)  # positions in ``order``: time order
        picks = spread(found, cols["tokens"][order], start, end, share, plan.kind) \
            if len(found) else found
        shown.append(order[picks])
        report.append(Coverage(subject, len(found), episodes(start[found], end[found]),
                               int(start[found[0]]) if len(found) else 0,
                               int(end[found[-1]]) if len(found) else 0, len(picks)))
    return np.unique(np.concatenate(shown)), report
