"""Outlier ejection (after Envoy's): a node that keeps failing attempts is skipped for a while.

Independent of any policy's weights: after `consecutive` failed attempts in a
row — refused for a reason other than capacity, timed out, a 5xx, no
connection — this origin skips the node for an ejection period that doubles
each time it is ejected again (up to `max_ejection`). A successful attempt
resets its count and its ejection history. Capacity refusals are the node
being honest about being full, not a fault. The decision lists an ejected node
as rejected with the reason, so the user sees why it was skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

CONSECUTIVE = 3
BASE_EJECTION_S = 10.0
MAX_EJECTION_S = 300.0
_CAPACITY_WORDS = ("lacks capacity", "at capacity")


@dataclass
class _Record:
    failures: int = 0  # consecutive failed attempts
    ejections: int = 0  # times ejected since the last success
    until: float = 0.0  # ejected until this monotonic time


def counts_as_failure(outcome: str, detail: str) -> bool:
    if outcome == "ok":
        return False
    if outcome == "refused" and any(word in detail for word in _CAPACITY_WORDS):
        return False
    return True


class OutlierDetector:
    def __init__(self, consecutive: int = CONSECUTIVE, base_ejection: float = BASE_EJECTION_S,
                 max_ejection: float = MAX_EJECTION_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.consecutive = consecutive
        self.base_ejection = base_ejection
        self.max_ejection = max_ejection
        self._clock = clock
        self._nodes: dict[str, _Record] = {}

    def record(self, node: str, outcome: str, detail: str = "") -> None:
        """An attempt's outcome on `node` (placement.model.Attempt's outcome and detail)."""
        if outcome == "ok":
            self._nodes.pop(node, None)
            return
        if not counts_as_failure(outcome, detail):
            return
        rec = self._nodes.setdefault(node, _Record())
        rec.failures += 1
        if rec.failures >= self.consecutive:
            period = min(self.base_ejection * 2 ** rec.ejections, self.max_ejection)
            rec.until = self._clock() + period
            rec.ejections += 1
            rec.failures = 0

    def ejected(self) -> dict[str, str]:
        """Nodes skipped right now → the reason shown in decisions."""
        now = self._clock()
        return {node: f"ejected by this node for {rec.until - now:.0f} s after {self.consecutive} failed attempts in a row"
                for node, rec in self._nodes.items() if rec.until > now}
