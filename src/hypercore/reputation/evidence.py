"""What this node observed of its peers: placement attempts, as signed records in a sliding window.

A workload's own failure (a started program exiting non-zero) is not the
node's fault and is never recorded; a refusal for capacity is the node being
honest about being full, and is not recorded either. What is recorded: an
attempt the node accepted (success); one it refused for another reason, did
not answer in time, answered with a 5xx or could not be reached for
(failure); a workload of it that had to be respawned because it failed
(failure). Each record is signed with this node's key, so it can be shown
to a third party and checked.

Successes count at most once per SUCCESS_BUCKET_S per peer. Volume is cheap
to make: a burst of 70 quick spawns on one node is one moment of evidence
that it works, not 70, and counting each made reputation rich-get-richer —
the first node of a burst gained 0.3 of reputation in seconds and took most of
the burst (the 200-spawn test: 159/41/0 on three equal nodes). A user could
also pump a node's standing, or push its failures out of the window's
MAX_RECORDS_PER_PEER, with a flood of tiny spawns. Failures each count: they
are what a node cannot make cheaply for itself.
"""

from __future__ import annotations

import base64
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from hypercore.beacon import keys
from hypercore.reputation.score import Evidence

WINDOW_S = 3600.0  # evidence older than this no longer counts
MAX_RECORDS_PER_PEER = 256
SUCCESS_BUCKET_S = 60.0  # successes of one peer within one such period count once (see above)


@dataclass(frozen=True)
class Observation:
    observer: str
    subject: str
    ok: bool
    what: str  # "attempt ok", "attempt timeout", "lost with its node", ...
    at: float
    signature: str = ""  # base64url of the 64-byte ECDSA P-256 signature (r‖s) over payload()

    def payload(self) -> bytes:
        return json.dumps([self.observer, self.subject, self.ok, self.what, round(self.at, 3)],
                          separators=(",", ":")).encode()

    def verify(self, key: ec.EllipticCurvePublicKey | bytes) -> bool:
        """Whether the observer's key (or its 33-byte point, as gossiped) signed this record."""
        try:
            keys.verify(key, base64.urlsafe_b64decode(self.signature + "=="), self.payload())
            return True
        except Exception:  # noqa: BLE001 - any failure means "does not verify"
            return False

    def to_dict(self) -> dict[str, object]:
        return {"observer": self.observer, "subject": self.subject, "ok": self.ok, "what": self.what,
                "at": round(self.at, 3), "signature": self.signature}


def _bucket(at: float) -> int:
    return int(at // SUCCESS_BUCKET_S)


class EvidenceLog:
    def __init__(self, observer: str, key: ec.EllipticCurvePrivateKey | None, *, window: float = WINDOW_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.observer = observer
        self._key = key
        self.window = window
        self._clock = clock
        self._records: dict[str, deque[Observation]] = {}

    def record(self, subject: str, ok: bool, what: str) -> Observation | None:
        """Record and sign an observation; None for a success in a period that already has one (not kept)."""
        now = self._clock()
        records = self._records.setdefault(subject, deque(maxlen=MAX_RECORDS_PER_PEER))
        if ok and any(o.ok and _bucket(o.at) == _bucket(now) for o in reversed(records)):
            return None
        obs = Observation(self.observer, subject, ok, what, now)
        if self._key is not None:
            sig = base64.urlsafe_b64encode(keys.sign(self._key, obs.payload())).rstrip(b"=").decode()
            obs = Observation(obs.observer, obs.subject, obs.ok, obs.what, obs.at, sig)
        records.append(obs)
        return obs

    def _fresh(self, subject: str) -> list[Observation]:
        records = self._records.get(subject)
        if not records:
            return []
        cutoff = self._clock() - self.window
        while records and records[0].at < cutoff:
            records.popleft()
        return list(records)

    def evidence(self, subject: str) -> Evidence:
        fresh = self._fresh(subject)
        ok = sum(1 for o in fresh if o.ok)
        return Evidence(ok, len(fresh) - ok)

    def subjects(self) -> list[str]:
        return sorted(s for s in self._records if self._fresh(s))

    def records(self, subject: str) -> list[Observation]:
        return self._fresh(subject)
