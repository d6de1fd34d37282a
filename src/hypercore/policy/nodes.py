"""Node metric records and the columnar snapshot the engine evaluates.

A cluster view changes far less often than decisions are made, so the records
are turned once into a NodeTable (one NumPy column per metric, NaN where a
metric is unknown, capability sets interned) and every decision reads columns
instead of walking Python objects. That is what keeps a top-5 decision over
100,000 nodes within milliseconds. The table also prepares, once, what every
decision would otherwise recompute whatever the policy (see _Prepared).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from hypercore.policy.errors import PolicyError, Problem, describe
from hypercore.policy.registry import DEFAULT_REGISTRY, RESOURCES, MetricRegistry

# Metrics in the order rules and reasons are reported (declared in policy.registry).
METRICS: tuple[str, ...] = DEFAULT_REGISTRY.names
REGION_CHARS = 64  # a node record's region: at most this long


def _node_value(maximum: float | None) -> Any:
    # strict: "10" is not a number here either (as in policies); an integer still passes as a float.
    return Annotated[float, Field(ge=0, le=maximum, allow_inf_nan=False, strict=True)] | None


class NodeRecordBase(BaseModel):
    """One node as the engine sees it. Any metric may be missing (None).

    The metric fields come from a metric registry (node_record_model); NodeRecord
    is the record of DEFAULT_REGISTRY.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=256)]
    status: str = "alive"
    # False for a gossip member the cluster CA did not admit (a `cluster metrics --json` snapshot
    # lists them): never a candidate, like a node that is not alive.
    admitted: bool = True
    # Where the node says it is (its signed beacon's --region): shown next to the ranking, never scored.
    region: Annotated[str, Field(max_length=REGION_CHARS)] | None = None


@cache
def node_record_model(registry: MetricRegistry) -> type[NodeRecordBase]:
    """The node record of `registry`'s metrics: each one 0..its maximum, then capabilities and resources."""
    fields: dict[str, Any] = {m.name: (_node_value(m.maximum), None) for m in registry}
    fields["capabilities"] = (list[str] | None, None)
    fields.update({name: (_node_value(None), None) for name in RESOURCES})
    return create_model("NodeRecord", __base__=NodeRecordBase, __module__=__name__, __doc__=NodeRecordBase.__doc__,
                        **fields)


NodeRecord = node_record_model(DEFAULT_REGISTRY)


def parse_node_records(data: Any, source: str = "nodes", registry: MetricRegistry = DEFAULT_REGISTRY) -> list[Any]:
    """Accept a JSON list of node records or an object with a `nodes` list (records of `registry`'s metrics)."""
    record_model = node_record_model(registry)
    prefix = ""
    if isinstance(data, dict):
        if "nodes" not in data:
            raise PolicyError([Problem(source, "", "expected a list of nodes or an object with a 'nodes' list")])
        data, prefix = data["nodes"], "nodes"
    if not isinstance(data, list):
        raise PolicyError([Problem(source, prefix, "expected a list of node records")])
    records: list[Any] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, item in enumerate(data):
        where = f"{prefix}[{i}]"
        if not isinstance(item, dict):
            problems.append(Problem(source, where, "expected an object with at least a 'name'"))
            continue
        try:
            record = record_model.model_validate(item)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                loc = ".".join(str(p) for p in err["loc"])
                problems.append(Problem(source, f"{where}.{loc}" if loc else where, describe(err)))
            continue
        if record.name in seen:
            problems.append(Problem(source, f"{where}.name", f"node {record.name!r} appears twice"))
            continue
        seen.add(record.name)
        records.append(record)
    if problems:
        raise PolicyError(problems)
    return records


_MAX_CACHED_CAPABILITIES = 256


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


class _Prepared:
    """Everything a decision reads that depends on the table alone, not on a policy.

    Built once with the table, so a decision only does the policy's own work.
    Per-row masks here are restricted to alive rows: a node that is not alive
    is reported as such and never counted against a rule.
    """

    __slots__ = (
        "alive_count",
        "alive_columns",
        "alive_unknown",
        "alive_unknown_count",
        "alive_unknown_caps",
        "alive_unknown_caps_count",
        "scores_by_name",
        "score_has_unknown",
        "lacking",
        "by_name",
    )

    def __init__(self, table: NodeTable) -> None:
        alive = table.alive
        n = len(table.names)
        self.alive_count = int(np.count_nonzero(alive))
        dead = ~alive
        # NaN compares False, so a rule over these columns flags only alive
        # nodes that report the metric and break the limit.
        self.alive_columns: dict[str, np.ndarray] = {}
        self.alive_unknown: dict[str, np.ndarray] = {}
        self.alive_unknown_count: dict[str, int] = {}
        registry = table.registry
        for metric in registry.names:
            column = table.columns[metric].copy()
            column[dead] = np.nan
            self.alive_columns[metric] = _frozen(column)
            unknown = table.unknown[metric] & alive
            self.alive_unknown[metric] = _frozen(unknown)
            self.alive_unknown_count[metric] = int(np.count_nonzero(unknown))
        unknown_sets = np.fromiter((s is None for s in table.cap_sets), dtype=bool, count=len(table.cap_sets))
        caps_unknown = unknown_sets[table.cap_ids] & alive
        self.alive_unknown_caps = _frozen(caps_unknown)
        self.alive_unknown_caps_count = int(np.count_nonzero(caps_unknown))
        # Rows in name order (the inverse of name_rank): candidates taken in
        # this order come out of a stable sort by score with ties by name.
        by_name = np.empty(n, dtype=np.intp)
        by_name[table.name_rank] = np.arange(n, dtype=np.intp)
        self.by_name = _frozen(by_name)
        # The scored metrics, (components, n) in the registry's component order, columns in
        # name order: one sequential gather serves every score component.
        scored = np.array([table.columns[m.name] for m in registry.scored], dtype=np.float64)
        scored = scored.reshape(len(registry.scored), n)
        self.scores_by_name = _frozen(np.ascontiguousarray(scored[:, by_name]))
        self.score_has_unknown = bool(np.isnan(scored).any())
        # capability -> (alive rows that advertise capabilities, but not this
        # one; their count): an index over the table, filled on first use.
        self.lacking: dict[str, tuple[np.ndarray, int]] = {}

    def lacking_capability(self, table: NodeTable, capability: str) -> tuple[np.ndarray, int]:
        found = self.lacking.get(capability)
        if found is None:
            per_set = np.fromiter(
                (s is not None and capability not in s for s in table.cap_sets), dtype=bool, count=len(table.cap_sets)
            )
            mask = _frozen(per_set[table.cap_ids] & table.alive)
            found = (mask, int(np.count_nonzero(mask)))
            if len(self.lacking) < _MAX_CACHED_CAPABILITIES:  # workloads choose capabilities: stay bounded
                self.lacking[capability] = found
        return found


@dataclass(frozen=True, eq=False)
class NodeTable:
    """Columnar, immutable snapshot of node records (see module docstring)."""

    names: tuple[str, ...]
    statuses: tuple[str, ...]
    alive: np.ndarray
    columns: Mapping[str, np.ndarray]
    unknown: Mapping[str, np.ndarray]
    cap_sets: tuple[frozenset[str] | None, ...]
    cap_ids: np.ndarray
    name_rank: np.ndarray
    _index: dict[str, int] = field(repr=False, default_factory=dict)
    registry: MetricRegistry = field(repr=False, default=DEFAULT_REGISTRY)  # which metrics the columns hold
    regions: tuple[str | None, ...] | None = field(repr=False, default=None)  # None: no node says one
    _prepared: _Prepared = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_prepared", _Prepared(self))

    def __len__(self) -> int:
        return len(self.names)

    def index_of(self, name: str) -> int:
        return self._index[name]

    def record(self, i: int) -> dict[str, Any]:
        """The i-th node as a plain record (for rendering, not for hot paths)."""
        out: dict[str, Any] = {"name": self.names[i], "status": self.statuses[i]}
        for metric in (*self.registry.names, *RESOURCES):
            value = self.columns[metric][i]
            out[metric] = None if np.isnan(value) else float(value)
        caps = self.cap_sets[int(self.cap_ids[i])]
        out["capabilities"] = None if caps is None else sorted(caps)
        out["region"] = self.regions[i] if self.regions else None
        return out

    def region_of(self) -> dict[str, str]:
        """node → region, for the nodes that say one (shown next to a ranking, never scored)."""
        return {n: r for n, r in zip(self.names, self.regions) if r is not None} if self.regions else {}

    def with_added(self, metric: str, extra: Mapping[str, float]) -> "NodeTable":
        """A copy with `extra[name]` added to `metric` of the named nodes (unknown stays unknown).

        Cheap (no record validation): the scheduler uses it for each decision
        to count placements the beacons do not show yet.
        """
        column = self.columns[metric].copy()
        for name, amount in extra.items():
            i = self._index.get(name)
            if i is not None:
                column[i] += amount  # NaN + x stays NaN
        column.flags.writeable = False
        return replace(self, columns={**self.columns, metric: column})

    def with_values(self, metric: str, values: Mapping[str, float]) -> "NodeTable":
        """A copy with `metric` set to `values[name]` for the named nodes (e.g. reputation from evidence)."""
        column = self.columns[metric].copy()
        for name, value in values.items():
            i = self._index.get(name)
            if i is not None:
                column[i] = value
        column.flags.writeable = False
        unknown = np.isnan(column)
        unknown.flags.writeable = False
        return replace(self, columns={**self.columns, metric: column}, unknown={**self.unknown, metric: unknown})

    def with_columns(self, values: Mapping[str, np.ndarray]) -> "NodeTable":
        """A copy with each metric of `values` set to its array, one value per node in `names` order (NaN:
        unknown): what with_values does, for columns worked out for every node at once, in one copy (each
        copy prepares the table for decisions again, an O(N) pass)."""
        columns, unknown = dict(self.columns), dict(self.unknown)
        for metric, array in values.items():
            column = np.array(array, dtype=self.columns[metric].dtype)
            if column.shape != (len(self.names),):
                raise ValueError(f"{metric}: {column.size} values for {len(self.names)} nodes")
            column.flags.writeable = False
            missing = np.isnan(column)
            missing.flags.writeable = False
            columns[metric], unknown[metric] = column, missing
        return replace(self, columns=columns, unknown=unknown)

    @classmethod
    def from_records(cls, records: Iterable[NodeRecordBase | Mapping[str, Any]],
                     registry: MetricRegistry = DEFAULT_REGISTRY) -> "NodeTable":
        record_model = node_record_model(registry)
        items = [r if isinstance(r, NodeRecordBase) else record_model.model_validate(r) for r in records]
        n = len(items)
        names = tuple(r.name for r in items)
        index = dict(zip(names, range(n)))
        if len(index) != n:
            raise ValueError("node names must be unique")
        values = {
            metric: np.fromiter((np.nan if (v := getattr(r, metric, None)) is None else v for r in items),
                                dtype=np.float64, count=n)
            for metric in (*registry.names, *RESOURCES)
        }
        return cls.from_columns(
            names=names,
            index=index,
            statuses=tuple(r.status for r in items),
            alive=np.fromiter((r.status == "alive" and r.admitted for r in items), dtype=bool, count=n),
            values=values,
            capabilities=intern_capabilities([None if r.capabilities is None else tuple(r.capabilities)
                                              for r in items]),
            registry=registry,
            regions=tuple(r.region for r in items),
        )

    @classmethod
    def from_columns(
        cls,
        *,
        names: tuple[str, ...],
        index: dict[str, int],
        statuses: tuple[str, ...],
        alive: np.ndarray,
        values: Mapping[str, np.ndarray],
        capabilities: tuple[np.ndarray, tuple[frozenset[str] | None, ...]],
        registry: MetricRegistry = DEFAULT_REGISTRY,
        regions: Sequence[str | None] | None = None,
    ) -> "NodeTable":
        """A table from validated columns: unique `names` and their `index` (name -> row), one float64
        array per metric of `registry` and per name of RESOURCES (NaN where unknown), and
        `capabilities` as intern_capabilities gives them."""
        n = len(names)
        columns: dict[str, np.ndarray] = {}
        unknown: dict[str, np.ndarray] = {}
        for metric in (*registry.names, *RESOURCES):
            col = np.asarray(values[metric], dtype=np.float64)
            col.flags.writeable = False
            columns[metric] = col
            unk = np.isnan(col)
            unk.flags.writeable = False
            unknown[metric] = unk
        cap_ids, cap_sets = capabilities
        rank = np.empty(n, dtype=np.int64)
        rank[sorted(range(n), key=names.__getitem__)] = np.arange(n)
        alive = np.array(alive, dtype=bool)
        for arr in (cap_ids, rank, alive):
            arr.flags.writeable = False
        return cls(names=names, statuses=statuses, alive=alive, columns=columns, unknown=unknown, cap_sets=cap_sets,
                   cap_ids=cap_ids, name_rank=rank, _index=index, registry=registry,
                   regions=tuple(regions) if regions is not None and any(r is not None for r in regions) else None)


def intern_capabilities(
    capabilities: Sequence[tuple[str, ...] | None],
) -> tuple[np.ndarray, tuple[frozenset[str] | None, ...]]:
    """(per node, the index of its set in the second item; the distinct sets, None for "not advertised").

    A cluster has a few distinct capability sets however many nodes: the distinct tuples are found
    first (a hash per node), then turned into sets.
    """
    set_of: dict[frozenset[str] | None, int] = {}
    id_of = {key: set_of.setdefault(None if key is None else frozenset(key), len(set_of))
             for key in dict.fromkeys(capabilities)}
    cap_ids = np.fromiter(map(id_of.__getitem__, capabilities), dtype=np.int32, count=len(capabilities))
    return cap_ids, tuple(set_of)  # dicts keep insertion order: set i is at index i


def as_table(nodes: NodeTable | Sequence[NodeRecordBase | Mapping[str, Any]],
             registry: MetricRegistry = DEFAULT_REGISTRY) -> NodeTable:
    return nodes if isinstance(nodes, NodeTable) else NodeTable.from_records(nodes, registry)
