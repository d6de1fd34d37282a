"""The policy engine's table of the admitted members, kept in step with the view one row at a time.

A beacon refresh, or a member's news (a free-capacity level, its price), changes one row. Building the
table again for it validated every member's record: 138 ms a change at 10,000 members (bench/view.py), and
every node sees every member's changes. Here a member's record is validated once, when its view changes;
the rows changed, added or removed since the last table are patched into a copy of it (NodeTable.with_rows:
copies of a dozen NumPy arrays and C's sort of the names, ≈ 1 ms at 10,000 members).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypercore.policy.nodes import NodeRecordBase, NodeTable, node_record_model
from hypercore.policy.registry import DEFAULT_REGISTRY, MetricRegistry

# Patching adds a capability set it has not seen to the table's list of distinct sets and keeps the ones no
# row uses any more; once this many more than at the last build, the table is built again, which keeps only
# the sets in use (so a build per this many new sets, however many are in use).
CAPABILITY_SETS_ADDED = 64


class EngineTable:
    """Rows by member name; `table()` is the current NodeTable (the same object until a row changes)."""

    def __init__(self, registry: MetricRegistry = DEFAULT_REGISTRY) -> None:
        self._registry = registry
        self._model = node_record_model(registry)
        self._records: dict[str, NodeRecordBase] = {}
        self._changed: set[str] = set()  # rows put since the table was last brought up to date
        self._table: NodeTable | None = None
        self._sets_built = 0  # distinct capability sets at the last build

    def put(self, name: str, record: Mapping[str, Any] | None) -> None:
        """Member `name`'s row (a NodeView.record()), or None: the member is not in the table (not admitted,
        or gone)."""
        if record is None:
            if self._records.pop(name, None) is not None:
                self._changed.add(name)
            return
        self._records[name] = self._model.model_validate(record)
        self._changed.add(name)

    def table(self) -> NodeTable:
        table = self._table
        if table is None or len(table.cap_sets) > self._sets_built + CAPABILITY_SETS_ADDED:
            table = NodeTable.from_records([self._records[n] for n in sorted(self._records)], self._registry)
            self._sets_built = len(table.cap_sets)
        elif self._changed:
            records = self._records
            table = table.with_rows([records[n] for n in self._changed if n in records],
                                    removed=[n for n in self._changed if n not in records])
        self._changed.clear()
        self._table = table
        return table
