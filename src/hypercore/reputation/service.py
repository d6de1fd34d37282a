"""A node's reputation service: its own evidence, its peers' views, and the aggregate the engine uses.

Evidence comes from this node's own placement attempts (hypercore.placement)
and from failover (a workload lost with its node). Views are exchanged
without gossip: every EXCHANGE_S, this node asks the next SAMPLE peers of its
probe panel, in an order of its own drawn at random, for their views (`GET
/v1/local/reputation`), so the cost per node is constant whatever the size of
the cluster. The panel (hypercore.beacon.probe.PeerLinks: 16 peers, a secret
random choice of this node's) is a set its connections to can stay open: any
peer of a large cluster would cost a TLS handshake on both sides per exchange.
Taken in turn, each panel peer is asked every 16 / 3 rounds (160 s), within
the connections' keep-alive (hypercore.transport.KEEPALIVE_S); drawn at random
each round, the gaps were as often longer, and at 100 nodes nearly every
exchange opened a new connection (about 0.1 a second per node, each way).
What the panel gives up: views come from the same
16 observers for as long as membership stays, not from fresh random ones;
the weighted median over them resists a lying minority the same way. The score of a node is the
weighted median of the views that have evidence of it — this node's own
(weight 1) and each peer's (weighted by this node's own view of that peer) —
and its prior (attested by the CA in its certificate, else PRIOR) until
someone has evidence. A node's word about itself is never used, and neither
is its view of itself.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec

from hypercore.reputation.evidence import SUCCESS_BUCKET_S, EvidenceLog, Observation
from hypercore.reputation.score import ATTESTED_WEIGHT, PRIOR, PRIOR_WEIGHT, Evidence, beta_score, weighted_median
from hypercore.transport import PeerUnreachable, Transport

log = logging.getLogger("hypercore.reputation")

EXCHANGE_S = 30.0
PROBE_MISSES = 2  # probes unanswered in a row that count as a failure to reach the node
SAMPLE = 3
VIEW_TTL_S = 3 * EXCHANGE_S  # a peer's view older than this no longer counts
MAX_SUBJECTS = 10_000  # what one peer's view may hold
PRIORS_S = 30.0  # attested priors are read again after this (they change with a node's admission only)


class Reputation:
    def __init__(self, name: str, key: ec.EllipticCurvePrivateKey | None, transport: Transport,
                 peers: Callable[[], list[str]], prior: Callable[[str], float | None], *,
                 clock: Callable[[], float] = time.time, sample: int = SAMPLE) -> None:
        self.name = name
        self.log = EvidenceLog(name, key, clock=clock)
        self._transport = transport
        self._peers = peers
        self._prior = prior  # node → the prior its CA attested, or None
        self._clock = clock
        self.sample = sample
        self._views: dict[str, tuple[float, dict[str, float]]] = {}  # observer → (fetched at, subject → score)
        self.version = 0  # grows with every new observation or view: a cache of scores keys on it
        self._once: dict[tuple[str, str], int] = {}  # (node, kind) -> the period it was last observed in
        self._turns: list[str] = []  # the panel in this node's random order; exchanges take the next `sample`
        self._turn = 0
        self._misses: dict[str, int] = {}  # node -> probes unanswered in a row
        self._priors: tuple[tuple[str, ...], float, np.ndarray, dict[str, int]] | None = None  # names, read at, …

    # -- evidence ---------------------------------------------------------------------

    def observe(self, node: str, ok: bool, what: str) -> Observation | None:
        if node == self.name:
            return None  # a node's view of itself is its own word
        recorded = self.log.record(node, ok, what)
        if recorded is not None:
            self.version += 1
        return recorded

    def observe_once(self, node: str, ok: bool, what: str) -> Observation | None:
        """`observe`, at most once per node and kind of evidence per SUCCESS_BUCKET_S: for evidence seen on
        every read (a stale beacon) or every probe, which must weigh as one incident, not as a hundred."""
        key, bucket = (node, what), int(self._clock() // SUCCESS_BUCKET_S)
        if self._once.get(key) == bucket:
            return None
        self._once[key] = bucket
        return self.observe(node, ok, what)

    def probe_result(self, node: str, rtt_ms: float | None) -> None:
        """Evidence from this node's probes: PROBE_MISSES unanswered in a row is a failure (the node cannot be
        reached); a single loss is the link's doing (loss is a link metric), and an answer is no evidence of
        reliability (a node that only stays up would earn trust for free)."""
        if rtt_ms is not None:
            self._misses.pop(node, None)
            return
        misses = self._misses[node] = self._misses.get(node, 0) + 1
        if misses == PROBE_MISSES:
            self.observe_once(node, False, "probes unanswered")

    def prior_of(self, node: str) -> float:
        attested = self._prior(node)
        return PRIOR if attested is None else attested

    def local(self, node: str) -> tuple[float, Evidence]:
        evidence = self.log.evidence(node)
        attested = self._prior(node)
        if attested is None:
            return beta_score(evidence, PRIOR, PRIOR_WEIGHT), evidence
        return beta_score(evidence, attested, ATTESTED_WEIGHT), evidence

    # -- views --------------------------------------------------------------------------

    def view(self) -> dict[str, dict[str, Any]]:
        """This node's own view, for its peers: subject → score and evidence counts."""
        out = {}
        for subject in self.log.subjects():
            score, evidence = self.local(subject)
            out[subject] = {"score": round(score, 4), **evidence.to_dict()}
        return out

    def accept_view(self, observer: str, body: Any) -> int:
        """Keep `observer`'s view (validated, bounded); returns how many subjects were kept."""
        if observer == self.name or not isinstance(body, dict) or not isinstance(body.get("view"), dict):
            return 0
        scores: dict[str, float] = {}
        for subject, entry in list(body["view"].items())[:MAX_SUBJECTS]:
            score = entry.get("score") if isinstance(entry, dict) else None
            if isinstance(subject, str) and isinstance(score, (int, float)) and not isinstance(score, bool) \
                    and 0.0 <= score <= 1.0 and subject != observer:
                scores[subject] = float(score)
        self._views[observer] = (self._clock(), scores)
        self.version += 1
        return len(scores)

    def exchange_peers(self) -> list[str]:
        """The next `sample` peers of the panel, in turn (see the module docstring); a changed panel is shuffled anew."""
        peers = [p for p in self._peers() if p != self.name]
        if set(peers) != set(self._turns) or len(peers) != len(self._turns):
            self._turns, self._turn = random.sample(peers, len(peers)), 0
        take = min(self.sample, len(self._turns))
        chosen = [self._turns[(self._turn + i) % len(self._turns)] for i in range(take)]
        self._turn = (self._turn + take) % len(self._turns) if self._turns else 0
        return chosen

    async def exchange(self) -> None:
        for peer in self.exchange_peers():
            try:
                r = await self._transport.request(peer, "GET", "/v1/local/reputation", timeout=5.0)
                if r.status == 200:
                    self.accept_view(peer, r.json())
            except (PeerUnreachable, ValueError) as exc:
                log.debug("no reputation view from peer", extra={"peer": peer, "error": str(exc)})

    # -- the figure the engine uses -------------------------------------------------------

    def scores_array(self, names: tuple[str, ...]) -> np.ndarray:
        """`scores(names)` as an array in `names` order, worked out only for the nodes someone has evidence of
        (this node's own, or a live view's): every other node has its prior, read once per PRIORS_S.
        A decision asks this of every node: at 10,000 nodes `scores` took 23 ms (bench/derive.py)."""
        priors, index = self._priors_for(names)
        out = priors.copy()
        now = self._clock()
        live = [scores for _, (at, scores) in self._views.items() if now - at <= VIEW_TTL_S]
        subjects = set(self.log.subjects()).union(*live)
        known = [node for node in subjects if node in index]
        for node, score in self.scores(known, priors={node: priors[index[node]] for node in known}).items():
            out[index[node]] = score
        return out

    def _priors_for(self, names: tuple[str, ...]) -> tuple[np.ndarray, dict[str, int]]:
        cached = self._priors
        now = self._clock()
        if cached is not None and cached[0] == names and now - cached[1] <= PRIORS_S:
            return cached[2], cached[3]
        index = dict(zip(names, range(len(names))))
        if cached is not None and now - cached[1] <= PRIORS_S:  # members came or went: read the newcomers only
            old, known = cached[3], cached[2]
            rows = np.fromiter(map(old.get, names, itertools.repeat(-1)), dtype=np.intp, count=len(names))
            kept = rows >= 0
            priors = np.full(len(names), np.nan)
            priors[kept] = known[rows[kept]]
            for i in np.flatnonzero(~kept).tolist():
                priors[i] = self.prior_of(names[i])
            self._priors = (names, cached[1], priors, index)  # the next full read stays due when it was
        else:
            priors = np.fromiter((self.prior_of(n) for n in names), dtype=float, count=len(names))
            self._priors = (names, now, priors, index)
        return priors, index

    def score(self, node: str) -> float:
        return self.scores([node])[node]

    def scores(self, nodes: list[str], priors: dict[str, float] | None = None) -> dict[str, float]:
        """Each node's aggregate. Every spawn's decision asks this of every node, so the observers' weights
        (this node's own view of each observer) are worked out once per call, not once per node and
        observer: 0.36 ms for 100 nodes and 9 views, where that took 1.25 ms."""
        now = self._clock()
        views = [(observer, scores) for observer, (at, scores) in self._views.items() if now - at <= VIEW_TTL_S]
        weights = {observer: self.local(observer)[0] for observer, _ in views}
        out = {}
        for node in nodes:
            own, evidence = self.local(node)
            pairs: list[tuple[float, float]] = [(own, 1.0)] if evidence.successes or evidence.failures else []
            pairs.extend((scores[node], weights[observer]) for observer, scores in views
                         if observer != node and node in scores)
            aggregate = weighted_median(pairs)
            if aggregate is None:
                aggregate = priors[node] if priors is not None and node in priors else self.prior_of(node)
            out[node] = aggregate
        return out

    def explain(self, node: str) -> dict[str, Any]:
        """What `cluster metrics` shows next to a reputation: this node's evidence and how many views count."""
        _own, evidence = self.local(node)
        now = self._clock()
        observers = sum(1 for o, (at, s) in self._views.items() if now - at <= VIEW_TTL_S and node in s and o != node)
        return {**evidence.to_dict(), "observers": observers + (1 if evidence.successes or evidence.failures else 0),
                "prior": self.prior_of(node)}
