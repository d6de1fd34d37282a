"""The WAN emulator: one process that carries every packet between the test-bed's namespaces.

This kernel has no `netem`, so delay and loss are applied in user space. Each
endpoint (a node's namespace, and the namespace the test-bed was started
from) gets a TUN device, `wan0`, holding an address of one /16; the kernel
routes the whole /16 into it. This process holds every TUN's fd: it reads a
packet from the sender's device, looks its IPv4 destination up, drops it
with the link's loss probability, and writes it on the receiver's device
after the link's one-way delay (half the region pair's round-trip time).
Packets of one link leave in the order they came (one delay per link, one
queue ordered by due time). The host endpoint has no region: its packets
pass at once, so a user's request reaches the node asked without delay.

The loop is `select()` with a timeout to the next packet due (microsecond
resolution, unlike epoll's milliseconds) and a timer slack of 1 µs;
bench/wan.py measures what it adds of its own. The TUN devices belong to
this process's fds: when it ends, however it ends, they are gone.

    python -m hypercore.testbed.wan CONFIG.json   # prints "ready" once every device is up
    kill -USR1 PID                                # its counters, on stderr
"""

from __future__ import annotations

import ctypes
import heapq
import json
import os
import random
import select
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypercore.testbed import netns

PR_SET_TIMERSLACK = 29
MAX_PACKET = 65535


@dataclass(frozen=True)
class Endpoint:
    name: str
    netns: str | None  # None: the namespace this process runs in
    ifname: str
    address: str  # IPv4, inside `subnet`
    region: str | None


@dataclass(frozen=True)
class WanConfig:
    subnet_prefix: int
    endpoints: list[Endpoint]
    # "a|b" → (one-way delay s, loss probability), both directions alike; regions a <= b
    links: dict[str, tuple[float, float]]

    @classmethod
    def load(cls, path: Path) -> "WanConfig":
        data = json.loads(path.read_text())
        return cls(int(data["subnet_prefix"]), [Endpoint(**e) for e in data["endpoints"]],
                   {k: (float(v[0]), float(v[1])) for k, v in data["links"].items()})

    def dump(self) -> dict[str, Any]:
        return {"subnet_prefix": self.subnet_prefix, "endpoints": [e.__dict__ for e in self.endpoints],
                "links": {k: list(v) for k, v in self.links.items()}}

    def link(self, a: str | None, b: str | None) -> tuple[float, float]:
        if a is None or b is None:
            return 0.0, 0.0
        return self.links["|".join(sorted((a, b)))]


def open_devices(config: WanConfig) -> dict[int, Endpoint]:
    """A TUN device per endpoint, made in its namespace, addressed and up: fd → endpoint."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    fds: dict[int, Endpoint] = {}
    try:
        for e in config.endpoints:
            netns.setns(netns.NETNS_DIR / e.netns if e.netns else None, own)
            try:
                fds[netns.open_tun(e.ifname)] = e
            finally:
                netns.setns(None, own)
    finally:
        os.close(own)
    for e in config.endpoints:
        where = ["-n", e.netns] if e.netns else []
        netns.ip(*where, "addr", "add", f"{e.address}/{config.subnet_prefix}", "dev", e.ifname)
        netns.ip(*where, "link", "set", e.ifname, "mtu", "1500", "up")
    return fds


class Forwarder:
    """The loop: read, route, drop or hold, write when due."""

    def __init__(self, config: WanConfig, fds: dict[int, Endpoint], seed: int | None = None) -> None:
        self.fds = fds
        self.route = {bytes(int(x) for x in e.address.split(".")): fd for fd, e in fds.items()}
        # (sender fd, receiver fd) → (delay s, loss probability), precomputed: nothing is looked up per packet.
        self.pair = {(a, b): config.link(ea.region, eb.region) for a, ea in fds.items() for b, eb in fds.items()}
        self.queue: list[tuple[float, int, int, bytes]] = []  # (due, sequence, fd, packet)
        self.sequence = 0
        self.random = random.Random(seed)
        self.stats = {"forwarded": 0, "dropped_loss": 0, "unroutable": 0, "write_errors": 0}

    def _write(self, fd: int, packet: bytes) -> None:
        try:
            os.write(fd, packet)
            self.stats["forwarded"] += 1
        except OSError:  # the receiver's queue is full, or its device went down: a lost packet, as on a wire
            self.stats["write_errors"] += 1

    def receive(self, fd: int, now: float) -> None:
        while True:
            try:
                packet = os.read(fd, MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return
            target = self.route.get(packet[16:20]) if len(packet) >= 20 and packet[0] >> 4 == 4 else None
            if target is None:  # IPv6 neighbour chatter, or an address no endpoint has
                self.stats["unroutable"] += 1
                continue
            delay, loss = self.pair[fd, target]
            if loss and self.random.random() < loss:
                self.stats["dropped_loss"] += 1
            elif delay <= 0:
                self._write(target, packet)
            else:
                self.sequence += 1
                heapq.heappush(self.queue, (now + delay, self.sequence, target, packet))

    def release(self, now: float) -> None:
        queue = self.queue
        while queue and queue[0][0] <= now:
            _, _, fd, packet = heapq.heappop(queue)
            self._write(fd, packet)

    def run(self) -> None:
        readers = list(self.fds)
        clock = time.monotonic
        while True:
            timeout = max(0.0, self.queue[0][0] - clock()) if self.queue else None
            ready, _, _ = select.select(readers, [], [], timeout)
            now = clock()
            for fd in ready:
                self.receive(fd, now)
            self.release(clock())


def _stop(_sig: int, _frame: Any) -> None:
    raise SystemExit(0)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m hypercore.testbed.wan CONFIG.json", file=sys.stderr)
        return 2
    config = WanConfig.load(Path(argv[0]))
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # A 1 µs timer slack: select() then wakes within microseconds of a packet's due time, not 50 µs later.
    ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
    # Real-time priority: on a busy machine the nodes get slow, not the wire (the loop sleeps when idle, and
    # the kernel keeps 5 % of each second for others anyway). Without the privilege, it runs as it is.
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (PermissionError, OSError):
        pass
    forwarder = Forwarder(config, open_devices(config))
    # SIGUSR1: the counters so far, on stderr (the test-bed's wan.log).
    signal.signal(signal.SIGUSR1, lambda *_: print(json.dumps({"wan_stats": forwarder.stats}), file=sys.stderr,
                                                   flush=True))
    print("ready", flush=True)
    try:
        forwarder.run()
    finally:
        print(json.dumps({"wan_stats": forwarder.stats}), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
