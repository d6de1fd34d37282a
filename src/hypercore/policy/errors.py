"""Errors of the policy language and engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hypercore.errors import HypercoreError

if TYPE_CHECKING:
    from hypercore.policy.decision import Decision


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy: where, what was given, what is allowed."""

    source: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return f"{where}: {self.message}"


class PolicyError(HypercoreError):
    """A policy could not be loaded; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class NoQualifyingNode(HypercoreError):
    """Enforce mode and no node passed the rules; carries the decision."""

    def __init__(self, decision: "Decision") -> None:
        self.decision = decision
        super().__init__(decision.summary)
