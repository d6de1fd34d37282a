"""Admission of gossip members: is this member's beacon key certified by our CA for its name?

The check runs on every read of the cluster view, so the ECDSA verification
is cached per (member, key, admission); only the expiry is looked at each time.
"""

from __future__ import annotations

from collections.abc import Callable

from hypercore.beacon.tags import Beacon
from hypercore.identity.pki import ClusterCA, NotAdmitted, verify_admission

_CACHE_MAX = 65_536


def admission_check(ca: ClusterCA) -> Callable[[str, Beacon, float], str | None]:
    """A check for hypercore.membership.view.ClusterView: why `node` is not admitted, or None."""
    verified: dict[tuple[str, bytes, int, bytes, float | None], str | None] = {}

    def check(node: str, beacon: Beacon, now: float) -> str | None:
        admission = beacon.admission
        if admission is None:
            return "its beacon carries no admission by the cluster CA (a node run with --insecure, or no node of ours)"
        if now >= admission.not_after:
            return "its admission (node certificate) expired"
        key = (node, beacon.public_key, admission.not_after, admission.signature, admission.reputation)
        if key not in verified:
            if len(verified) >= _CACHE_MAX:
                verified.clear()
            try:
                verify_admission(ca, node, beacon.public_key, admission.not_after, admission.signature, now,
                                 admission.reputation)
                verified[key] = None
            except NotAdmitted as exc:
                verified[key] = getattr(exc, "reason", None) or str(exc)
        return verified[key]

    return check
