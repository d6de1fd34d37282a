"""Reputation from evidence: a Beta score per observer, and an aggregate that a lying minority cannot move far.

One observer's view of a node is the mean of a Beta distribution,
    score = (s + a) / (s + f + a + b)
with s and f the successes and failures it observed in its window, and a, b
the prior's pseudo-counts (prior p with weight w: a = p·w, b = (1 − p)·w).
So a new node starts at its prior, evidence moves it, and old evidence falls
out of the window. Adding a failure never raises the score; a success never
lowers it.

Across observers, the aggregate is the weighted median of their scores,
weighted by each observer's own standing: fewer than half the weight lying
cannot move the median past the honest observers' scores.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PRIOR = 0.5  # a node nobody has observed, and nobody attested
PRIOR_WEIGHT = 10.0  # how many observations the default prior is worth (successes count once a minute: 10 minutes)
ATTESTED_WEIGHT = 20.0  # and a prior the operator attested (an audit is worth more than a guess)


@dataclass(frozen=True)
class Evidence:
    successes: int = 0
    failures: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"ok": self.successes, "failed": self.failures}


def beta_score(evidence: Evidence, prior: float = PRIOR, weight: float = PRIOR_WEIGHT) -> float:
    a, b = prior * weight, (1.0 - prior) * weight
    return (evidence.successes + a) / (evidence.successes + evidence.failures + a + b)


def weighted_median(views: Iterable[tuple[float, float]]) -> float | None:
    """The weighted median of (score, weight) pairs; None without any positive weight."""
    pairs = sorted((s, w) for s, w in views if w > 0)
    total = sum(w for _, w in pairs)
    if not pairs or total <= 0:
        return None
    half, running = total / 2.0, 0.0
    for i, (score, weight) in enumerate(pairs):
        running += weight
        if running > half:
            return score
        if running == half and i + 1 < len(pairs):
            return (score + pairs[i + 1][0]) / 2.0
    return pairs[-1][0]
