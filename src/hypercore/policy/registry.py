"""The one place a node metric is declared: its unit, which way is better, the range a node may
report, the policy rule that bounds it, its score component, weight and scale, how it is printed.

Everything that lists metrics derives from a MetricRegistry: the node record
and table columns (policy.nodes), the policy model's rule, weight and scale
keys (policy.model), the engine's threshold filters and score rows
(policy.filters, policy.scoring), the decision's components, the beacon's
gauges and the cluster view's records. Adding a metric is one `Metric(...)`
in DEFAULT_METRICS (or, for a test or an out-of-tree build, a registry of
its own: `DEFAULT_REGISTRY.extended(Metric(...))` with
`policy.model.policy_model(registry)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Metric:
    """One node metric (a column of the node table)."""

    name: str  # the node record key and table column, e.g. "latency_ms"
    unit: str  # as printed after a value: "ms", "%", "per GB", "" (a ratio or a count)
    doc: str  # what a node's value means
    higher_is_better: bool = False
    maximum: float | None = None  # a node may report 0..maximum (None: no upper bound); finite always
    rule: str | None = None  # the policy rule key that bounds it ("max_latency_ms"); None: no rule
    rule_doc: str = ""  # the rule's description in `policy schema`
    component: str | None = None  # its score component ("latency"); None: not scored
    default_scale: float | None = None  # fixed normalization: 1 - value / scale; None: value is the score (0..1)
    format: str = "g"  # how a value is printed in reasons ("latency_ms > 100 (is 140)")

    @property
    def rule_is_lower_bound(self) -> bool:
        """A rule on a higher-is-better metric is a minimum (min_reputation_score), else a maximum."""
        return self.higher_is_better

    @property
    def weight_key(self) -> str | None:
        return None if self.component is None else f"{self.component}_weight"

    @property
    def scale_key(self) -> str | None:
        """The key under scoring.scales (the metric's name), for scored metrics with a scale."""
        return None if self.component is None or self.default_scale is None else self.name

    def rule_label(self, limit: float) -> str:
        """How a rule reads in summaries and reasons: "latency_ms > 100" (what fails it)."""
        return f"{self.name} {'<' if self.rule_is_lower_bound else '>'} {format(limit, self.format)}"

    def shown(self, value: float) -> str:
        return format(value, self.format)


class MetricRegistry:
    """An ordered set of metrics: the order rules, reasons and score components are reported in."""

    def __init__(self, metrics: tuple[Metric, ...]) -> None:
        names = [m.name for m in metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique: {names}")
        keys = [k for m in metrics for k in (m.rule, m.component) if k]
        if len(set(keys)) != len(keys):
            raise ValueError(f"rule keys and components must be unique: {keys}")
        self.metrics = metrics

    def extended(self, *metrics: Metric) -> MetricRegistry:
        """A new registry with `metrics` after these ones."""
        return MetricRegistry((*self.metrics, *metrics))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.metrics)

    def __getitem__(self, name: str) -> Metric:
        return self.by_name[name]

    @cached_property
    def by_name(self) -> dict[str, Metric]:
        return {m.name: m for m in self.metrics}

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    @cached_property
    def ruled(self) -> tuple[Metric, ...]:
        """Metrics a policy rule bounds, in order."""
        return tuple(m for m in self.metrics if m.rule)

    @cached_property
    def rule_keys(self) -> tuple[str, ...]:
        return tuple(m.rule for m in self.ruled)  # type: ignore[misc]

    @cached_property
    def scored(self) -> tuple[Metric, ...]:
        """Metrics that feed the score, in the order of the score components."""
        return tuple(m for m in self.metrics if m.component)

    @cached_property
    def components(self) -> tuple[str, ...]:
        return tuple(m.component for m in self.scored)  # type: ignore[misc]


# What a node offers, as its beacon says (free = total minus what its workloads reserve). Not
# policy metrics: they filter a spawn that does not fit (every mode, policy.filters.Resources), and
# place by allocation when a policy asks for a strategy.
RESOURCES: tuple[str, ...] = ("cpu_total", "cpu_free", "mem_total_mb", "mem_free_mb")

DEFAULT_METRICS: tuple[Metric, ...] = (
    Metric("latency_ms", "ms", "median round trip from the origin", rule="max_latency_ms",
           rule_doc="Highest median RTT in ms.", component="latency", default_scale=200.0),
    Metric("jitter_ms", "ms", "variation of the round trip", rule="max_jitter_ms", rule_doc="Highest jitter in ms."),
    Metric("packet_loss", "%", "probes lost, percent", maximum=100, rule="max_packet_loss",
           rule_doc="Highest packet loss, percent (0..100)."),
    Metric("price_per_gb", "per GB", "what the node asks per GB", rule="max_price_per_gb",
           rule_doc="Highest price per GB.", component="price", default_scale=1.0),
    Metric("reputation", "", "earned from evidence other nodes recorded (0..1)", higher_is_better=True,
           maximum=1, rule="min_reputation_score", rule_doc="Lowest reputation (0..1).", component="reputation"),
    Metric("queue_depth", "", "workloads assigned and not yet finished", rule="max_queue_depth",
           rule_doc="Most workloads assigned and not yet finished.", component="queue", default_scale=100.0),
)

DEFAULT_REGISTRY = MetricRegistry(DEFAULT_METRICS)
