"""What a placement produces: attempts, the outcome, and the errors that end one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypercore.errors import HypercoreError
from hypercore.policy import Decision

# A spawn's answer (also relayed between nodes when forwarded) carries the top of the ranking and counts of
# the rest, never every node of the cluster: the nodes it tried come first, so 10 covers them in practice.
ANSWER_TOP_K = 10


@dataclass(frozen=True)
class Attempt:
    node: str
    outcome: str  # ok | refused | error | timeout
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"node": self.node, "outcome": self.outcome, "detail": self.detail}


class DeadlinePassed(HypercoreError):
    """A placement attempt arrived after its deadline; the origin has moved on."""


class PlacementFailed(HypercoreError):
    """Every ranked node was tried and none took the workload."""

    def __init__(self, decision: Decision, attempts: list[Attempt]) -> None:
        self.decision = decision
        self.attempts = attempts
        tried = "; ".join(f"{a.node}: {a.outcome} ({a.detail})" for a in attempts)
        super().__init__(f"no node took the workload after {len(attempts)} attempts: {tried}")


@dataclass
class Placement:
    decision: Decision
    workload: dict[str, Any] | None = None
    node: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    existing: bool = False  # the request had already been placed; nothing new started
