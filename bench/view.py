"""What one change of the membership costs the cluster view: a beacon refresh, a join, a departure.

Run:  .venv/bin/python bench/view.py [--sizes 100,1000,10000]

A node's view (hypercore.membership.view.ClusterView) holds every member with
its verified, CA-admitted beacon (real keys, signatures and admissions, made
here once per size). After each change the agent's readers ask for it again:
the failover and prober loops for the peer list, the next decision for the
engine's table. Printed per size, median ms of one change plus those reads
(nodes(), peers(), table()), after a warm-up:

  refresh   one member's beacon refreshed (new measurements and signature): the steadiest change, up to
            N / refresh period a second plus every node's news (free-capacity levels, price, capabilities)
  join      a new member (its beacon verified and admitted once) and the reads
  leave     a member reaped and the reads
  read      the three reads with nothing changed (what every decision pays)
  30 s on   the three reads 30 s later, nothing changed (views were checked again every 30 s, all at once)
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # bench/select.py shadows `select`

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from hypercore.beacon import keys  # noqa: E402
from hypercore.beacon.tags import Admission, Beacon, encode  # noqa: E402
from hypercore.identity.admission import admission_check  # noqa: E402
from hypercore.identity.pki import admission_message, create_ca, load_ca, load_ca_key  # noqa: E402
from hypercore.membership.rpc import Member  # noqa: E402
from hypercore.membership.view import ClusterView  # noqa: E402

NOW = time.time()
NOT_AFTER = int(NOW) + 86_400


class Signer:
    """Members with real beacons: one key per member, admitted by a real CA."""

    def __init__(self, ca_dir: Path) -> None:
        create_ca(ca_dir)
        self.ca = load_ca(ca_dir / "ca.pem")
        _, self._ca_key = load_ca_key(ca_dir)
        self._keys: dict[str, object] = {}

    def member(self, name: str, ts: float, queue: float = 0.0) -> Member:
        key = self._keys.get(name)
        if key is None:
            key = self._keys[name] = keys.generate()
        admission = Admission(NOT_AFTER, keys.sign(self._ca_key, admission_message(name, keys.public_bytes(key),
                                                                                    NOT_AFTER)))
        beacon = Beacon(api="127.0.0.1:8001", timestamp=ts, queue_depth=queue, price_per_gb=0.01, reputation=1.0,
                        cpu_free=4.0, mem_free_mb=4096.0, cpu_total=4.0, mem_total_mb=8192.0, capabilities=("exec",))
        return Member(name=name, addr="127.0.0.1", port=7946, tags=encode(beacon, name, key, admission), status="alive")


def read(view: ClusterView) -> None:
    view.nodes()
    view.peers()
    view.table()


def timed(action, reps: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for i in range(reps):
        start = time.perf_counter()
        action(i)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(n: int, signer: Signer, reps: int) -> dict[str, float]:
    names = [f"node-{i:05d}" for i in range(n)]
    clock = [NOW]
    view = ClusterView(admit=admission_check(signer.ca), clock=lambda: clock[0])
    view.update([signer.member(x, NOW) for x in names])
    read(view)
    refreshed = [signer.member(names[(i * 7919) % n], NOW + 1 + i, queue=float(i % 5)) for i in range(reps)]
    joining = [signer.member(f"new-{i:05d}", NOW) for i in range(reps)]
    result = {}

    def refresh(i: int) -> None:
        clock[0] = NOW + 1 + i  # the refresh's time (a beacon from the future is refused)
        view.upsert([refreshed[i]])
        read(view)

    def join(i: int) -> None:
        view.upsert([joining[i]])
        read(view)

    def leave(i: int) -> None:
        view.remove([joining[i].name])
        read(view)

    result["refresh"] = timed(refresh, reps)
    result["join"] = timed(join, reps)
    result["leave"] = timed(leave, reps)
    result["read"] = timed(lambda _i: read(view), reps)

    def later(_i: int) -> None:
        clock[0] += 30.0
        read(view)

    result["30 s on"] = timed(later, 5)
    assert len(view.table()) == n and len(view.peers()) == n, [x.problem for x in view.nodes() if x.problem]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        signer = Signer(Path(tmp) / "ca")
        print(f"{'nodes':>7} | {'refresh':>8} | {'join':>8} | {'leave':>8} | {'read':>8} | {'30 s on':>8}   (median ms: "
              "the change and nodes() + peers() + table())")
        for n in sizes:
            r = measure(n, signer, args.reps)
            print(f"{n:>7} | {r['refresh']:>8.2f} | {r['join']:>8.2f} | {r['leave']:>8.2f} | {r['read']:>8.3f} | "
                  f"{r['30 s on']:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
