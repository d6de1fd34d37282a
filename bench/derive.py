"""What a placing node derives per decision beside the engine: links as seen from the origin, reputation.

Run:  .venv/bin/python bench/derive.py [--sizes 100,1000,10000]

Before it ranks, the placing node replaces what nodes say about themselves
with what others measured (hypercore.placement.scheduler.Scheduler._derived_table):
every node's latency, jitter and loss from the request's origin
(placement.links.OriginLinks.columns) and every node's reputation from
evidence (reputation.Reputation.scores). That result is cached until new
probes, coordinates, evidence or views arrive, or a second passes; but a
request id's owner is a random node, which placed nothing for a while, and an
attempt's outcome is new evidence: so in a large cluster nearly every spawn
pays for it on its way, at the owner.

State (what a node has after running a while): probe windows of every peer
(10 answers each; the panel's peers and the explored ones), Serf coordinates
of every member, an origin's reported figures of its 256 nearest peers,
evidence of 30 nodes, and 3 peers' views of 200 subjects each.

Printed per size, median ms per call, cache cold (as at a random owner):
  links self     OriginLinks.arrays(this node, names): a spawn asked here
  links origin   OriginLinks.arrays(another node, names): a forwarded spawn
  reputation     Reputation.scores_array(names)
  apply          NodeTable.with_columns for the four columns
  derive         Scheduler._derived_table's work in all (origin another node), with a probe and a
                 coordinate new since the last decision (kept arrays are updated, not rebuilt)
  after change   the same, the first time after a membership change (one node fewer): the arrays
                 kept per member list are carried over to the new list
  export         OriginLinks.export(): the receiving node's own figures of its 256 nearest peers, sent
                 with every spawn it forwards (computed again once a probe answered since the last)
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # bench/select.py shadows `select`

import argparse
import random
import statistics
import time
import timeit
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from hypercore.beacon.probe import PeerLinks
from hypercore.membership.coordinates import CoordinateBook
from hypercore.membership.rpc_types import Coordinate
from hypercore.placement.links import OriginLinks
from hypercore.placement.scheduler import Scheduler
from hypercore.policy import NodeTable
from hypercore.reputation import Reputation

SELF = "node-00000"
ORIGIN = "node-00001"


def records(names: list[str]) -> list[dict[str, Any]]:
    return [{"name": n, "latency_ms": 5.0, "jitter_ms": 1.0, "packet_loss": 0.0, "reputation": 0.5,
             "price_per_gb": 0.1, "queue_depth": 0, "cpu_free": 4.0, "mem_free_mb": 4096.0} for n in names]


def state(n: int, rng: random.Random) -> tuple[list[str], OriginLinks, Reputation, NodeTable]:
    names = [f"node-{i:05d}" for i in range(n)]
    probes = PeerLinks()
    for peer in names[1:]:
        for _ in range(10):
            probes.record(peer, rng.uniform(1.0, 80.0) if rng.random() > 0.01 else None)
    book = CoordinateBook()
    for name in names:
        book.set(name, Coordinate(vec=[rng.uniform(-0.05, 0.05) for _ in range(8)], error=0.2,
                                  adjustment=rng.uniform(-1e-4, 1e-4), height=rng.uniform(1e-5, 1e-3)))
    links = OriginLinks(SELF, probes, book)
    links.remember_reported(ORIGIN, {p: [rng.uniform(1.0, 80.0), 1.0, 0.0] for p in names[2:258]})
    reputation = Reputation(SELF, None, SimpleNamespace(), lambda: names[1:17], lambda _n: None)
    for node in rng.sample(names[1:], min(30, n - 1)):
        for _ in range(5):
            reputation.observe(node, rng.random() > 0.1, "attempt ok")
    for observer in names[1:4]:
        reputation.accept_view(observer, {"view": {s: {"score": rng.random()} for s in rng.sample(names, min(200, n))}})
    return names, links, reputation, NodeTable.from_records(records(names))


def median_ms(call: Callable[[], object], repeat: int = 9) -> float:
    """Median over `repeat` calls, in ms."""
    return statistics.median(timeit.repeat(call, number=1, repeat=repeat)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000")
    args = parser.parse_args()
    print(f"{'nodes':>6} {'links self':>11} {'links origin':>13} {'reputation':>11} {'apply':>7} {'derive':>8} "
          f"{'after change':>13} {'export':>7}  (ms)")
    rng = random.Random(1)
    for n in (int(s) for s in args.sizes.split(",")):
        names, links, reputation, table = state(n, rng)
        columns = links.arrays(ORIGIN, table.names)
        scores = reputation.scores_array(table.names)

        def apply() -> None:
            table.with_columns({**columns, "reputation": scores})

        scheduler = SimpleNamespace(reputation=reputation, links=links, _derived=None)

        def derive() -> None:
            scheduler._derived = None  # cold, as at an owner that placed nothing for a while
            links.probes.record(rng.choice(names[1:]), rng.uniform(1.0, 80.0))  # what changed meanwhile
            links.coordinates.set(rng.choice(names), Coordinate(vec=[rng.uniform(-0.05, 0.05) for _ in range(8)],
                                                                error=0.2, adjustment=0.0, height=1e-4))
            Scheduler._derived_table(scheduler, table, ORIGIN)  # type: ignore[arg-type]

        row = [median_ms(lambda: links.arrays(SELF, table.names)), median_ms(lambda: links.arrays(ORIGIN, table.names)),
               median_ms(lambda: reputation.scores_array(table.names)), median_ms(apply), median_ms(derive)]
        tables = [NodeTable.from_records(records(names[:-1 - k])) for k in range(5)]

        def changed() -> float:
            scheduler._derived = None
            start = time.perf_counter()
            Scheduler._derived_table(scheduler, tables.pop(), ORIGIN)  # type: ignore[arg-type]
            return (time.perf_counter() - start) * 1000

        after = statistics.median(changed() for _ in range(5))

        def export() -> None:
            links._export = None  # a probe answered since the last forward
            links.export()

        exported = median_ms(export)
        print(f"{n:>6} {row[0]:>11.2f} {row[1]:>13.2f} {row[2]:>11.2f} {row[3]:>7.2f} {row[4]:>8.2f} {after:>13.2f} "
              f"{exported:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
