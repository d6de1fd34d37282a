"""What ranking the nodes for a key costs: a request id's holders, a node's failover buddies.

Run:  .venv/bin/python bench/holders.py [--sizes 3,100,1000,10000]

A spawn ranks the alive nodes for its request id about six times on its way
(the receiving node to find the owner; the owner before it places, for its
claim and for the outcome; each of the two other holders when it checks the
claim's sender), and the node that runs the workload ranks them once more
for its failover buddies. So this cost is paid per spawn, on the spawn's
path, and grows with the cluster (docs/scale.md, "Per-spawn costs").

Printed per cluster size, the median wall time per call in microseconds of:
  holders     placement.directory.holders_of(key, alive): the 3 holders of a request id
  rank        placement.ids.request_rank(key, alive): every node in order (tests, and returning nodes)
  buddies     failover.model.buddies_of(owner, alive): a node's 2 failover buddies
  prepared    holders_of(key, node_set(alive)): what a holder pays per write of a directory push (up to 1,000
              writes each), the member set prepared once
over the same alive list for every call (as a node's view gives it between membership changes), each key
new. The first call after a membership change, which builds what later calls reuse, is printed apart.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # bench/select.py shadows `select`

import argparse
import statistics
import time
import timeit
import uuid
from collections.abc import Callable

from hypercore.failover.model import buddies_of
from hypercore.placement.directory import holders_of
from hypercore.placement.ids import node_set, request_rank


def per_call_us(call: Callable[[str], object], keys: list[str]) -> float:
    """Median over 7 passes of the time per call (µs), a pass calling once per key."""
    passes = timeit.repeat(lambda: [call(k) for k in keys], number=1, repeat=7)
    return statistics.median(passes) / len(keys) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="3,100,1000,10000")
    args = parser.parse_args()
    print(f"{'nodes':>6} {'holders µs':>11} {'rank µs':>9} {'buddies µs':>11} {'prepared µs':>12} "
          f"{'first call µs':>14}")
    for n in (int(s) for s in args.sizes.split(",")):
        alive = [f"node-{i:05d}.example.org" for i in range(n)]
        keys = [f"alice/{uuid.uuid4()}" for _ in range(2000 if n <= 1000 else 200)]
        first_list = list(reversed(alive))  # a list not seen before: what a membership change costs
        start = time.perf_counter()
        holders_of(keys[0], first_list)
        first = (time.perf_counter() - start) * 1e6
        alive_now = list(alive)
        holders = per_call_us(lambda k: holders_of(k, alive_now), keys)
        rank = per_call_us(lambda k: request_rank(k, alive_now), keys)
        buddies = per_call_us(lambda k: buddies_of(k, alive_now), [k[6:] for k in keys])
        prepared_set = node_set(alive_now)
        prepared = per_call_us(lambda k: holders_of(k, prepared_set), keys)
        print(f"{n:>6} {holders:>11.1f} {rank:>9.1f} {buddies:>11.1f} {prepared:>12.1f} {first:>14.1f}", flush=True)


if __name__ == "__main__":
    main()
