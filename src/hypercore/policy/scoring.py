"""Score plugins and ranking: one component row per scored metric, weighted, then the order.

Each scored metric of the registry (policy.registry: latency, price,
reputation, queue by default) is a score plugin with one job: turn the
candidates' values into a component in [0, 1] and weigh it. They run as one
(components, candidates) NumPy array, not one call each: at 100 nodes a
decision is a few dozen NumPy calls, and a call per component would cost as
much as the rest.

  fixed:    lower is better  max(0, 1 - value / scale)     (scoring.scales; the spec's formula)
            higher is better value (already 0..1)
  relative: min-max across the candidates: (max - x) / (max - min), or (x - min) / (max - min)
            when higher is better; 1.0 for everyone when all candidates are equal.
A metric a node does not report scores a neutral 0.5. score = Σ weight × component.
A component whose weight is 0 is not computed; it scores 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hypercore.policy.nodes import NodeTable

NEUTRAL = 0.5

# With more candidates than this, a top-`limit` ranking partitions first
# instead of sorting every candidate.
_PARTITION_ABOVE = 1024


class MetricScores:
    """The score plugins of a registry's scored metrics, prepared once per policy (see module docstring)."""

    __slots__ = ("n", "active", "all_active", "higher_rows", "relative", "scale_col", "weight_col")

    def __init__(self, policy: Any) -> None:
        scored = policy.registry.scored
        scoring = policy.scoring
        weights = scoring.weights()
        self.n = len(scored)
        active = [k for k, w in enumerate(weights) if w]  # rows computed
        self.active = np.array(active, dtype=np.intp)
        self.all_active = len(active) == self.n
        # rows (of the active ones) where higher is better: scored as they are, or min-max upside down
        self.higher_rows = tuple(i for i, k in enumerate(active) if scored[k].higher_is_better)
        self.relative = scoring.normalization == "relative"
        self.scale_col = np.array([scoring.scale(scored[k]) for k in active], dtype=np.float64)[:, None]
        self.weight_col = np.array([weights[k] for k in active], dtype=np.float64)[:, None]

    def score(self, table: NodeTable, positions: np.ndarray) -> np.ndarray:
        """Weighted components, shape (components, len(positions)), registry order.

        `positions` are the candidates' places in name order (NodeTable._prepared.by_name).
        """
        m = len(positions)
        if m == 0:
            return np.zeros((self.n, 0))
        prepared = table._prepared
        values = prepared.scores_by_name.take(positions, axis=1)  # (components, m), a fresh copy
        if not self.all_active:
            values = values[self.active]
        if self.relative:
            # min-max across the candidates, ignoring unknown values
            lo = np.fmin.reduce(values, axis=1)
            hi = np.fmax.reduce(values, axis=1)
            span = hi - lo
            spread = span > 0  # False when all candidates are equal or none reports the metric
            flat = not spread.all()
            if flat:
                span[~spread] = 1.0
            parts = np.subtract(hi[:, None], values)
            for row in self.higher_rows:
                np.subtract(values[row], lo[row], out=parts[row])
            parts /= span[:, None]
            if flat:
                parts[~spread] = 1.0
        else:
            parts = np.divide(values, self.scale_col)
            np.subtract(1.0, parts, out=parts)
            np.maximum(parts, 0.0, out=parts)
            for row in self.higher_rows:
                parts[row] = values[row]
        if prepared.score_has_unknown:
            parts[np.isnan(values)] = NEUTRAL
        parts *= self.weight_col
        if self.all_active:
            return parts
        full = np.zeros((self.n, m))
        full[self.active] = parts
        return full


def rank(scores: np.ndarray, limit: int | None) -> np.ndarray:
    """Positions into `scores`, best first; only the best `limit` are sorted.

    `scores` must be in node-name order: a stable sort then breaks ties by name.
    """
    neg = -scores
    if limit is not None and limit < len(neg):
        if limit <= 0:
            return np.empty(0, dtype=np.intp)
        if len(neg) > _PARTITION_ABOVE:
            kth = np.partition(neg, limit - 1)[limit - 1]
            pool = (neg <= kth).nonzero()[0]  # ties at the cut are all kept, then cut by name
            return pool[neg[pool].argsort(kind="stable")[:limit]]
        return neg.argsort(kind="stable")[:limit]
    return neg.argsort(kind="stable")


def _allocated(table: NodeTable, rows: np.ndarray) -> np.ndarray:
    """Per row, the share of its capacity in use (mean of cpu and memory; 0.5 when unknown)."""
    shares = []
    for free_key, total_key in (("cpu_free", "cpu_total"), ("mem_free_mb", "mem_total_mb")):
        free, total = table.columns[free_key].take(rows), table.columns[total_key].take(rows)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = 1.0 - free / total
        shares.append(np.where(np.isfinite(share), np.clip(share, 0.0, 1.0), np.nan))
    mean = np.nanmean(np.vstack(shares), axis=0) if rows.size else np.zeros(0)
    return np.where(np.isnan(mean), 0.5, mean)


def rank_by_allocation(table: NodeTable, places: np.ndarray, scores: np.ndarray, strategy: str,
                       limit: int | None) -> np.ndarray:
    """Positions into `scores`: least (spread) or most (binpack) allocated first, then score, then name."""
    if not len(places):
        return np.empty(0, dtype=np.intp)
    with np.errstate(all="ignore"):
        allocated = _allocated(table, table._prepared.by_name.take(places))
    key = allocated if strategy == "spread" else -allocated
    order = np.lexsort((-scores, key))  # stable: equal keys keep name order
    return order if limit is None else order[: max(limit, 0)]
