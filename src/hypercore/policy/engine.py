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

Cost: everything that depends on the table alone (columns with dead nodes
masked out, unknown masks and counts, the score matrix, capability masks) is
prepared once with the NodeTable, and everything that depends on the policy
alone (rules, labels, weights, scales) once per Policy object. A decision then
does a few vectorized operations per active rule and scores all components of
the candidates in one (4, candidates) array, so its cost is a few dozen NumPy
calls however many nodes there are (plus linear work that only shows at tens
of thousands of nodes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from hypercore.policy.decision import Check, Decision, Ranking
from hypercore.policy.errors import NoQualifyingNode
from hypercore.policy.model import Policy
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

# Score components (rows of the score matrix): latency, price, reputation, queue.
_REPUTATION = 2

# With more candidates than this, a top-`limit` ranking partitions first
# instead of sorting every candidate.
_PARTITION_ABOVE = 1024


class _Plan:
    """What a decision needs from a policy, worked out once per Policy object."""

    __slots__ = (
        "policy",
        "enforce",
        "thresholds",
        "capabilities",
        "capability_set",
        "active",
        "all_active",
        "reputation_at",
        "relative",
        "scale_col",
        "weight_col",
    )

    def __init__(self, policy: Policy) -> None:
        rules, scoring = policy.rules, policy.scoring
        self.policy = policy  # also keeps id(policy) from being reused while cached
        self.enforce = policy.mode == "enforce"
        thresholds = []
        for key, metric, lower_bound in _THRESHOLD_RULES:
            limit = getattr(rules, key)
            if limit is not None:
                label = f"{metric} {'<' if lower_bound else '>'} {limit:g}"
                thresholds.append((key, metric, lower_bound, limit, label))
        self.thresholds = tuple(thresholds)
        self.capabilities = tuple(rules.required_capabilities or ())
        self.capability_set = frozenset(self.capabilities)
        weights = scoring.weights()
        # Components with weight 0 are not computed; they score 0.
        active = [k for k, w in enumerate(weights) if w]
        self.active = np.array(active, dtype=np.intp)
        self.all_active = len(active) == 4
        self.reputation_at = active.index(_REPUTATION) if _REPUTATION in active else None
        self.relative = scoring.normalization == "relative"
        scales = scoring.scales
        every_scale = (scales.latency_ms, scales.price_per_gb, 1.0, scales.queue_depth)
        self.scale_col = np.array([every_scale[k] for k in active], dtype=np.float64)[:, None]
        self.weight_col = np.array([weights[k] for k in active], dtype=np.float64)[:, None]


_PLANS: dict[int, _Plan] = {}
_MAX_PLANS = 64


def _plan(policy: Policy) -> _Plan:
    # Policies are frozen, so a plan stays valid as long as its policy lives;
    # the plan holds the policy, so the id cannot be reused meanwhile.
    plan = _PLANS.get(id(policy))
    if plan is None or plan.policy is not policy:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        plan = _PLANS[id(policy)] = _Plan(policy)
    return plan


def _capability_checks(table: NodeTable, capabilities: Iterable[str], treat_unknown_as_failure: bool) -> list[Check]:
    prepared = table._prepared
    unknown = prepared.alive_unknown_caps if treat_unknown_as_failure else None
    unknown_count = prepared.alive_unknown_caps_count if treat_unknown_as_failure else None
    checks = []
    for cap in capabilities:
        lacking, lacking_count = prepared.lacking_capability(table, cap)
        checks.append(
            Check._new("required_capabilities", f"missing capability {cap}", None, lacking, unknown, lacking_count, unknown_count)
        )
    return checks


def _exclusion_checks(table: NodeTable, exclude: Mapping[str, str]) -> list[Check]:
    """One check per distinct reason, over the alive rows of the excluded nodes present in the table."""
    by_reason: dict[str, list[int]] = {}
    for name, reason in exclude.items():
        row = table._index.get(name)
        if row is not None and table.alive[row]:
            by_reason.setdefault(reason, []).append(row)
    checks = []
    for reason, rows in sorted(by_reason.items()):
        mask = np.zeros(len(table), dtype=bool)
        mask[rows] = True
        checks.append(Check._new("excluded", reason, None, mask, None, len(rows), None))
    return checks


_RESOURCES = (("cpu", "cpu_free", "cpu_total", ""), ("memory", "mem_free_mb", "mem_total_mb", " MB"))


def _resource_checks(table: NodeTable, cpu: float, mem: float) -> list[Check]:
    """One check per resource the workload asks for: free < asked (unknown free passes)."""
    checks = []
    for (what, free_key, total_key, unit), asks in zip(_RESOURCES, (cpu, mem)):
        if not asks or asks <= 0:
            continue
        free, total = table.columns[free_key], table.columns[total_key]
        short = np.less(free, asks - 1e-9) & table.alive  # NaN compares False

        def detail(i: int, free: np.ndarray = free, total: np.ndarray = total, what: str = what,
                   unit: str = unit, asks: float = asks) -> str:
            of = "" if np.isnan(total[i]) else f" of {total[i]:g}"
            return f"insufficient {what} (free {free[i]:g}{of}{unit}, asks {asks:g}{unit})"

        checks.append(Check._new("resources", f"insufficient {what}", None, short, None,
                                 int(np.count_nonzero(short)), None, detail))
    return checks


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


def _rank_by_allocation(table: NodeTable, places: np.ndarray, scores: np.ndarray, strategy: str,
                        limit: int | None) -> np.ndarray:
    """Positions into `scores`: least (spread) or most (binpack) allocated first, then score, then name."""
    if not len(places):
        return np.empty(0, dtype=np.intp)
    with np.errstate(all="ignore"):
        allocated = _allocated(table, table._prepared.by_name.take(places))
    key = allocated if strategy == "spread" else -allocated
    order = np.lexsort((-scores, key))  # stable: equal keys keep name order
    return order if limit is None else order[: max(limit, 0)]


def _score(plan: _Plan, table: NodeTable, positions: np.ndarray) -> np.ndarray:
    """Weighted components, shape (4, len(positions)): latency, price, reputation, queue.

    `positions` are candidates' places in name order (see _candidates).
    """
    m = len(positions)
    if m == 0:
        return np.zeros((4, 0))
    prepared = table._prepared
    values = prepared.scores_by_name.take(positions, axis=1)  # (4, m), a fresh copy
    if not plan.all_active:
        values = values[plan.active]
    rep = plan.reputation_at  # reputation's row in `values`, if scored
    if plan.relative:
        # min-max across the candidates, ignoring unknown values
        lo = np.fmin.reduce(values, axis=1)
        hi = np.fmax.reduce(values, axis=1)
        span = hi - lo
        spread = span > 0  # False when all candidates are equal or none reports the metric
        flat = not spread.all()
        if flat:
            span[~spread] = 1.0
        parts = np.subtract(hi[:, None], values)
        if rep is not None:
            np.subtract(values[rep], lo[rep], out=parts[rep])
        parts /= span[:, None]
        if flat:
            parts[~spread] = 1.0
    else:
        parts = np.divide(values, plan.scale_col)
        np.subtract(1.0, parts, out=parts)
        np.maximum(parts, 0.0, out=parts)
        if rep is not None:
            parts[rep] = values[rep]
    if prepared.score_has_unknown:
        parts[np.isnan(values)] = NEUTRAL
    parts *= plan.weight_col
    if plan.all_active:
        return parts
    full = np.zeros((4, m))
    full[plan.active] = parts
    return full


def _rank(scores: np.ndarray, limit: int | None) -> np.ndarray:
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


def _candidates(table: NodeTable, mask: np.ndarray) -> np.ndarray:
    """Places in name order (indexes into table._prepared.by_name) of the rows where `mask` holds."""
    return mask.take(table._prepared.by_name).nonzero()[0]


def decide(
    policy: Policy,
    nodes: NodeTable | Sequence[NodeRecord | Mapping[str, Any]],
    *,
    limit: int | None = None,
    require_capabilities: Iterable[str] = (),
    require_resources: tuple[float, float] | None = None,
    exclude: Mapping[str, str] | None = None,
) -> Decision:
    """Evaluate `policy` over `nodes`; rank at most `limit` nodes (None: all).

    `require_capabilities` are needs of the workload itself (exec, container):
    unlike policy rules they hold in every mode, fallback included. So does
    `exclude` (node name → reason), e.g. nodes the origin ejected as outliers:
    they are rejected with that reason whatever the policy says. And so does
    `require_resources` (cpu cores, memory MB): a node whose free capacity
    cannot take the workload is never ranked (a node that does not say what is
    free is given the benefit of the doubt; it refuses if it must).
    """
    table = as_table(nodes)
    plan = _plan(policy)
    prepared = table._prepared
    enforce = plan.enforce
    alive = table.alive

    # 1. feasibility. Every mask is over alive rows only (dead rows stay False).
    checks: list[Check] = []
    failed = None
    for key, metric, lower_bound, rule_limit, label in plan.thresholds:
        column = prepared.alive_columns[metric]  # NaN where unknown or not alive: never a violation
        violated = column < rule_limit if lower_bound else column > rule_limit
        count = int(np.count_nonzero(violated))
        if enforce:  # an unknown metric fails the node
            unknown = prepared.alive_unknown[metric]
            checks.append(Check._new(key, label, metric, violated, unknown, count, prepared.alive_unknown_count[metric]))
            if failed is None:
                failed = violated | unknown
            else:
                failed |= violated
                failed |= unknown
        else:
            checks.append(Check._new(key, label, metric, violated, None, count, None))
            if failed is None:
                failed = violated.copy()
            else:
                failed |= violated
    if type(require_capabilities) is tuple and not require_capabilities:
        checks.extend(_capability_checks(table, plan.capabilities, enforce))
        absolute: list[Check] = []
    else:
        # The workload's own needs hold in every mode, fallback included, also
        # when the policy lists the same capability as a (possibly soft) rule.
        needs = set(require_capabilities)
        checks.extend(_capability_checks(table, [c for c in plan.capabilities if c not in needs], enforce))
        absolute = _capability_checks(table, sorted(needs), treat_unknown_as_failure=True)
        checks.extend(absolute)
    needs_caps = bool(absolute)
    capability_checks = len(checks) > len(plan.thresholds)
    if require_resources is not None:
        misfits = _resource_checks(table, *require_resources)
        checks.extend(misfits)
        absolute = [*absolute, *misfits]
    if exclude:
        excluded = _exclusion_checks(table, exclude)
        checks.extend(excluded)
        absolute = [*absolute, *excluded]
    if len(checks) > len(plan.thresholds):
        if failed is None:
            failed = np.zeros(len(table), dtype=bool)
        for check in checks[len(plan.thresholds) :]:
            failed |= check.violated
        if capability_checks and (enforce or needs_caps):
            failed |= prepared.alive_unknown_caps  # the same mask for every capability check that counts it

    # 2. candidates, as places in name order
    if failed is None:
        failed = np.zeros(len(table), dtype=bool)
        places = _candidates(table, alive)
    else:
        places = _candidates(table, np.greater(alive, failed))  # alive and not failed
    passed = len(places)
    fallback = False
    if not passed and not enforce:
        candidates = alive.copy()
        for check in absolute:
            candidates &= ~(check.violated if check.unknown is None else check.violated | check.unknown)
        places = _candidates(table, candidates)
        fallback = len(places) > 0

    # 3. score, 4. rank, 5. limit
    parts = _score(plan, table, places)
    scores = parts.sum(axis=0)
    if policy.strategy is None:
        order = _rank(scores, limit)
    else:
        order = _rank_by_allocation(table, places, scores, policy.strategy, limit)
    ranked_rows = prepared.by_name.take(places.take(order))
    ranking = Ranking._picked(table.names, ranked_rows, order, scores, parts)
    return Decision._from_engine(policy.name, policy.mode, table, ranking, failed, tuple(checks), fallback, passed, len(places))


def decide_or_raise(policy: Policy, nodes: NodeTable | Sequence[NodeRecord | Mapping[str, Any]], **kw: Any) -> Decision:
    """Like decide(), but raise NoQualifyingNode (carrying the decision) when nothing ranks."""
    decision = decide(policy, nodes, **kw)
    if not len(decision.ranked):
        raise NoQualifyingNode(decision)
    return decision
