"""The agent freezes its start-up heap (hypercore.heap): a full collection then visits only what came later,
not the ~100,000 objects of its modules and app (75-160 ms stalls of the event loop, measured)."""

from __future__ import annotations

import gc

import pytest

from hypercore.heap import freeze_startup_heap


@pytest.fixture()
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as before


def test_start_up_objects_are_frozen_and_their_garbage_collected_first(unfrozen: None) -> None:
    class Cycle:
        pass

    survivor = [[i] for i in range(20_000)]  # long-lived, as a started agent's objects are
    garbage = Cycle()
    garbage.me = garbage  # type: ignore[attr-defined]
    collected_before = sum(s["collected"] for s in gc.get_stats())
    del garbage
    frozen = freeze_startup_heap()
    assert sum(s["collected"] for s in gc.get_stats()) > collected_before  # the cycle went before the freeze
    assert frozen == gc.get_freeze_count() >= len(survivor)
    # What a collection visits (every generation but the permanent one) no longer holds them.
    visited = {id(o) for o in gc.get_objects()}
    assert id(survivor) not in visited and not any(id(x) in visited for x in survivor)
    later = [[0]]
    assert id(later) in {id(o) for o in gc.get_objects()}  # what comes after start-up is collected as before
    gc.collect()
    assert survivor[0] == [0] and len(survivor) == 20_000  # frozen objects stay alive
