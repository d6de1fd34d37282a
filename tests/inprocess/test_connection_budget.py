"""The API's connection budget (hypercore.api.connections) by itself: who shares which budget, and what a
closed connection gives back. (tests/cluster/test_connection_budget.py floods a real agent.)"""

from __future__ import annotations

from hypercore.api.connections import ConnectionBudget


def test_a_strangers_address_has_its_share_within_the_strangers_total() -> None:
    refused: list[str] = []
    budget = ConnectionBudget(lambda host: host == "10.0.0.1", members=3, strangers=4, per_address=2,
                              on_refused=refused.append)
    a = [budget.admit("192.0.2.1") for _ in range(3)]
    assert a[0] and a[1] and a[2] is None and refused == ["address"]
    # An IPv4 address seen by an IPv6 socket is the same address, not a new one with a share of its own.
    assert budget.admit("::ffff:192.0.2.1") is None and refused == ["address", "address"]
    b = [budget.admit("192.0.2.2"), budget.admit("192.0.2.2")]
    assert all(b) and budget.admit("192.0.2.3") is None and refused[-1] == "strangers"
    members = [budget.admit("10.0.0.1") for _ in range(4)]  # members have their own budget
    assert all(members[:3]) and members[3] is None and refused[-1] == "members"


def test_a_closed_connection_gives_its_place_back_once() -> None:
    budget = ConnectionBudget(None, strangers=10, per_address=1)
    release = budget.admit("192.0.2.1")
    assert release is not None and budget.admit("192.0.2.1") is None
    release()
    release()  # asyncio may close a socket twice: the place is given back once
    assert budget.open == {}  # the address is forgotten with its last connection
    again = budget.admit("192.0.2.1")
    assert again is not None and budget.admit("192.0.2.1") is None
