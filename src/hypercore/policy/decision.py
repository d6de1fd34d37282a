"""The one object that explains a placement: who ranks where, who was rejected and why.

CLI tables, logs, API responses and metrics all render a Decision. Per-node
objects are built only when read, so a decision over 100,000 nodes costs the
columns it was computed from, not 100,000 Python objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Generic, TypeVar, overload

import numpy as np

from hypercore.policy.nodes import NodeTable
from hypercore.policy.registry import DEFAULT_REGISTRY

# The score components of the default metric registry (a decision carries its own: Ranking.components).
COMPONENTS: tuple[str, ...] = DEFAULT_REGISTRY.components
_NOT_POLICY_RULES = frozenset({"excluded", "resources"})

_T = TypeVar("_T")


class cached_property(Generic[_T]):  # named after functools.cached_property
    """functools.cached_property without its per-instance lock (Python 3.11 takes
    one on every first read, which costs more than the values computed here).
    Two threads reading at once may both compute; both get equal values."""

    def __init__(self, func: Callable[[Any], _T]) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> cached_property[_T]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> _T: ...
    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)
        return value


@dataclass(frozen=True)
class RankedNode:
    node: str
    score: float
    components: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "score": self.score, "components": dict(self.components)}


def _ranked_node(node: str, score: float, components: dict[str, float], _new: Any = object.__new__) -> RankedNode:
    # RankedNode(node, score, components) without the frozen dataclass's
    # object.__setattr__ per field: half the cost, an equal object.
    # Keep in step with RankedNode's fields (it has no __post_init__).
    ranked = _new(RankedNode)
    fields = ranked.__dict__
    fields["node"] = node
    fields["score"] = score
    fields["components"] = components
    return ranked


@cache
def ranked_builder(components: tuple[str, ...]) -> Callable[..., list[RankedNode]]:
    """A function building RankedNodes whose components dict is a literal with these keys.

    Generated once per tuple of components (as namedtuple and dataclasses generate code):
    dict(zip(components, values)) costs three times as much, a microsecond per top-5 that
    a 100-node decision (~17 µs) notices. The keys are repr()s of the registry's names.
    """
    values = [f"c{i}" for i in range(len(components))]
    literal = ", ".join(f"{name!r}: {value}" for name, value in zip(components, values))
    unpack = "".join(f"{value}, " for value in values)
    source = (f"lambda names, rows, scores, parts, new: [new(names[row], score, {{{literal}}}) "
              f"for row, score, ({unpack}) in zip(rows, scores, parts)]")
    return eval(source)  # noqa: S307 - built from the registry's component names only, each written as repr()


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
    detail: Callable[[int], str] | None = field(default=None, compare=False, repr=False)  # row → its reason

    @classmethod
    def _new(
        cls,
        rule: str,
        label: str,
        metric: str | None,
        violated: np.ndarray,
        unknown: np.ndarray | None,
        violated_count: int | None,
        unknown_count: int | None,
        detail: Callable[[int], str] | None = None,
    ) -> Check:
        # Check(...) without the frozen dataclass's object.__setattr__ per
        # field (the engine builds one per rule per decision). Keep in step
        # with the fields above.
        check = object.__new__(cls)
        check.__dict__.update(
            rule=rule, label=label, metric=metric, violated=violated, unknown=unknown,
            violated_count=violated_count, unknown_count=unknown_count, detail=detail,
        )
        return check

    @property
    def unknown_label(self) -> str:
        """The reason given when a node lacks what this check reads."""
        return f"{self.metric} unknown" if self.metric else "capabilities unknown"

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

    def __init__(self, names: tuple[str, ...], order: np.ndarray, scores: np.ndarray, parts: np.ndarray,
                 components: tuple[str, ...] = COMPONENTS, build: Callable[..., list[RankedNode]] | None = None) -> None:
        self._names = names
        self._rows = order  # table rows, best first
        self._pick: np.ndarray | None = None  # see _picked
        self._scores = scores  # aligned with order (or with pick)
        self._parts = parts  # shape (len(components), len(order)), aligned with order (or with pick)
        self._len = len(order)
        self.components = components  # the name of each row of parts
        self._build = build or ranked_builder(components)

    @classmethod
    def _picked(
        cls, names: tuple[str, ...], order: np.ndarray, pick: np.ndarray, scores: np.ndarray, parts: np.ndarray,
        components: tuple[str, ...] = COMPONENTS, build: Callable[..., list[RankedNode]] | None = None,
    ) -> Ranking:
        """Like Ranking(names, order, scores[pick], parts[:, pick]), gathering scores only when read.

        `build` is ranked_builder(components), if the caller has it at hand."""
        ranking = cls(names, order, scores, parts, components, build)
        ranking._pick = pick
        return ranking

    def __len__(self) -> int:
        return self._len

    def _range(self, start: int, stop: int) -> list[RankedNode]:
        if self._pick is None:
            scores, parts = self._scores[start:stop], self._parts[:, start:stop]
        else:
            where = self._pick[start:stop]
            scores, parts = self._scores.take(where), self._parts.take(where, axis=1)
        rows = self._rows[start:stop]
        # One conversion per array, not per item: tolist() gives the same
        # Python floats as float() on each element.
        return self._build(self._names, rows.tolist(), scores.tolist(), parts.T.tolist(), _ranked_node)

    @overload
    def __getitem__(self, i: int) -> RankedNode: ...
    @overload
    def __getitem__(self, i: slice) -> list[RankedNode]: ...
    def __getitem__(self, i: int | slice) -> RankedNode | list[RankedNode]:
        if isinstance(i, slice):
            start, stop, step = i.indices(self._len)
            if step == 1:
                return self._range(start, stop) if start < stop else []
            return [self[j] for j in range(start, stop, step)]
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(i)
        return self._range(i, i + 1)[0]

    def __iter__(self) -> Iterator[RankedNode]:
        for start in range(0, self._len, 256):
            yield from self._range(start, min(start + 256, self._len))

    @property
    def node_names(self) -> list[str]:
        names = self._names
        return [names[i] for i in self._rows.tolist()]


def _minus_count(item: tuple[str, int]) -> int:
    return -item[1]


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
        self.candidates = len(ranking)  # nodes ranked before any limit
        self._failed = failed  # alive rows that broke a rule
        self._checks = checks

    @classmethod
    def _from_engine(
        cls,
        policy: str,
        mode: str,
        table: NodeTable,
        ranking: Ranking,
        failed: np.ndarray,
        checks: tuple[Check, ...],
        fallback: bool,
        passed: int,
        candidates: int | None = None,
    ) -> Decision:
        """Decision(...) as built once per placement: positional, and with the
        `passed` count the engine already knows. Sets what __init__ sets."""
        decision = object.__new__(cls)
        decision.__dict__.update(
            policy=policy, mode=mode, table=table, ranked=ranking, fallback=fallback,
            _failed=failed, _checks=checks, passed=passed,  # passed: the cached_property's slot
            candidates=len(ranking) if candidates is None else candidates,
        )
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
            if unknown and (check.unknown_label, unknown) not in counts:
                # Every capability check shares one "capabilities unknown" mask.
                counts.append((check.unknown_label, unknown))
        # Stable sort keeps rule order among equal counts.
        return sorted(counts, key=_minus_count) if len(counts) > 1 else counts

    @cached_property
    def violations(self) -> dict[str, int]:
        """Nodes per broken rule (policy key), unknown metrics included; for metrics."""
        alive = self.table.alive
        bad_by_rule: dict[str, np.ndarray] = {}
        for check in self._checks:
            if check.rule in _NOT_POLICY_RULES:
                continue  # the origin's outlier ejection and the workload's own fit are no rules of the policy
            bad = check.violated if check.unknown is None else check.violated | check.unknown
            # A node counts once per rule, however many capabilities it lacks.
            bad_by_rule[check.rule] = bad | bad_by_rule[check.rule] if check.rule in bad_by_rule else bad
        counts = {rule: int(np.count_nonzero(bad & alive)) for rule, bad in bad_by_rule.items()}
        return {rule: n for rule, n in counts.items() if n}

    @cached_property
    def summary(self) -> str:
        head = f"{self.passed}/{self.total} nodes match policy '{self.policy}'"
        reasons = ", ".join(f"{n} {label}" for label, n in self.reason_counts)
        text = f"{head}: {reasons}" if reasons else head
        if self.fallback:
            text += f"; permissive fallback: ranking all {self.candidates} alive nodes"
        return text

    @cached_property
    def _rejected_rows(self) -> np.ndarray:
        return np.flatnonzero(~self.table.alive | self._failed)

    @property
    def rejected_count(self) -> int:
        return len(self._rejected_rows)

    @cached_property
    def rejected(self) -> list[RejectedNode]:
        """Every node that is not alive or broke a rule, with each reason, in table order."""
        return self.rejected_first(None)

    def rejected_first(self, limit: int | None) -> list[RejectedNode]:
        """The first `limit` rejected nodes (None: all), reasons built only for those."""
        table = self.table
        bad = self._rejected_rows if limit is None else self._rejected_rows[:limit]
        out: list[RejectedNode] = []
        for i in bad:
            i = int(i)
            if not table.alive[i]:
                out.append(RejectedNode(table.names[i], (f"not alive (status {table.statuses[i]})",)))
                continue
            reasons: list[str] = []
            for check in self._checks:
                if check.violated[i] and check.detail is not None:
                    reasons.append(check.detail(i))
                elif check.violated[i]:
                    value = table.columns[check.metric][i] if check.metric else None
                    reasons.append(check.label if value is None else f"{check.label} (is {value:g})")
                elif check.unknown is not None and check.unknown[i] and check.unknown_label not in reasons:
                    reasons.append(check.unknown_label)
            out.append(RejectedNode(table.names[i], tuple(reasons)))
        return out

    @property
    def top(self) -> RankedNode | None:
        return self.ranked[0] if len(self.ranked) else None

    def to_dict(self, limit: int | None = None) -> dict[str, Any]:
        """The JSON form printed by `policy explain --json` and returned by the API."""
        ranked = self.ranked if limit is None else self.ranked[:limit]
        out = {
            "policy": self.policy,
            "mode": self.mode,
            "fallback": self.fallback,
            "ranked": [r.to_dict() for r in ranked],
            "rejected": [r.to_dict() for r in (self.rejected if limit is None else self.rejected_first(limit))],
            "summary": self.summary,
        }
        if limit is not None:  # capped lists say how much they left out
            out["ranked_more"] = max(0, len(self.ranked) - limit)
            out["rejected_more"] = max(0, self.rejected_count - limit)
        return out
