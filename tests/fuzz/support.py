"""What the fuzz tests share: bounded hypothesis settings and a count of the cases tried."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings

# Bounded so that the whole directory runs in well under 30 s; no example
# database is written into the shared tree.
_FUZZ = settings(deadline=None, database=None, print_blob=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.function_scoped_fixture])


def fuzz(max_examples: int) -> settings:
    """The fuzzers' settings, with this many cases."""
    return settings(_FUZZ, max_examples=max_examples)


class FuzzCases:
    """Ticked once per generated case; `report()` records and prints the count."""

    def __init__(self, record_property: Any, name: str) -> None:
        self.n = 0
        self._record = record_property
        self._name = name

    def tick(self) -> None:
        self.n += 1

    def report(self) -> None:
        self._record("fuzz_cases", self.n)
        print(f"{self._name}: {self.n} fuzz cases tried")
