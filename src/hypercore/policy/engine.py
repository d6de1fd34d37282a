"""The policy engine: filter by hard rules, score by weights, rank. Pure: no I/O, no clock.

Pipeline (after Nomad's feasibility → rank → limit):
  1. feasibility: every rule becomes a Check over the node table's columns;
  2. candidates: alive nodes that passed every check (permissive mode with no
     such node: every alive node, flagged as a fallback);
  3. score: a weighted sum of per-metric scores in [0, 1];
  4. rank: score descending, ties broken by node name ascending (byte order
     of the name, so the order never depends on the input order);
  5. limit: the best `limit` nodes, without sorting the rest.

Scores, with fixed normalization (the spec's formula, default scales
latency 200 ms, price $1.00/GB, queue 100):
  latency = max(0, 1 - latency_ms / scale)     price = max(0, 1 - price_per_gb / scale)
  queue   = max(0, 1 - queue_depth / scale)    reputation = reputation (0..1)
With relative normalization each lower-is-better metric scores
(max - x) / (max - min) across the candidates (reputation (x - min) / (max - min)),
and 1.0 for everyone when all candidates are equal. A metric a node does not
report scores a neutral 0.5. score = Σ weight × metric score.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from hypercore.policy.decision import Check, Decision, Ranking
from hypercore.policy.errors import NoQualifyingNode
from hypercore.policy.model import Policy, Rules, Scoring
from hypercore.policy.nodes import NodeRecord, NodeTable, as_table

NEUTRAL = 0.5

# (policy rule key, node metric, True when the rule is a lower bound)
_THRESHOLD_RULES: tuple[tuple[str, str, bool], ...] = (
    ("max_latency_ms", "latency_ms", False),
    ("max_jitter_ms", "jitter_ms", False),
    ("max_packet_loss", "packet_loss", False),
    ("max_price_per_gb", "price_per_gb", False),
    ("min_reputation_score", "reputation", True),
    ("max_queue_depth", "queue_depth", False),
)


def _capability_checks(table: NodeTable, capabilities: Iterable[str], treat_unknown_as_failure: bool) -> list[Check]:
    unknown_sets = np.fromiter((s is None for s in table.cap_sets), dtype=bool, count=len(table.cap_sets))
    unknown = unknown_sets[table.cap_ids]
    checks = []
    for cap in capabilities:
        lacking = np.fromiter(
            (s is not None and cap not in s for s in table.cap_sets), dtype=bool, count=len(table.cap_sets)
        )
        checks.append(
            Check(
                rule="required_capabilities",
                label=f"missing capability {cap}",
                metric=None,
                violated=lacking[table.cap_ids],
                unknown=unknown if treat_unknown_as_failure else None,
            )
        )
    return checks


def _rule_checks(rules: Rules, table: NodeTable, enforce: bool) -> list[Check]:
    checks: list[Check] = []
    for key, metric, lower_bound in _THRESHOLD_RULES:
        limit = getattr(rules, key)
        if limit is None:
            continue
        column = table.columns[metric]
        # NaN compares False, so an unknown metric is never a violation here;
        # whether it fails the node is the mode's call (the `unknown` mask).
        violated = column < limit if lower_bound else column > limit
        label = f"{metric} {'<' if lower_bound else '>'} {limit:g}"
        checks.append(Check(key, label, metric, violated, table.unknown[metric] if enforce else None))
    checks.extend(_capability_checks(table, rules.required_capabilities or (), enforce))
    return checks


def _metric_score(values: np.ndarray, *, lower_is_better: bool, scale: float, relative: bool) -> np.ndarray:
    """Per-node score in [0, 1] of one metric. `values` is a fresh copy; it is reused."""
    unknown = np.isnan(values)
    if relative:
        known = values[~unknown]
        if known.size == 0 or known.min() == known.max():
            out = np.ones(values.shape)
        else:
            lo, hi = known.min(), known.max()
            out = (hi - values) / (hi - lo) if lower_is_better else (values - lo) / (hi - lo)
    elif lower_is_better:
        out = np.subtract(1.0, values / scale, out=values)
        np.maximum(out, 0.0, out=out)
    else:
        out = values
    out[unknown] = NEUTRAL
    return out


def _score(scoring: Scoring, table: NodeTable, rows: np.ndarray) -> np.ndarray:
    """Weighted components for `rows`, shape (4, len(rows)): latency, price, reputation, queue."""
    w_lat, w_price, w_rep, w_queue = scoring.weights()
    relative = scoring.normalization == "relative"
    scales = scoring.scales
    parts = np.zeros((4, len(rows)))
    cols = table.columns
    if w_lat:
        parts[0] = w_lat * _metric_score(cols["latency_ms"][rows], lower_is_better=True, scale=scales.latency_ms, relative=relative)
    if w_price:
        parts[1] = w_price * _metric_score(cols["price_per_gb"][rows], lower_is_better=True, scale=scales.price_per_gb, relative=relative)
    if w_rep:
        parts[2] = w_rep * _metric_score(cols["reputation"][rows], lower_is_better=False, scale=1.0, relative=relative)
    if w_queue:
        parts[3] = w_queue * _metric_score(cols["queue_depth"][rows], lower_is_better=True, scale=scales.queue_depth, relative=relative)
    return parts


def _rank(scores: np.ndarray, name_rank: np.ndarray, limit: int | None) -> np.ndarray:
    """Positions into `scores`, best first; only the best `limit` are sorted."""
    neg = -scores
    if limit is not None and limit < len(scores):
        if limit <= 0:
            return np.empty(0, dtype=np.intp)
        kth = np.partition(neg, limit - 1)[limit - 1]
        pool = np.flatnonzero(neg <= kth)  # ties at the cut are all kept, then cut by name
        return pool[np.lexsort((name_rank[pool], neg[pool]))][:limit]
    return np.lexsort((name_rank, neg))


def decide(
    policy: Policy,
    nodes: NodeTable | Sequence[NodeRecord | Mapping[str, Any]],
    *,
    limit: int | None = None,
    require_capabilities: Iterable[str] = (),
) -> Decision:
    """Evaluate `policy` over `nodes`; rank at most `limit` nodes (None: all).

    `require_capabilities` are needs of the workload itself (exec, container):
    unlike policy rules they hold in every mode, fallback included.
    """
    table = as_table(nodes)
    enforce = policy.mode == "enforce"
    checks = _rule_checks(policy.rules, table, enforce)
    needs = sorted(set(require_capabilities) - set(policy.rules.required_capabilities or ()))
    absolute = _capability_checks(table, needs, treat_unknown_as_failure=True)
    checks.extend(absolute)

    failed = np.zeros(len(table), dtype=bool)
    for check in checks:
        failed |= check.violated
        if check.unknown is not None:
            failed |= check.unknown
    candidates = table.alive & ~failed
    fallback = False
    if not candidates.any() and not enforce:
        candidates = table.alive.copy()
        for check in absolute:
            candidates &= ~(check.violated | check.unknown)  # type: ignore[operator]
        fallback = bool(candidates.any())

    rows = np.flatnonzero(candidates)
    parts = _score(policy.scoring, table, rows)
    scores = parts.sum(axis=0)
    order = _rank(scores, table.name_rank[rows], limit)
    ranking = Ranking(table.names, rows[order], scores[order], parts[:, order])
    return Decision(
        policy=policy.name,
        mode=policy.mode,
        table=table,
        ranking=ranking,
        failed=failed & table.alive,
        checks=tuple(checks),
        fallback=fallback,
    )


def decide_or_raise(policy: Policy, nodes: NodeTable | Sequence[NodeRecord | Mapping[str, Any]], **kw: Any) -> Decision:
    """Like decide(), but raise NoQualifyingNode (carrying the decision) when nothing ranks."""
    decision = decide(policy, nodes, **kw)
    if not len(decision.ranked):
        raise NoQualifyingNode(decision)
    return decision
