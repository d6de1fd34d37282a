"""The signed beacon encoding in Serf tags: round trip, tampering, freshness, range, size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypercore.beacon import keys
from hypercore.beacon.keys import KeyError_, fingerprint, generate, load_or_create_node_key
from hypercore.beacon.probe import PeerLinks, ProbeWindow
from hypercore.beacon.tags import (
    MAX_AGE_S,
    SERF_TAGS_LIMIT,
    Admission,
    Beacon,
    BeaconInvalid,
    _b64,
    _message,
    _unb64,
    decode,
    encode,
    encoded_size,
)

NOW = 1_800_000_000


def uncompressed(k: str) -> str:
    """A gossiped key ("k", base64url of the compressed point) as its 65-byte uncompressed point."""
    point = keys.public_key_from_bytes(_unb64(k)).public_bytes(serialization.Encoding.X962,
                                                               serialization.PublicFormat.UncompressedPoint)
    return _b64(point)


def beacon(**kw: object) -> Beacon:
    values = dict(api="127.0.0.1:8001", timestamp=NOW, latency_ms=12.5, jitter_ms=1.25, packet_loss=0.5,
                  queue_depth=3, price_per_gb=0.02, reputation=0.95, capabilities=("exec",))
    values.update(kw)
    return Beacon(**values)  # type: ignore[arg-type]


def test_round_trip_keeps_every_value_and_names_the_key() -> None:
    key = generate()
    got = decode(encode(beacon(), "n1", key), "n1", NOW)
    assert (got.latency_ms, got.jitter_ms, got.packet_loss, got.queue_depth) == (12.5, 1.25, 0.5, 3)
    assert (got.price_per_gb, got.reputation, got.capabilities, got.api) == (0.02, 0.95, ("exec",), "127.0.0.1:8001")
    assert got.beacon_id == fingerprint(key.public_key())
    assert got.public_key == key.public_key().public_bytes(serialization.Encoding.X962,
                                                           serialization.PublicFormat.CompressedPoint)
    assert len(got.public_key) == 33


def test_unknown_metrics_stay_unknown() -> None:
    got = decode(encode(beacon(latency_ms=None, jitter_ms=None), "n1", generate()), "n1", NOW)
    assert got.latency_ms is None and got.jitter_ms is None and got.price_per_gb == 0.02


@pytest.mark.parametrize(
    "mutate, cause",
    [
        (lambda t: {**t, "m": t["m"].replace("0.02", "0.01")}, "signature"),
        (lambda t: {**t, "api": "127.0.0.1:9999"}, "signature"),
        (lambda t: {**t, "c": "exec,container"}, "signature"),
        (lambda t: {**t, "k": encode(beacon(), "n1", generate())["k"]}, "signature"),
        (lambda t: {**t, "sig": "AAAA"}, "signature"),
        (lambda t: {**t, "sig": "A" * 86}, "signature"),  # 64 zero bytes: r = s = 0
        (lambda t: {**t, "k": "A" * 44}, "signature"),  # 33 bytes, but no point
        (lambda t: {**t, "k": t["k"][:-2]}, "signature"),
        (lambda t: {**t, "k": uncompressed(t["k"])}, "signature"),  # the same key, but not as gossiped
        (lambda t: {k: v for k, v in t.items() if k != "sig"}, "malformed"),
        (lambda t: {**t, "hc": "1"}, "version"),  # a node from before the holders' ranking changed
        (lambda t: {**t, "hc": "2"}, "version"),  # ... and from before the rendezvous weights changed
        (lambda t: {"role": "web"}, "missing"),
        (lambda t: {**t, "pad": "x" * 400}, "oversized"),
    ],
)
def test_tampered_or_foreign_tags_are_rejected_with_a_cause(mutate, cause) -> None:  # type: ignore[no-untyped-def]
    tags = encode(beacon(), "n1", generate())
    with pytest.raises(BeaconInvalid) as err:
        decode(mutate(tags), "n1", NOW)
    assert err.value.cause == cause


def test_tags_copied_to_another_member_do_not_verify() -> None:
    tags = encode(beacon(), "n1", generate())
    with pytest.raises(BeaconInvalid) as err:
        decode(tags, "n2", NOW)
    assert err.value.cause == "signature"


def test_stale_and_future_beacons_are_rejected() -> None:
    key = generate()
    with pytest.raises(BeaconInvalid) as err:
        decode(encode(beacon(timestamp=NOW - int(MAX_AGE_S) - 1), "n1", key), "n1", NOW)
    assert err.value.cause == "stale"
    with pytest.raises(BeaconInvalid) as err:
        decode(encode(beacon(timestamp=NOW + 3600), "n1", key), "n1", NOW)
    assert err.value.cause == "future"


@pytest.mark.parametrize("field, value", [("reputation", 1.5), ("packet_loss", 101.0), ("latency_ms", -1.0),
                                          ("price_per_gb", float("inf")), ("queue_depth", float("nan"))])
def test_signed_but_out_of_range_values_are_rejected(field: str, value: float) -> None:
    tags = encode(beacon(**{field: value}), "n1", generate())
    with pytest.raises(BeaconInvalid) as err:
        decode(tags, "n1", NOW)
    assert err.value.cause in ("range", "malformed")


def test_the_timestamp_keeps_milliseconds_and_nothing_finer_or_odd_is_read() -> None:
    # The node's publisher compares it with when its workloads were accepted (one that came and went
    # between two beacons is news); to the whole second, one accepted in the beacon's own second was not
    # "after" it. Origins still read it by the second (placement.unreported).
    key = generate()
    assert decode(encode(beacon(timestamp=NOW + 0.25), "n1", key), "n1", NOW).timestamp == NOW + 0.25
    assert encode(beacon(timestamp=NOW + 0.1234), "n1", key)["m"].endswith(f",{NOW}.123")
    assert encode(beacon(timestamp=NOW), "n1", key)["m"].endswith(f",{NOW}")
    for bad in (f"{NOW}.1234", f"{NOW}.", "1e9", f"-{NOW}", f"{NOW} ", "0x10", "nan"):
        tags = encode(beacon(), "n1", key)
        tags["m"] = tags["m"].rsplit(",", 1)[0] + "," + bad
        tags["sig"] = _b64(keys.sign(key, _message("n1", tags["api"], tags["m"], tags["c"], "", None)))  # signed
        with pytest.raises(BeaconInvalid) as err:
            decode(tags, "n1", NOW)
        assert err.value.cause == "malformed" and "not Unix seconds" in str(err.value), bad


def test_worst_case_tags_fit_serfs_512_byte_limit() -> None:
    worst = beacon(
        api="[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535",
        timestamp=9_999_999_999.999,
        latency_ms=123456.789, jitter_ms=123456.789, packet_loss=99.99999, queue_depth=999999999,
        price_per_gb=123456.789, reputation=0.123456789, cpu_total=123456.789, cpu_free=123456.789,
        mem_total_mb=1.23456789e11, mem_free_mb=1.23456789e11,
        capabilities=("container", "exec", "gpu-nvidia-a100", "sgx-enclave"),
    )
    admission = Admission(99_999_999_999, b"\xff" * 64, 0.123)  # with an attested reputation
    tags = {**encode(worst, "n" * 128, generate(), admission), "fo": "1"}  # + failover's flag
    assert len(tags["k"]) == 44 and len(tags["sig"]) == 86  # 33-byte P-256 point, 64-byte r‖s
    assert encoded_size(tags) <= SERF_TAGS_LIMIT, encoded_size(tags)


def test_the_admission_travels_signed_with_the_beacon() -> None:
    key = generate()
    admission = Admission(NOW + 3600, bytes(range(64)))
    tags = encode(beacon(), "n1", key, admission)
    got = decode(tags, "n1", NOW)
    assert got.admission == admission and got.public_key == keys.public_bytes(key)
    assert "admission" not in got.metrics() and "public_key" not in got.metrics()
    # Swapping, dropping or adding an admission breaks the beacon signature.
    other = Admission(NOW + 7200, bytes(64)).encode()
    for forged in ({**tags, "a": other}, {k: v for k, v in tags.items() if k != "a"}):
        with pytest.raises(BeaconInvalid) as err:
            decode(forged, "n1", NOW)
        assert err.value.cause == "signature"
    with pytest.raises(BeaconInvalid) as err:
        decode({**encode(beacon(), "n1", key), "a": other}, "n1", NOW)
    assert err.value.cause == "signature"
    for garbage in ("x", "12.", "1" * 13 + ".AAAA", "123.!!!!", f"123.{'A' * 10}"):
        with pytest.raises(BeaconInvalid):
            Admission.decode(garbage)


def test_node_key_persists_with_private_permissions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = load_or_create_node_key(tmp_path)
    again = load_or_create_node_key(tmp_path)
    assert isinstance(first.curve, ec.SECP256R1)
    assert fingerprint(first.public_key()) == fingerprint(again.public_key())
    assert (tmp_path / "node.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("other, says", [(Ed25519PrivateKey.generate, "an Ed25519 key"),
                                         (lambda: ec.generate_private_key(ec.SECP384R1()), "an ECDSA secp384r1 key")])
def test_a_node_key_that_is_not_p256_is_refused_naming_the_file(tmp_path: Path, other: Any, says: str) -> None:
    (tmp_path / "node.key").write_bytes(other().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(KeyError_) as err:
        load_or_create_node_key(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'node.key'}: holds {says}; hypercore keys are ECDSA P-256")
    assert "move it away" in str(err.value)


def test_signatures_are_64_raw_bytes_and_verify_only_as_such() -> None:
    key = generate()
    signature = keys.sign(key, b"message")
    assert len(signature) == 64 and len(keys.public_bytes(key)) == 33
    keys.verify(key.public_key(), signature, b"message")
    keys.verify(keys.public_bytes(key), signature, b"message")
    keys.verify(bytearray(keys.public_bytes(key)), memoryview(signature), b"message")
    der = key.sign(b"message", ec.ECDSA(hashes.SHA256()))  # the same scheme, DER-encoded: not our wire form
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256's group order
    bad = [
        (key.public_key(), signature, b"other message"),
        (generate().public_key(), signature, b"message"),
        (key.public_key(), der, b"message"),
        (key.public_key(), signature[:63], b"message"),
        (key.public_key(), bytes(64), b"message"),
        (key.public_key(), signature[:32] + n.to_bytes(32, "big"), b"message"),  # s out of range
        (b"\x02" + bytes(32), signature, b"message"),
        (keys.public_bytes(key)[:32], signature, b"message"),
        (ec.generate_private_key(ec.SECP384R1()).public_key(), signature, b"message"),
        (Ed25519PrivateKey.generate().public_key(), signature, b"message"),
    ]
    for public, sig, message in bad:
        with pytest.raises(InvalidSignature):
            keys.verify(public, sig, message)


def test_probe_window_median_jitter_and_loss() -> None:
    w = ProbeWindow(size=5)
    for rtt in (10.0, 14.0, None, 12.0, 20.0, 11.0):  # the first falls out of the window
        w.record(rtt)
    s = w.stats()
    assert s.samples == 5
    assert s.latency_ms == pytest.approx(13.0)  # median of 14, 12, 20, 11
    assert s.jitter_ms == pytest.approx((2 + 8 + 9) / 3)  # |12-14|, |20-12|, |11-20|
    assert s.packet_loss == pytest.approx(20.0)
    assert ProbeWindow().stats().latency_ms is None


def test_an_answer_late_by_a_tcp_retransmission_counts_as_loss_not_jitter() -> None:
    w = ProbeWindow(size=10)
    for rtt in (120.0, 121.0, 120.5, 120.0, 330.0, 121.0, 120.0, 120.5, 121.0, 120.0):  # 330: resent after 200 ms
        w.record(rtt)
    s = w.stats()
    assert s.packet_loss == pytest.approx(10.0)
    assert s.latency_ms == pytest.approx(120.5) and s.jitter_ms is not None and s.jitter_ms < 1.0
    w.record(270.0 - 0.5)  # 149.5 ms over the median: slow, but not a retransmission; it is jitter
    assert w.stats().packet_loss == pytest.approx(10.0) and w.stats().jitter_ms > 10


def test_probe_targets_are_bounded_whatever_the_cluster_size_and_cover_every_peer_in_turn() -> None:
    peers = [f"n{i}" for i in range(1000)]
    links = PeerLinks()
    assert len(links.choose(peers, 3)) == 3
    assert sorted(links.choose(peers[:2], 3)) == peers[:2]
    seen: set[str] = set()
    for _ in range(4):  # never-probed peers first, so 4 rounds of 3 reach 12 different peers
        for peer in links.choose(peers[:12], 3):
            links.record(peer, 1.0)
            seen.add(peer)
    assert seen == set(peers[:12])
    links.record("late", None)
    assert links.choose(["late", *peers[:12]], 1) != ["late"]  # just probed: last in line


def test_the_region_travels_signed_and_cannot_be_changed_added_or_removed() -> None:
    key = generate()
    tags = encode(beacon(region="eu-west"), "n1", key)
    assert tags["r"] == "eu-west" and decode(tags, "n1", NOW).region == "eu-west"
    plain = encode(beacon(), "n1", key)
    assert "r" not in plain and decode(plain, "n1", NOW).region is None
    for forged in ({**tags, "r": "us-east"}, {k: v for k, v in tags.items() if k != "r"}, {**plain, "r": "eu-west"}):
        with pytest.raises(BeaconInvalid) as err:
            decode(forged, "n1", NOW)
        assert err.value.cause == "signature"


def test_a_signed_region_that_is_not_a_name_is_refused() -> None:
    with pytest.raises(BeaconInvalid, match="region .* is not a region name") as err:
        decode(encode(beacon(region="eu\x1b[31m"), "n1", generate()), "n1", NOW)
    assert err.value.cause == "malformed"


def test_worst_case_tags_with_a_region_fit_serfs_512_byte_limit() -> None:
    worst = beacon(
        api="[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535", timestamp=9_999_999_999.999,
        latency_ms=123456.789, jitter_ms=123456.789, packet_loss=99.99999, queue_depth=999999999,
        price_per_gb=123456.789, reputation=0.123456789, cpu_total=123456.789, cpu_free=123456.789,
        mem_total_mb=1.23456789e11, mem_free_mb=1.23456789e11,
        capabilities=("container", "exec", "gpu-nvidia-a100", "sgx-enclave"), region="r" * 32)
    tags = {**encode(worst, "n" * 128, generate(), Admission(99_999_999_999, b"\xff" * 64, 0.123)), "fo": "1"}
    assert encoded_size(tags) <= SERF_TAGS_LIMIT, encoded_size(tags)


def test_in_a_large_cluster_probes_keep_to_a_panel_and_still_reach_every_peer_now_and_then() -> None:
    # Issue 10: probing every peer in turn meant a TLS handshake per probe once a turn took longer than the
    # connections' keep-alive (60 s: from about 90 peers up, with 3 probes every 2 s).
    from hypercore.beacon.probe import EXPLORE_ROUNDS, PANEL

    peers = [f"n{i}" for i in range(100)]
    links, other = PeerLinks(), PeerLinks()
    assert set(links.panel(peers)) != set(other.panel(peers))  # each node its own panel: load spreads
    probed: dict[str, int] = {}
    rounds = 30 * EXPLORE_ROUNDS  # 300 s of 2 s rounds
    all_measured = None
    for r in range(1, rounds + 1):
        for peer in links.choose(peers, 3):
            links.record(peer, 1.0)
            probed[peer] = probed.get(peer, 0) + 1
        if all_measured is None and len(probed) == len(peers):
            all_measured = r
    panel = set(links.panel(peers))
    assert len(panel) == PANEL and set(links.panel(peers)) == panel  # stable
    # Every panel peer about every PANEL/3 rounds (well inside the keep-alive), the rest only on exploration:
    # one never-probed peer a round until each has a first figure (84 rounds, not 5 × 84: loss and jitter
    # from here are unknown until then), then one every EXPLORE_ROUNDS-th round.
    assert all(probed.get(p, 0) >= rounds * 2 // PANEL for p in panel)
    assert all_measured == len(peers) - PANEL
    outside = {p: n for p, n in probed.items() if p not in panel}
    assert sum(outside.values()) == len(outside) + sum(1 for r in range(all_measured + 1, rounds + 1)
                                                       if r % EXPLORE_ROUNDS == 0)
    assert max(outside.values()) <= 2
    # Small clusters: every peer, in turn, as before.
    assert set(links.panel(peers[:PANEL])) == set(peers[:PANEL])
