"""The cluster view admits a member only with our CA's admission of its beacon key, for its name (in-process)."""

from __future__ import annotations

import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from hypercore.beacon import keys
from hypercore.beacon.tags import Admission, Beacon, encode
from hypercore.identity.admission import admission_check
from hypercore.identity.pki import NodeIdentity, create_ca, create_node_cert, load_ca, load_ca_key
from hypercore.membership.rpc import Member
from hypercore.membership.view import ClusterView, Peer

NOW = time.time()


def member(name: str, tags: dict[str, str], status: str = "alive") -> Member:
    return Member(name=name, addr="127.0.0.1", port=7946, tags=tags, status=status)


def tags_of(name: str, key: ec.EllipticCurvePrivateKey, admission: Admission | None, port: int = 8001) -> dict[str, str]:
    beacon = Beacon(api=f"127.0.0.1:{port}", timestamp=int(NOW), latency_ms=1.0, price_per_gb=0.01, reputation=1.0,
                    capabilities=("exec",))
    return encode(beacon, name, key, admission)


def test_only_members_certified_for_their_name_are_admitted_and_reachable(tmp_path: Path) -> None:
    create_ca(tmp_path / "ca")
    create_ca(tmp_path / "other")
    ca = load_ca(tmp_path / "ca" / "ca.pem")
    good = NodeIdentity.load(tmp_path / "ca" / "ca.pem", *create_node_cert(tmp_path / "ca", "good", tmp_path / "ca"), "good")
    foreign = NodeIdentity.load(tmp_path / "other" / "ca.pem",
                                *create_node_cert(tmp_path / "other", "foreign", tmp_path / "other"), "foreign")
    _, ca_key = load_ca_key(tmp_path / "ca")
    expired_key = keys.generate()
    from hypercore.identity.pki import admission_message

    raw = keys.public_bytes(expired_key)
    expired = Admission(int(NOW) - 10, keys.sign(ca_key, admission_message("expired", raw, int(NOW) - 10)))
    members = [
        member("good", tags_of("good", good.key, Admission(good.not_after, good.admission))),
        member("foreign", tags_of("foreign", foreign.key, Admission(foreign.not_after, foreign.admission))),
        # a real node's key and admission, published under another name
        member("impostor", tags_of("impostor", good.key, Admission(good.not_after, good.admission))),
        member("bare", tags_of("bare", keys.generate(), None)),
        member("expired", tags_of("expired", expired_key, expired)),
        member("silent", {}),
    ]
    view = ClusterView(clock=lambda: NOW, admit=admission_check(ca))
    view.update(members)
    nodes = {n.name: n for n in view.nodes()}
    assert nodes["good"].admitted and nodes["good"].problem is None
    assert view.peer("good") == Peer("good", "127.0.0.1", 8001)
    for name in ("foreign", "impostor", "bare", "expired", "silent"):
        assert not nodes[name].admitted and nodes[name].problem.startswith("not admitted:"), nodes[name]
        assert view.peer(name) is None
        assert nodes[name].record()["admitted"] is False and nodes[name].record()["price_per_gb"] is None
    assert "expired" in nodes["expired"].problem
    assert view.peers() == ["good"]
    table = view.table()
    assert list(table.names) == ["good"]  # the engine never sees a member that is not admitted


def test_without_a_ca_insecure_clusters_admit_every_verified_beacon() -> None:
    view = ClusterView(clock=lambda: NOW)
    key = keys.generate()
    view.update([member("n1", tags_of("n1", key, None)), member("n2", {}), member("n3", tags_of("n3", key, None), "failed")])
    assert view.peers() == ["n1"]
    assert view.peer("n3") is None  # admitted, but not alive
