"""What a node-to-node request costs on a kept-alive connection and on a new one (mutual TLS).

    .venv/bin/python bench/tls_connect.py [--requests 300]

Starts one real agent on loopback and sends it `GET /v1/ping` with aiohttp (the transport's client) and a
node certificate of the same cluster: first on one kept-alive connection, then each on a new connection
(TCP + TLS 1.3 handshake with client certificate), twice each. Prints latency p50/p90 and the CPU time per
request of this client and of the agent (from /proc). The agent is ended in a finally.
"""

from __future__ import annotations

import os
import sys

# bench/select.py would shadow the standard library's `select` module: drop this directory from sys.path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import aiohttp  # noqa: E402

from hypercore.devcluster import Cluster  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(cluster: Cluster, requests: int, fresh: bool) -> str:
    node = cluster["n0"]
    host, port = node.url.split("//", 1)[1].rsplit(":", 1)
    connector = aiohttp.TCPConnector(ssl=cluster.pki.node_verify("n1"), force_close=fresh)
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        async def ping() -> None:
            async with session.get(f"https://{host}:{port}/v1/ping", headers={"Host": "n0"},
                                   server_hostname="n0") as response:
                await response.read()
                assert response.status == 200, response.status

        for _ in range(5):
            await ping()
        client0, server0 = time.process_time(), cpu_seconds(node.proc.pid)  # type: ignore[union-attr]
        for _ in range(requests):
            start = time.perf_counter()
            await ping()
            latencies.append((time.perf_counter() - start) * 1000)
        client = (time.process_time() - client0) / requests * 1000
        server = (cpu_seconds(node.proc.pid) - server0) / requests * 1000  # type: ignore[union-attr]
    latencies.sort()
    return (f"{'new connection' if fresh else 'kept alive':15s} p50 {statistics.median(latencies):.2f} ms, "
            f"p90 {latencies[int(len(latencies) * 0.9)]:.2f} ms; CPU per request: client {client:.2f} ms, "
            f"agent {server:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hc-tls-") as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.add("n0", "--enable-exec", "--disable-containers")
            for fresh in (False, True, False, True):
                print(asyncio.run(measure(cluster, args.requests, fresh)), flush=True)
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
