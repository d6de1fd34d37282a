"""The policy engine: a pipeline of filter and score plugins over the node table. Pure: no I/O, no clock.

Pipeline (kube-scheduler's Filter → Score, Nomad's feasibility → rank → limit):
  1. filter: every Filter of the pipeline (policy.filters: the policy's metric
     thresholds and capabilities, the workload's capabilities and resources, the
     origin's exclusions) gives Checks over the table's columns;
  2. candidates: alive nodes that passed every check (permissive mode with no
     such node: every alive node that passes the absolute checks, flagged as a
     fallback);
  3. score: one weighted component per scored metric (policy.scoring);
  4. rank: score descending, ties broken by node name ascending (byte order
     of the name, so the order never depends on the input order); or, when the
     policy sets a strategy, by allocation first;
  5. limit: the best `limit` nodes, without sorting the rest.

Which metrics exist, which rules bound them and which feed the score is
declared once, in policy.registry; the plugins read it from the policy.

Cost: everything that depends on the table alone (columns with dead nodes
masked out, unknown masks and counts, the score matrix, capability masks) is
prepared once with the NodeTable, and everything that depends on the policy
alone (each filter's prepare(), the score plan) once per Policy object. A
decision then does a few vectorized operations per active rule and scores all
components of the candidates in one array, so its cost is a few dozen NumPy
calls however many nodes there are (plus linear work that only shows at tens
of thousands of nodes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from hypercore.policy.decision import Check, Decision, Ranking, ranked_builder
from hypercore.policy.errors import NoQualifyingNode
from hypercore.policy.filters import DEFAULT_FILTERS, NO_REQUEST, Filter, Request
from hypercore.policy.model import PolicyBase
from hypercore.policy.nodes import NodeRecordBase, NodeTable, as_table
from hypercore.policy.scoring import MetricScores, rank, rank_by_allocation


class Pipeline:
    """The filters a decision runs, in the order their reasons are reported (the scorers come from the
    policy's metric registry). One place to add a filter: `DEFAULT_PIPELINE.with_filter(MyFilter())`."""

    def __init__(self, filters: tuple[Filter, ...] = DEFAULT_FILTERS) -> None:
        self.filters = filters

    def with_filter(self, plugin: Filter) -> Pipeline:
        return Pipeline((*self.filters, plugin))


DEFAULT_PIPELINE = Pipeline()


class _Plan:
    """What a decision needs from a policy, worked out once per Policy object and pipeline."""

    __slots__ = ("policy", "pipeline", "enforce", "filters", "policy_filters", "scores", "components", "build")

    def __init__(self, policy: PolicyBase, pipeline: Pipeline) -> None:
        self.policy = policy  # also keeps id(policy) from being reused while cached
        self.pipeline = pipeline
        self.enforce = policy.mode == "enforce"
        # The filters this policy activates (prepare() gave something), with what they prepared; and
        # those of them that do not read the request only (what a decision without a request runs).
        self.filters = tuple((f, prepared) for f in pipeline.filters if (prepared := f.prepare(policy)))
        self.policy_filters = tuple((f, p) for f, p in self.filters if not f.uses_request_only)
        self.scores = MetricScores(policy)
        self.components = policy.registry.components
        self.build = ranked_builder(self.components)


_PLANS: dict[tuple[int, int], _Plan] = {}
_MAX_PLANS = 64


def _plan(policy: PolicyBase, pipeline: Pipeline) -> _Plan:
    # Policies are frozen, so a plan stays valid as long as its policy lives;
    # the plan holds the policy, so the id cannot be reused meanwhile.
    key = (id(policy), id(pipeline))
    plan = _PLANS.get(key)
    if plan is None or plan.policy is not policy or plan.pipeline is not pipeline:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        plan = _PLANS[key] = _Plan(policy, pipeline)
    return plan


def _candidates(table: NodeTable, mask: np.ndarray) -> np.ndarray:
    """Places in name order (indexes into table._prepared.by_name) of the rows where `mask` holds."""
    return mask.take(table._prepared.by_name).nonzero()[0]


def decide(
    policy: PolicyBase,
    nodes: NodeTable | Sequence[NodeRecordBase | Mapping[str, Any]],
    *,
    limit: int | None = None,
    require_capabilities: Iterable[str] = (),
    require_resources: tuple[float, float] | None = None,
    exclude: Mapping[str, str] | None = None,
    pipeline: Pipeline = DEFAULT_PIPELINE,
    request: Request | None = None,
) -> Decision:
    """Evaluate `policy` over `nodes`; rank at most `limit` nodes (None: all).

    `require_capabilities` are needs of the workload itself (exec, container):
    unlike policy rules they hold in every mode, fallback included. So does
    `exclude` (node name → reason), e.g. nodes the origin ejected as outliers:
    they are rejected with that reason whatever the policy says. And so does
    `require_resources` (cpu cores, memory MB): a node whose free capacity
    cannot take the workload is never ranked (a node that does not say what is
    free is given the benefit of the doubt; it refuses if it must). `request`
    gives all three at once (and what other filters of `pipeline` read).
    """
    registry = policy.registry
    table = nodes if type(nodes) is NodeTable else as_table(nodes, registry)
    if table.registry is not registry:
        raise ValueError("the policy and the node table hold the metrics of different registries")
    plan = _plan(policy, pipeline)
    if request is None:
        if require_resources is None and not exclude and type(require_capabilities) is tuple \
                and not require_capabilities:
            request = NO_REQUEST
        else:
            request = Request(tuple(require_capabilities), require_resources, exclude)
    enforce = plan.enforce
    alive = table.alive

    # 1. filter. Every mask is over alive rows only (dead rows stay False).
    checks: list[Check] = []
    absolute: list[Check] = []
    failed = None
    for plugin, prepared in plan.policy_filters if request is NO_REQUEST else plan.filters:
        found = plugin.checks(prepared, table, request, enforce)
        if not found:
            continue
        checks += found
        if plugin.absolute:
            absolute += found
        for check in found:
            if failed is None:
                failed = check.violated.copy() if check.unknown is None else check.violated | check.unknown
            else:
                failed |= check.violated
                if check.unknown is not None:
                    failed |= check.unknown

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
    parts = plan.scores.score(table, places)
    scores = parts.sum(axis=0)
    if policy.strategy is None:
        order = rank(scores, limit)
    else:
        order = rank_by_allocation(table, places, scores, policy.strategy, limit)
    ranked_rows = table._prepared.by_name.take(places.take(order))
    ranking = Ranking._picked(table.names, ranked_rows, order, scores, parts, plan.components, plan.build)
    return Decision._from_engine(policy.name, policy.mode, table, ranking, failed, tuple(checks), fallback, passed,
                                 len(places))


def decide_or_raise(policy: PolicyBase, nodes: NodeTable | Sequence[NodeRecordBase | Mapping[str, Any]],
                    **kw: Any) -> Decision:
    """Like decide(), but raise NoQualifyingNode (carrying the decision) when nothing ranks."""
    decision = decide(policy, nodes, **kw)
    if not len(decision.ranked):
        raise NoQualifyingNode(decision)
    return decision
