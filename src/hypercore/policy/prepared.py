"""What every decision reads that depends on the node table alone, not on a policy: prepared once per table."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hypercore.policy.nodes import NodeTable

_MAX_CACHED_CAPABILITIES = 256


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


class Prepared:
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
