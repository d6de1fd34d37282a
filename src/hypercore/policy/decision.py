"""The one object that explains a placement: who ranks where, who was rejected and why.

CLI tables, logs, API responses and metrics all render a Decision. Per-node
objects are built only when read, so a decision over 100,000 nodes costs the
columns it was computed from, not 100,000 Python objects.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, overload

import numpy as np

from hypercore.policy.nodes import NodeTable

COMPONENTS: tuple[str, ...] = ("latency", "price", "reputation", "queue")


@dataclass(frozen=True)
class RankedNode:
    node: str
    score: float
    components: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "score": self.score, "components": dict(self.components)}


@dataclass(frozen=True)
class RejectedNode:
    node: str
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Check:
    """One rule as applied: which nodes broke it and which lacked the metric.

    Only alive rows of `violated` and `unknown` are ever read (a node that is
    not alive is reported as such), so the engine may leave dead rows False.
    `violated` and `unknown` never both hold for a row. The engine also passes
    their counts over alive rows, so summaries need not count again.
    """

    rule: str  # the policy key, e.g. "max_latency_ms" (the violations metric label)
    label: str  # as shown in summaries, e.g. "latency_ms > 100"
    metric: str | None  # the node metric read, None for capability checks
    violated: np.ndarray  # bool per table row
    unknown: np.ndarray | None  # bool per table row; None when unknown values pass
    violated_count: int | None = field(default=None, compare=False, repr=False)  # alive rows violating
    unknown_count: int | None = field(default=None, compare=False, repr=False)  # alive rows unknown

    def counts(self, alive: np.ndarray) -> tuple[int, int]:
        """(alive rows that broke the rule, alive rows that lacked the metric and fail for it)."""
        violated = self.violated_count
        if violated is None:
            violated = int(np.count_nonzero(self.violated & alive))
        if self.unknown is None:
            return violated, 0
        unknown = self.unknown_count
        if unknown is None:
            unknown = int(np.count_nonzero(self.unknown & alive))
        return violated, unknown


class Ranking(Sequence[RankedNode]):
    """Ranked candidates, best first; items are built on access."""

    def __init__(self, names: tuple[str, ...], order: np.ndarray, scores: np.ndarray, parts: np.ndarray) -> None:
        self._names = names
        self._order = order
        self._scores = scores
        self._parts = parts  # shape (4, len(order)), aligned with order

    def __len__(self) -> int:
        return len(self._order)

    @overload
    def __getitem__(self, i: int) -> RankedNode: ...
    @overload
    def __getitem__(self, i: slice) -> list[RankedNode]: ...
    def __getitem__(self, i: int | slice) -> RankedNode | list[RankedNode]:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                return [self[j] for j in range(start, stop, step)]
            if stop <= start:
                return []
            # One conversion per array instead of one per item (tolist() gives
            # the same Python floats as float() on each element).
            names = self._names
            return [
                RankedNode(names[row], score, dict(zip(COMPONENTS, parts)))
                for row, score, parts in zip(
                    self._order[start:stop].tolist(),
                    self._scores[start:stop].tolist(),
                    self._parts[:, start:stop].T.tolist(),
                )
            ]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        parts = {name: float(self._parts[k, i]) for k, name in enumerate(COMPONENTS)}
        return RankedNode(self._names[int(self._order[i])], float(self._scores[i]), parts)

    def __iter__(self) -> Iterator[RankedNode]:
        for start in range(0, len(self), 256):
            yield from self[start : start + 256]

    @property
    def node_names(self) -> list[str]:
        names = self._names
        return [names[i] for i in self._order.tolist()]


class Decision:
    """What the engine decided for one policy over one node table."""

    def __init__(
        self,
        *,
        policy: str,
        mode: str,
        table: NodeTable,
        ranking: Ranking,
        failed: np.ndarray,
        checks: tuple[Check, ...],
        fallback: bool,
    ) -> None:
        self.policy = policy
        self.mode = mode
        self.table = table
        self.ranked = ranking
        self.fallback = fallback
        self._failed = failed  # alive rows that broke a rule
        self._checks = checks

    @classmethod
    def _from_engine(cls, *, passed: int, **kw: Any) -> "Decision":
        """A decision whose `passed` count the engine already knows."""
        decision = cls(**kw)
        decision.__dict__["passed"] = passed  # the cached_property's slot
        return decision

    @property
    def total(self) -> int:
        return len(self.table)

    @cached_property
    def passed(self) -> int:
        return int(np.count_nonzero(self.table.alive & ~self._failed))

    @cached_property
    def reason_counts(self) -> list[tuple[str, int]]:
        """(label, number of nodes) for every reason, most frequent first."""
        counts: list[tuple[str, int]] = []
        table = self.table
        not_alive = len(table) - table._prepared.alive_count
        if not_alive:
            counts.append(("not alive", not_alive))
        alive = table.alive
        for check in self._checks:
            violated, unknown = check.counts(alive)
            if violated:
                counts.append((check.label, violated))
            if unknown:
                counts.append((f"{check.metric} unknown", unknown))
        # Stable sort keeps rule order among equal counts.
        return sorted(counts, key=lambda item: -item[1])

    @cached_property
    def violations(self) -> dict[str, int]:
        """Nodes per broken rule (policy key), unknown metrics included; for metrics."""
        alive = self.table.alive
        out: dict[str, int] = {}
        for check in self._checks:
            if check.violated_count is not None and (check.unknown is None or check.unknown_count is not None):
                n = sum(check.counts(alive))  # disjoint masks: the counts add up
            else:
                bad = check.violated if check.unknown is None else check.violated | check.unknown
                n = int(np.count_nonzero(bad & alive))
            if n:
                out[check.rule] = out.get(check.rule, 0) + n
        return out

    @cached_property
    def summary(self) -> str:
        head = f"{self.passed}/{self.total} nodes match policy '{self.policy}'"
        reasons = ", ".join(f"{n} {label}" for label, n in self.reason_counts)
        text = f"{head}: {reasons}" if reasons else head
        if self.fallback:
            text += f"; permissive fallback: ranking all {len(self.ranked)} alive nodes"
        return text

    @cached_property
    def rejected(self) -> list[RejectedNode]:
        """Every node that is not alive or broke a rule, with each reason, in table order."""
        table = self.table
        bad = np.flatnonzero(~table.alive | self._failed)
        out: list[RejectedNode] = []
        for i in bad:
            i = int(i)
            if not table.alive[i]:
                out.append(RejectedNode(table.names[i], (f"not alive (status {table.statuses[i]})",)))
                continue
            reasons: list[str] = []
            for check in self._checks:
                if check.violated[i]:
                    value = table.columns[check.metric][i] if check.metric else None
                    reasons.append(check.label if value is None else f"{check.label} (is {value:g})")
                elif check.unknown is not None and check.unknown[i]:
                    reasons.append(f"{check.metric} unknown")
            out.append(RejectedNode(table.names[i], tuple(reasons)))
        return out

    @property
    def top(self) -> RankedNode | None:
        return self.ranked[0] if len(self.ranked) else None

    def to_dict(self, limit: int | None = None) -> dict[str, Any]:
        """The JSON form printed by `policy explain --json` and returned by the API."""
        ranked = self.ranked if limit is None else self.ranked[:limit]
        return {
            "policy": self.policy,
            "mode": self.mode,
            "fallback": self.fallback,
            "ranked": [r.to_dict() for r in ranked],
            "rejected": [r.to_dict() for r in self.rejected],
            "summary": self.summary,
        }
