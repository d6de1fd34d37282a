"""The agent's Prometheus metrics, in one registry served on /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hypercore.policy.nodes import METRICS
from hypercore.policy.service import PolicyMetrics

BEACON_GAUGES = METRICS  # one gauge per policy metric, named after it


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.policy = PolicyMetrics(r)
        self.spawn_attempts = Counter(
            "hypercore_spawn_attempts", "Placement attempts on a node, by outcome.", ["outcome"], registry=r
        )
        self.spawns = Counter("hypercore_spawns", "Spawn requests handled by this node, by result.", ["result"], registry=r)
        self.decision_seconds = Histogram(
            "hypercore_placement_decision_seconds",
            "Time to build the candidate view and decide a placement.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=r,
        )
        self.workload_start_seconds = Histogram(
            "hypercore_workload_start_seconds",
            "Time from a placement attempt's arrival on this node to its workload running, by capability.",
            ["capability"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0), registry=r,
        )
        self.beacon_connected = Gauge(
            "hypercore_ibrl_beacon_connected", "1 while this node's beacon is published and fresh.", registry=r
        )
        self.beacon = {
            name: Gauge(f"hypercore_ibrl_beacon_{name}", f"This node's published {name}.", registry=r)
            for name in BEACON_GAUGES
        }
        self.beacon_invalid = Counter(
            "hypercore_beacon_invalid", "Peers' beacons rejected (no beacon data), by cause.", ["cause"], registry=r
        )
        self.members = Gauge("hypercore_cluster_members", "Cluster members by Serf status.", ["status"], registry=r)
        # Both grow with the cluster (hypercore.beacon.tags.refresh_period; docs/scale.md, "Gossip budget").
        self.beacon_refresh = Gauge("hypercore_beacon_refresh_seconds",
                                    "How often this node re-publishes an unchanged beacon.", registry=r)
        self.beacon_max_age = Gauge("hypercore_beacon_max_age_seconds",
                                    "How old a beacon may be before this node calls it stale.", registry=r)
        # Every request this node sends to another node (hypercore.transport), by "METHOD /route/{template}":
        # what a spawn, a failover round or a probe costs in node-to-node calls (docs/scale.md).
        self.node_requests = Counter("hypercore_node_requests", "Node-to-node requests sent by this node, by route.",
                                     ["route"], registry=r)
        # Connections other nodes opened to this one: each a mutual-TLS handshake (the transport keeps them alive,
        # so this grows with peers met anew, not with requests; docs/scale.md, "Per-spawn costs").
        self.peer_connections = Counter("hypercore_peer_connections",
                                        "Connections other nodes opened to this node's API (each a TLS handshake).",
                                        registry=r)
        self.refused_connections = Counter("hypercore_refused_connections",
                                           "Connections to the API closed at once: over a budget (members, "
                                           "strangers, or one stranger's address).", ["budget"], registry=r)
        # Probes from other nodes, answered on UDP at the API's port (hypercore.beacon.echo).
        self.probe_answers = Counter("hypercore_probe_answers", "Probes from other nodes this node answered.", registry=r)
        self.probe_refused = Counter("hypercore_probe_refused",
                                     "Probes this node did not answer: over its rate limit.", registry=r)
        self.workloads = Gauge("hypercore_workloads", "Workloads on this node by state.", ["state"], registry=r)
