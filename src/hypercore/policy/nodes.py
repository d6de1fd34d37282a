"""Node metric records and the columnar snapshot the engine evaluates.

A cluster view changes far less often than decisions are made, so the records
are turned once into a NodeTable (one NumPy column per metric, NaN where a
metric is unknown, capability sets interned) and every decision reads columns
instead of walking Python objects. That is what keeps a top-5 decision over
100,000 nodes within milliseconds. The table also prepares, once, what every
decision would otherwise recompute whatever the policy (see hypercore.policy.prepared).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from hypercore.policy.errors import PolicyError, Problem, describe
from hypercore.policy.prepared import Prepared
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
    _prepared: Prepared = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_prepared", Prepared(self))

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
        """A copy with `extra[name]` added to `metric` of the named nodes (unknown stays unknown)."""
        return self.with_adjusted(added={metric: extra})

    def with_values(self, metric: str, values: Mapping[str, float]) -> "NodeTable":
        """A copy with `metric` set to `values[name]` for the named nodes (e.g. reputation from evidence)."""
        return self.with_adjusted(values={metric: values})

    def with_adjusted(self, values: Mapping[str, Mapping[str, float]] | None = None,
                      added: Mapping[str, Mapping[str, float]] | None = None) -> "NodeTable":
        """A copy in which `values[metric][name]` replaces, then `added[metric][name]` is added to, the named
        nodes' metrics (NaN + x stays NaN: unknown stays unknown); names not in the table are ignored.

        Cheap (no record validation), and one copy for all of it (each copy prepares the table for
        decisions again, an O(N) pass): the scheduler uses it for each decision, for the queue depths the
        chosen nodes answered and the placements the beacons do not show yet.
        """
        values, added = values or {}, added or {}
        columns, unknown = dict(self.columns), dict(self.unknown)
        for metric in (*values, *(m for m in added if m not in values)):
            column = self.columns[metric].copy()
            for name, value in values.get(metric, {}).items():
                if (i := self._index.get(name)) is not None:
                    column[i] = value
            for name, amount in added.get(metric, {}).items():
                if (i := self._index.get(name)) is not None:
                    column[i] += amount
            column.flags.writeable = False
            columns[metric] = column
            if metric in values:
                unknown[metric] = np.isnan(column)
                unknown[metric].flags.writeable = False
        return replace(self, columns=columns, unknown=unknown)

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

    def with_rows(self, records: Iterable[NodeRecordBase], removed: Iterable[str] = ()) -> "NodeTable":
        """A copy in which these records (validated, of this table's registry) replace the rows of their
        nodes or, for a node the table does not have, are added; and the `removed` nodes' rows are gone.

        What a beacon refresh, news or a member's arrival or departure changes, without going through every
        record again (from_records): copies of the columns in NumPy, the name order found again by C's
        sort of the names, and the decision's preparation. New rows go at the end, or, in a table whose
        rows are in name order (a live view's), where their names sort.
        """
        n = len(self.names)
        keep = np.ones(n, dtype=bool)
        keep[[self._index[name] for name in removed if name in self._index]] = False
        replaced: dict[int, NodeRecordBase] = {}
        added: dict[str, NodeRecordBase] = {}
        for record in records:
            i = self._index.get(record.name)
            if i is None or not keep[i]:
                added[record.name] = record
            else:
                replaced[i] = record
        metrics = (*self.registry.names, *RESOURCES)
        get = operator.attrgetter(*metrics)
        new_values = np.array([get(r) for r in added.values()], dtype=np.float64).reshape(len(added), len(metrics))
        columns: dict[str, np.ndarray] = {}
        for j, metric in enumerate(metrics):
            column = self.columns[metric].copy()
            for i, record in replaced.items():
                value = getattr(record, metric)
                column[i] = np.nan if value is None else value
            columns[metric] = np.concatenate((column[keep], new_values[:, j]))
        statuses, regions = list(self.statuses), list(self.regions or (None,) * n)
        cap_sets, cap_ids = list(self.cap_sets), self.cap_ids.copy()
        alive = self.alive.copy()

        def cap_id(record: NodeRecordBase) -> int:
            caps = None if record.capabilities is None else frozenset(record.capabilities)
            try:
                return cap_sets.index(caps)  # a cluster has a few distinct sets
            except ValueError:
                cap_sets.append(caps)
                return len(cap_sets) - 1

        for i, record in replaced.items():
            statuses[i], regions[i], cap_ids[i] = record.status, record.region, cap_id(record)
            alive[i] = record.status == "alive" and record.admitted
        if not added and keep.all():  # the same nodes: their names, index and order stand
            return type(self).from_columns(
                names=self.names, index=self._index, statuses=tuple(statuses), alive=alive, values=columns,
                capabilities=(cap_ids, tuple(cap_sets)), registry=self.registry, regions=regions,
                name_rank=self.name_rank)
        keep_list = keep.tolist()
        names = (*itertools.compress(self.names, keep_list), *added)
        statuses = [*itertools.compress(statuses, keep_list), *(r.status for r in added.values())]
        regions = [*itertools.compress(regions, keep_list), *(r.region for r in added.values())]
        alive = np.concatenate((alive[keep], np.array([r.status == "alive" and r.admitted for r in added.values()],
                                                      dtype=bool)))
        cap_ids = np.concatenate((cap_ids[keep], np.array([cap_id(r) for r in added.values()], dtype=np.int32)))
        index = dict(zip(names, range(len(names))))
        in_order = sorted(names)
        by_name = np.fromiter(map(index.__getitem__, in_order), dtype=np.intp, count=len(names))
        if np.array_equal(self.name_rank, np.arange(n)):  # rows in name order (a live view's): keep them so
            names = tuple(in_order)
            index = dict(zip(names, range(len(names))))
            statuses = np.array(statuses, dtype=object)[by_name].tolist()
            regions = np.array(regions, dtype=object)[by_name].tolist()
            alive, cap_ids = alive[by_name], cap_ids[by_name]
            columns = {metric: column[by_name] for metric, column in columns.items()}
            rank = np.arange(len(names))
        else:
            rank = np.empty(len(names), dtype=np.int64)
            rank[by_name] = np.arange(len(names))
        return type(self).from_columns(
            names=names, index=index, statuses=tuple(statuses), alive=alive, values=columns,
            capabilities=(cap_ids, tuple(cap_sets)), registry=self.registry, regions=regions, name_rank=rank)

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
        metrics = (*registry.names, *RESOURCES)
        # One tuple per record in C (attrgetter), NumPy turning None into NaN: a third of a loop per metric.
        # A record of another registry lacks some of these metrics: unknown (NaN) for it, as before.
        try:
            rows = list(map(operator.attrgetter(*metrics), items))
        except AttributeError:
            rows = [tuple(getattr(r, metric, None) for metric in metrics) for r in items]
        matrix = np.array(rows, dtype=np.float64).reshape(n, len(metrics))
        values = dict(zip(metrics, np.ascontiguousarray(matrix.T)))
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
        name_rank: np.ndarray | None = None,
    ) -> "NodeTable":
        """A table from validated columns: unique `names` and their `index` (name -> row), one float64
        array per metric of `registry` and per name of RESOURCES (NaN where unknown), and
        `capabilities` as intern_capabilities gives them; `name_rank` (each row's place in name order)
        when the caller has it for these names."""
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
        if name_rank is not None:  # the caller's, for these very names
            rank = name_rank
        else:
            rank = np.empty(n, dtype=np.int64)
            rank[np.fromiter(map(index.__getitem__, sorted(names)), dtype=np.intp, count=n)] = np.arange(n)
        alive = np.array(alive, dtype=bool)
        for arr in (cap_ids, rank, alive):
            arr.flags.writeable = False
        return cls(names=names, statuses=statuses, alive=alive, columns=columns, unknown=unknown, cap_sets=cap_sets,
                   cap_ids=cap_ids, name_rank=rank, _index=index, registry=registry,
                   regions=tuple(regions) if regions is not None and regions.count(None) < len(regions) else None)


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
