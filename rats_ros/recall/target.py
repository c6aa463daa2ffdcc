"""Where to go for a "where" question: the pose of the evidence that best supports the answer.

A question asks for a place when it says where (or which room / place / spot / location). Among
the evidence captions that have a pose, the one whose text is closest to the answer (cosine of
the embedder's vectors; the latest on a tie) is the target: a robot navigates to its pose.
"""
from __future__ import annotations

import re

import numpy as np

_PLACE = re.compile(r"\b(where|which (room|place|spot|location|area)|what (room|place|location)"
                    r"|location of)\b", re.IGNORECASE)


def asks_for_place(question: str) -> bool:
    """Whether ``question`` asks where something is or was."""
    return bool(_PLACE.search(question))


def best_supported(answer: str, evidence: list, embedder):
    """The caption of ``evidence`` with a pose whose text best supports ``answer``, or None.

    :param evidence: captions (``text``, ``has_pose``, ``end_ns``), in time order.
    :param embedder: ``embed(texts) -> (n, d)`` unit vectors.
    """
    placed = [caption for caption in evidence if caption.has_pose]
    if not placed:
        return None
    vectors = embedder.embed([answer, *(c.text for c in placed)])  # (1 + n, d)
    scores = vectors[1:] @ vectors[0]  # (n,)
    best = np.flatnonzero(scores >= scores.max() - 1e-6)[-1]  # the latest of the best
    return placed[int(best)]
