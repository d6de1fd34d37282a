"""The cluster's current policy, swapped atomically, and the engine's counters.

This is the stateful edge around the pure engine: it holds the policy that
applies when a spawn brings none, and counts evaluations and violations with
prometheus_client.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from hypercore.policy.decision import Decision
from hypercore.policy.engine import decide
from hypercore.policy.model import PERMISSIVE_DEFAULT, Policy
from hypercore.policy.nodes import NodeRecord, NodeTable


class PolicyMetrics:
    """The spec's engine counters, registered once per registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.evaluations = Counter(
            "hypercore_ibrl_policy_evaluations",
            "Placement decisions made, by policy.",
            ["policy"],
            registry=registry,
        )
        self.violations = Counter(
            "hypercore_ibrl_policy_violations",
            "Nodes that broke a policy rule (or lacked its metric), by policy and rule.",
            ["policy", "rule"],
            registry=registry,
        )

    def record(self, decision: Decision) -> None:
        self.evaluations.labels(policy=decision.policy).inc()
        for rule, count in decision.violations.items():
            self.violations.labels(policy=decision.policy, rule=rule).inc(count)


class PolicyEngine:
    """Holds the cluster policy; readers always see one whole policy.

    A swap replaces one reference (atomic in CPython) and policies are
    immutable, so evaluate() needs no lock; the lock only orders writers.
    """

    def __init__(self, policy: Policy | None = None, metrics: PolicyMetrics | None = None) -> None:
        self._policy = policy or PERMISSIVE_DEFAULT
        self._write_lock = threading.Lock()
        self.metrics = metrics

    @property
    def policy(self) -> Policy:
        return self._policy

    def swap(self, policy: Policy) -> Policy:
        """Install `policy`; return the one it replaced."""
        with self._write_lock:
            old, self._policy = self._policy, policy
        return old

    def evaluate(
        self,
        nodes: NodeTable | Sequence[NodeRecord | Mapping[str, Any]],
        policy: Policy | None = None,
        *,
        limit: int | None = None,
        require_capabilities: Iterable[str] = (),
        require_resources: tuple[float, float] | None = None,
        exclude: Mapping[str, str] | None = None,
    ) -> Decision:
        """Decide with `policy`, or the current cluster policy when None, and count it."""
        decision = decide(policy or self._policy, nodes, limit=limit, require_capabilities=require_capabilities,
                          require_resources=require_resources, exclude=exclude)
        if self.metrics is not None:
            self.metrics.record(decision)
        return decision
