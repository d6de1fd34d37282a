"""Filter plugins: each turns one kind of hard constraint into Checks over the node table.

A Check (policy.decision) is a mask of the alive rows that break it, a mask
of the rows that lack what it reads (when that fails them), and how each
rejection reads. The engine (policy.engine) runs every filter of its
pipeline, ORs their masks and keeps their Checks for the explanation, like
kube-scheduler's Filter plugins or Nomad's feasibility checkers.

A filter has two halves, so a decision does only the work that needs both
the policy and the table:
- `prepare(policy)`, once per Policy object: what the filter reads from the
  policy (None when the policy does not use it);
- `checks(prepared, table, request, enforce)`, per decision.

`absolute` filters hold in every mode, permissive fallback included: the
workload's own needs (capabilities, resources) and the origin's exclusions.
Aliveness is not a plugin: every stage reads alive rows only, and a node that
is not alive is reported as such (Decision.rejected).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from hypercore.policy.decision import Check
from hypercore.policy.nodes import NodeTable


class Request(NamedTuple):
    """What one decision is asked besides the policy: the workload's needs and the origin's exclusions."""

    capabilities: tuple[str, ...] = ()  # the workload's own (exec, container): hold in every mode
    resources: tuple[float, float] | None = None  # (cpu cores, memory MB) it reserves
    exclude: Mapping[str, str] | None = None  # node -> reason (outlier ejection), whatever the policy says
    extra: Mapping[str, Any] | None = None  # for filters of other pipelines


NO_REQUEST = Request()  # a decision over the policy alone (policy explain, dry runs without a spec)


class Filter:
    """A filter plugin (see the module docstring). Subclasses set `name` and override checks().

    `prepare(policy)` returning something false (None, ()) means the policy gives this filter
    nothing to check, whatever the request: the engine then never calls it for that policy.
    A filter that reads only the request sets `uses_request_only`: it is skipped for NO_REQUEST.
    """

    name = "filter"
    absolute = False
    uses_request_only = False

    def prepare(self, policy: Any) -> Any:
        """What this filter needs from `policy`, once per Policy object. Default: active (True)."""
        return True

    def checks(self, prepared: Any, table: NodeTable, request: Request, enforce: bool) -> list[Check]:
        raise NotImplementedError


class Thresholds(Filter):
    """The policy's rules on metrics (max_latency_ms, min_reputation_score, ...; policy.registry).

    Enforce mode fails a node that does not report a ruled metric; permissive lets it pass.
    """

    name = "thresholds"

    def prepare(self, policy: Any) -> tuple[tuple[str, str, bool, float, str], ...]:
        rules = policy.rules
        return tuple((m.rule, m.name, m.rule_is_lower_bound, limit, m.rule_label(limit))
                     for m in policy.registry.ruled if (limit := rules.limit(m)) is not None)

    def checks(self, prepared: Any, table: NodeTable, request: Request, enforce: bool) -> list[Check]:
        if not prepared:
            return []
        tp = table._prepared
        out = []
        for key, metric, lower_bound, limit, label in prepared:
            column = tp.alive_columns[metric]  # NaN where unknown or not alive: never a violation
            violated = column < limit if lower_bound else column > limit
            count = int(np.count_nonzero(violated))
            if enforce:
                out.append(Check._new(key, label, metric, violated, tp.alive_unknown[metric], count,
                                      tp.alive_unknown_count[metric]))
            else:
                out.append(Check._new(key, label, metric, violated, None, count, None))
        return out


def capability_checks(table: NodeTable, capabilities: Any, treat_unknown_as_failure: bool) -> list[Check]:
    tp = table._prepared
    unknown = tp.alive_unknown_caps if treat_unknown_as_failure else None
    unknown_count = tp.alive_unknown_caps_count if treat_unknown_as_failure else None
    out = []
    for cap in capabilities:
        lacking, lacking_count = tp.lacking_capability(table, cap)
        out.append(Check._new("required_capabilities", f"missing capability {cap}", None, lacking, unknown,
                              lacking_count, unknown_count))
    return out


class PolicyCapabilities(Filter):
    """The policy's required_capabilities: soft in permissive mode (a node that says nothing passes)."""

    name = "policy_capabilities"

    def prepare(self, policy: Any) -> tuple[str, ...]:
        return tuple(policy.rules.required_capabilities or ())

    def checks(self, prepared: Any, table: NodeTable, request: Request, enforce: bool) -> list[Check]:
        if not prepared:
            return []
        needs = request.capabilities  # checked by WorkloadCapabilities, in every mode
        return capability_checks(table, [c for c in prepared if c not in needs] if needs else prepared, enforce)


class WorkloadCapabilities(Filter):
    """The workload's own needs (exec, container): a node must advertise each one, in every mode."""

    name = "workload_capabilities"
    absolute = True
    uses_request_only = True

    def checks(self, prepared: Any, table: NodeTable, request: Request, enforce: bool) -> list[Check]:
        if not request.capabilities:
            return []
        return capability_checks(table, sorted(set(request.capabilities)), treat_unknown_as_failure=True)


_RESOURCES = (("cpu", "cpu_free", "cpu_total", ""), ("memory", "mem_free_mb", "mem_total_mb", " MB"))


class Resources(Filter):
    """A node whose free capacity cannot take the workload (free < asked) is never ranked.

    A node that does not say what is free is given the benefit of the doubt; it refuses if it must.
    """

    name = "resources"
    absolute = True
    uses_request_only = True

    def checks(self, prepared: Any, table: NodeTable, request: Request, enforce: bool) -> list[Check]:
        if request.resources is None:
            return []
        out = []
        for (what, free_key, total_key, unit), asks in zip(_RESOURCES, request.resources):
            if not asks or asks <= 0:
                continue
            free, total = table.columns[free_key], table.columns[total_key]
            short = np.less(free, asks - 1e-9) & table.alive  # NaN compares False

            def detail(i: int, free: np.ndarray = free, total: np.ndarray = total, what: str = what,
                       unit: str = unit, asks: float = asks) -> str:
                of = "" if np.isnan(total[i]) else f" of {total[i]:g}"
                # Below 0 only by what an origin counts until the node's next beacon (over-counted on purpose,
                # hypercore.placement.unreported): none is free.
                return f"insufficient {what} (free {max(0.0, free[i]):g}{of}{unit}, asks {asks:g}{unit})"

            out.append(Check._new("resources", f"insufficient {what}", None, short, None,
                                  int(np.count_nonzero(short)), None, detail))
        return out


class Excluded(Filter):
    """Nodes the caller excludes, with a reason each (the origin's outlier ejection): one check per reason."""

    name = "excluded"
    absolute = True
    uses_request_only = True

    def checks(self, prepared: Any, table: NodeTable, request: Request, enforce: bool) -> list[Check]:
        if not request.exclude:
            return []
        by_reason: dict[str, list[int]] = {}
        for name, reason in request.exclude.items():
            row = table._index.get(name)
            if row is not None and table.alive[row]:
                by_reason.setdefault(reason, []).append(row)
        out = []
        for reason, rows in sorted(by_reason.items()):
            mask = np.zeros(len(table), dtype=bool)
            mask[rows] = True
            out.append(Check._new("excluded", reason, None, mask, None, len(rows), None))
        return out


# The default pipeline's filters, in the order their reasons are reported.
DEFAULT_FILTERS: tuple[Filter, ...] = (Thresholds(), PolicyCapabilities(), WorkloadCapabilities(), Resources(),
                                       Excluded())
