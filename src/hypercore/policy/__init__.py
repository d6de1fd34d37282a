"""The policy language and the pure placement engine.

Public API:
  Policy, Rules, Scoring, Scales      the policy model (pydantic)
  load_policy_file, loads_policy, parse_policy
  NodeRecord, NodeTable, as_table, parse_node_records
  Metric, MetricRegistry, DEFAULT_REGISTRY   the one declaration of each metric
  decide, decide_or_raise, Decision   the engine and what it returns
  Pipeline, Filter, Request           the engine's filter plugins
  PolicyEngine, PolicyMetrics         current cluster policy + counters
  PolicyError, NoQualifyingNode       errors
"""

from typing import TYPE_CHECKING, Any

from hypercore.policy.decision import Decision, RankedNode, RejectedNode
from hypercore.policy.engine import DEFAULT_PIPELINE, Pipeline, decide, decide_or_raise
from hypercore.policy.filters import Filter, Request
from hypercore.policy.errors import NoQualifyingNode, PolicyError, Problem
from hypercore.policy.loader import load_policy_file, loads_policy, parse_json_strict, parse_policy
from hypercore.policy.model import PERMISSIVE_DEFAULT, Policy, PolicyModels, Rules, Scales, Scoring, policy_models
from hypercore.policy.nodes import METRICS, NodeRecord, NodeTable, as_table, parse_node_records
from hypercore.policy.registry import DEFAULT_REGISTRY, Metric, MetricRegistry

if TYPE_CHECKING:
    from hypercore.policy.service import PolicyEngine, PolicyMetrics


def __getattr__(name: str) -> Any:
    # The stateful service brings prometheus_client; a CLI that only explains a policy never needs it.
    if name in ("PolicyEngine", "PolicyMetrics"):
        from hypercore.policy import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "DEFAULT_PIPELINE",
    "DEFAULT_REGISTRY",
    "Filter",
    "METRICS",
    "Metric",
    "MetricRegistry",
    "Pipeline",
    "PolicyModels",
    "Request",
    "as_table",
    "policy_models",
    "PERMISSIVE_DEFAULT",
    "Decision",
    "NoQualifyingNode",
    "NodeRecord",
    "NodeTable",
    "Policy",
    "PolicyEngine",
    "PolicyError",
    "PolicyMetrics",
    "Problem",
    "RankedNode",
    "RejectedNode",
    "Rules",
    "Scales",
    "Scoring",
    "decide",
    "decide_or_raise",
    "load_policy_file",
    "loads_policy",
    "parse_json_strict",
    "parse_node_records",
    "parse_policy",
]
