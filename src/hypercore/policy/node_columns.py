"""A NodeTable straight from parsed JSON, checked a column at a time.

`parse_node_records` validates each record with pydantic: about 10 µs a node,
a second at 100,000 nodes, before the engine even starts. Here the records are
read row by row into columns with C-level calls (one dict merge and one
itemgetter per node) and each column is checked at once: the set of value
types, NumPy bounds and finiteness. The checks accept only what NodeRecord
accepts and give the same values. Anything they do not accept, or are not
sure of, goes the old way, `parse_node_records`, so every error (its node
index, field and wording) is exactly what it always was.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from operator import is_not, itemgetter
from typing import Any

import numpy as np

from hypercore.policy.gcpause import gc_paused
from hypercore.policy.nodes import REGION_CHARS, NodeTable, intern_capabilities, parse_node_records
from hypercore.policy.registry import DEFAULT_REGISTRY, RESOURCES, MetricRegistry

_MISSING: Any = object()  # a key left out (null is not the same for name, status, admitted)
_NAME_CHARS = (1, 256)  # NodeRecord.name's length bounds
_NUMBER_TYPES = frozenset({int, float, type(None)})


class _NotFast(Exception):
    """The columns cannot be taken as they are; parse_node_records decides (and names the problem)."""


def _types(column: Sequence[Any]) -> set[type]:
    return set(map(type, column))


def _numbers(name: str, column: tuple[Any, ...], maximum: float | None) -> np.ndarray:
    """A float64 column (NaN for null or missing) if every value is a JSON number within bounds."""
    unknown = column.count(None)
    if unknown == len(column):  # no node says (resources in a file of links and prices, say)
        return np.full(unknown, np.nan)
    if not _types(column) <= _NUMBER_TYPES:  # bool, str ("10"), lists: refused or coerced by pydantic
        raise _NotFast(name)
    try:
        values = np.array(column, dtype=np.float64)
    except (OverflowError, TypeError, ValueError):  # an int too large for a float
        raise _NotFast(name) from None
    nan = np.isnan(values)
    if np.count_nonzero(nan) != unknown or np.isinf(values).any():
        raise _NotFast(name)  # a NaN or infinity given as a value (an API caller, not JSON)
    if (values < 0).any() or (maximum is not None and (values > maximum).any()):  # NodeRecord's range
        raise _NotFast(name)
    return values


def _columns(items: list[Any], registry: MetricRegistry = DEFAULT_REGISTRY) -> NodeTable:
    if not _types(items) <= {dict}:
        raise _NotFast("records")
    n = len(items)
    keys = ("name", "status", "admitted", "capabilities", "region", *registry.names, *RESOURCES)
    defaults = dict.fromkeys(keys)
    defaults.update(name=_MISSING, status=_MISSING, admitted=_MISSING)
    rows = map(itemgetter(*keys), map(defaults.__or__, items))  # defaults | record: the record's values win
    cols = dict(zip(keys, zip(*rows))) if items else {k: () for k in keys}
    names, statuses, admitted, caps = cols["name"], cols["status"], cols["admitted"], cols["capabilities"]
    if n and (_types(names) != {str}
              or not _NAME_CHARS[0] <= min(map(len, names)) <= max(map(len, names)) <= _NAME_CHARS[1]):
        raise _NotFast("name")  # a name missing, not a string, too short or too long
    index = dict(zip(names, range(n)))
    if len(index) != n:
        raise _NotFast("name")  # a name twice
    status_types, cap_types = _types(statuses), _types(caps)
    if not status_types <= {str, object} or not _types(admitted) <= {bool, object}:
        raise _NotFast("status")
    if not cap_types <= {list, type(None)}:
        raise _NotFast("capabilities")
    if type(None) in cap_types:
        capabilities = [None if c is None else tuple(c) for c in caps]
    else:
        capabilities = list(map(tuple, caps))
    try:
        interned = intern_capabilities(capabilities)  # hashes each node's tuple
    except TypeError:  # an object or list inside a list: not hashable, and not a capability
        raise _NotFast("capabilities") from None
    if not all(_types(c) <= {str} for c in interned[1] if c is not None):
        raise _NotFast("capabilities")
    regions = cols["region"]
    region_types = _types(regions)
    if not region_types <= {str, type(None)} or (
            str in region_types and max(len(r) for r in regions if r is not None) > REGION_CHARS):
        raise _NotFast("region")
    values = {m.name: _numbers(m.name, cols[m.name], m.maximum) for m in registry}
    values.update({name: _numbers(name, cols[name], None) for name in RESOURCES})
    if object in status_types:  # left out: alive, as NodeRecord's default says
        statuses = tuple("alive" if s is _MISSING else s for s in statuses)
    alive = np.fromiter(map("alive".__eq__, statuses), dtype=bool, count=n)
    alive &= np.fromiter(map(is_not, admitted, repeat(False)), dtype=bool, count=n)  # admitted unless false
    return NodeTable.from_columns(names=names, index=index, statuses=statuses, alive=alive, values=values,
                                  capabilities=interned, registry=registry,
                                  regions=regions if str in region_types else None)


def table_from_json(data: Any, source: str = "nodes", registry: MetricRegistry = DEFAULT_REGISTRY) -> NodeTable:
    """The NodeTable of a JSON list of node records or of an object with a `nodes` list.

    Same acceptance and the same PolicyError as `NodeTable.from_records(parse_node_records(data, source))`,
    several times faster on large clusters.
    """
    items = data.get("nodes") if isinstance(data, dict) else data
    if type(items) is list:
        try:
            with gc_paused():
                return _columns(items, registry)
        except _NotFast:
            pass
    return NodeTable.from_records(parse_node_records(data, source, registry), registry)
