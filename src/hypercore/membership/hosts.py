"""Whether an address is an admitted member's: the hosts of the members' API addresses, for the budgets that
give members a share of their own (probe answers, hypercore.beacon.echo; API connections,
hypercore.api.connections)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Final

from hypercore.netaddr import canonical_ip

MEMBER_HOSTS_S: Final = 10.0  # the member addresses are read again at most this often after a membership change


class MemberHosts:
    """`member_host(ip)`: the hosts of the admitted members' API addresses, read again after a membership
    change (`stale()`), at most every MEMBER_HOSTS_S (a member that just joined shares the strangers'
    budget meanwhile): a read is O(N), a lookup a set's. `own`: this node's API host, a member's from the
    start (nodes on one machine share it, and the first read may come before the view has any member)."""

    def __init__(self, hosts: Callable[[], Iterable[str]], own: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._hosts, self._clock = hosts, clock
        self._own = canonical_ip(own)
        self._known: set[str] = set()
        self._stale, self._read_at = True, float("-inf")

    def stale(self) -> None:
        self._stale = True

    def __call__(self, host: str) -> bool:
        if self._stale and self._clock() - self._read_at >= MEMBER_HOSTS_S:
            self._stale, self._read_at = False, self._clock()
            self._known = {canonical_ip(h) for h in self._hosts()}  # a name stays a name: strangers' budget
        return host in self._known or host == self._own
