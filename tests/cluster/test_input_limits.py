"""Issue 9 on a real agent: a huge body without a token, and a token spawning too fast, cost the node little."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx

from hypercore.devcluster import Cluster

MIB = 1024 * 1024


def test_a_100_mib_chunked_body_without_a_token_is_refused_fast_and_not_buffered(cluster: Cluster) -> None:
    node = cluster.add("solo", "--enable-exec", "--disable-containers")
    before = node.rss_kb()
    block = b"x" * MIB

    def body() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for _ in range(100):
            yield block

    for _ in range(3):
        started = time.monotonic()
        r = httpx.post(f"{node.url}/v1/workloads", content=body(), verify=node.pki.verify(), timeout=30,
                       headers={"Content-Type": "application/json"})
        took = time.monotonic() - started
        assert took < 1.0, f"answered after {took:.2f} s"
        assert r.status_code in (401, 413), r.text
    growth = node.rss_kb() - before
    print(f"\n100 MiB chunked body: HTTP {r.status_code} in {took * 1000:.0f} ms; agent RSS +{growth} KB")
    assert growth < 20 * 1024, growth
    assert node.get("/healthz").status_code == 200


def test_one_token_spawning_395_times_in_5_s_gets_429_beyond_its_budget(cluster: Cluster) -> None:
    node = cluster.add("solo", "--enable-exec", "--disable-containers", "--spawn-rate", "20", "--spawn-burst", "40")
    cluster.wait_converged()
    body = {"spec": {"command": "true", "cpu": 0.1}, "dry_run": True}
    with httpx.Client(base_url=node.url, headers=node.headers(), verify=node.pki.verify(), timeout=30) as client:
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            futures = []
            for i in range(395):  # evenly over 5 s: 79 a second against a budget of 20 (after a burst of 40)
                time.sleep(max(0.0, started + i * 5.0 / 395 - time.monotonic()))
                futures.append(pool.submit(client.post, "/v1/workloads", json=body))
            answers = [f.result() for f in futures]
        elapsed = time.monotonic() - started
    assert elapsed < 6.0, elapsed
    ok = sum(1 for r in answers if r.status_code == 200)
    limited = [r for r in answers if r.status_code == 429]
    assert ok + len(limited) == 395, [r.text for r in answers if r.status_code not in (200, 429)][:3]
    assert 40 + 20 * 4.5 <= ok <= 40 + 20 * elapsed + 1, (ok, elapsed)
    assert all(int(r.headers["Retry-After"]) >= 1 for r in limited)
    print(f"\n395 spawns in {elapsed:.2f} s: {ok} accepted, {len(limited)} answered 429")
    # Another user is not held back by this one.
    other = node.post("/v1/workloads", body, token=cluster.pki.token("someone-else"))
    assert other.status_code == 200, other.text
