"""How many connections the API holds open, counted from accept to close, before any TLS work is done.

An open connection costs the agent a descriptor and about 300 KiB (asyncio allocates a 256 KiB TLS read
buffer at accept): 3,000 connections that never sent a request took a real agent to 919 MiB, and enough of
them would use up its descriptors, which its SQLite files, workloads and calls to other nodes need too.
So the listening socket counts what it accepted and closes, at once, what is over budget:

- connections from the addresses admitted members advertise share MEMBER_CONNECTIONS (on one machine every
  node is 127.0.0.1; a node's transport keeps one connection per peer it calls, 256 at most);
- every other address ("strangers": users, browsers, anyone) gets STRANGER_PER_ADDRESS, and all of them
  together STRANGER_CONNECTIONS, so that one address cannot take every stranger's share.

Who is a member is known before the handshake only by address; a user on a node's machine counts as that
node. A connection over budget sees its TLS handshake fail (nothing is read from it).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Final

from hypercore.netaddr import canonical_ip

log = logging.getLogger("hypercore.api")

MEMBER_CONNECTIONS: Final = 2048
STRANGER_CONNECTIONS: Final = 512
STRANGER_PER_ADDRESS: Final = 64
REFUSED_LOG_S: Final = 60.0  # refusals are logged at most this often (a flood would otherwise flood the log)

MemberHost = Callable[[str], bool]


class ConnectionBudget:
    """Counts open connections by budget; `admit(host)` takes one place (and says which budget to release it
    to) or refuses it."""

    def __init__(self, member_host: MemberHost | None = None, *, members: int = MEMBER_CONNECTIONS,
                 strangers: int = STRANGER_CONNECTIONS, per_address: int = STRANGER_PER_ADDRESS,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self._member_host = member_host or (lambda _host: False)
        self._limits = {"members": members, "strangers": strangers, "address": per_address}
        self._on_refused = on_refused
        self.open: Counter[str] = Counter()  # "members", "strangers" and "address <ip>" for each stranger's
        self._refused: Counter[str] = Counter()
        self._logged_at = float("-inf")

    def admit(self, host: str) -> Callable[[], None] | None:
        """A place for a connection from `host` (its release, to call once when it closes), or None."""
        host = canonical_ip(host)
        # (what is counted, the budget that bounds it): a stranger's address is its own count, with its own name
        checks = ((("members", "members"),) if self._member_host(host)
                  else (("strangers", "strangers"), (f"address {host}", "address")))
        over = next((budget for key, budget in checks if self.open[key] >= self._limits[budget]), None)
        if over is not None:
            self._refuse(over)
            return None
        keys = [key for key, _budget in checks]
        for key in keys:
            self.open[key] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                for key in keys:
                    self.open[key] -= 1
                    if self.open[key] <= 0:
                        del self.open[key]  # a stranger's address is forgotten with its last connection

        return release

    def _refuse(self, budget: str) -> None:
        self._refused[budget] += 1
        if self._on_refused is not None:
            self._on_refused(budget)
        now = time.monotonic()
        if now - self._logged_at >= REFUSED_LOG_S:
            self._logged_at = now
            log.warning("closed connections over the API's budget", extra={
                "refused": dict(self._refused), "open_members": self.open["members"],
                "open_strangers": self.open["strangers"]})
            self._refused.clear()


class _CountedSocket(socket.socket):
    """An accepted connection that gives its place back when closed (asyncio closes it however it ends: after
    the response, a failed or timed-out handshake, an abort)."""

    release: Callable[[], None] | None = None

    def close(self) -> None:
        release, self.release = self.release, None
        if release is not None:
            release()
        super().close()


class BoundedListener(socket.socket):
    """A listening socket whose accept() closes connections over the budget before handing one to asyncio."""

    budget: ConnectionBudget

    def accept(self) -> tuple[socket.socket, object]:
        while True:  # BlockingIOError when none is waiting: asyncio expects it
            fd, address = self._accept()  # type: ignore[attr-defined]
            release = self.budget.admit(str(address[0]))
            if release is None:
                os.close(fd)
                continue
            conn = _CountedSocket(self.family, self.type, self.proto, fileno=fd)
            conn.release = release
            return conn, address


def bounded_listener(host: str, port: int, budget: ConnectionBudget) -> BoundedListener:
    """A socket bound to `host`:`port` (not listening yet: asyncio's create_server does that), not inherited
    by the processes the agent starts. OSError when the address cannot be bound."""
    family, kind, proto, _name, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    sock = BoundedListener(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.budget = budget
    return sock
