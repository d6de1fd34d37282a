"""What the geo test-bed's WAN emulator (hypercore.testbed.wan) adds of its own, and its CPU at idle. Root only.

Two namespaces, A and B, exchange UDP round trips (a Python echo in B, a
Python pinger in A, one packet in flight, 10 ms apart):
  veth:      A and B joined by a veth pair: the kernel's own path, the baseline;
  wan 0 ms:  A and B joined through the emulator with no delay;
  wan 10 ms: through the emulator with 10 ms each way (20 ms configured per round trip).
A round trip crosses the emulator twice, so
  added per crossing     = (median wan 0 ms - median veth) / 2        target < 0.5 ms
  timer error per crossing = (median wan 10 ms - 20 ms - median veth) / 2   (how late a held packet leaves)
Idle CPU: the emulator's CPU time (from /proc) over 10 s with no traffic.

    .venv/bin/python bench/wan.py [--count 500] [--json]
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # bench/select.py shadows `select`

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from hypercore.testbed import netns
from hypercore.testbed.wan import Endpoint, WanConfig

ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""
PING = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
out = []
for i in range(int(sys.argv[2])):
    start = time.perf_counter()
    s.sendto(b"x" * 64, (sys.argv[1], 9999))
    try:
        s.recvfrom(2048)
        out.append((time.perf_counter() - start) * 1000)
    except socket.timeout:
        pass
    time.sleep(0.01)
print(json.dumps(out))
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def round_trips(a: str, b: str, b_addr: str, count: int) -> list[float]:
    echo = subprocess.Popen(netns.command(b, [sys.executable, "-c", ECHO]))
    try:
        time.sleep(0.3)
        out = subprocess.run(netns.command(a, [sys.executable, "-c", PING, b_addr, str(count)]),
                             capture_output=True, text=True, timeout=count * 0.05 + 60, check=True).stdout
        return json.loads(out)
    finally:
        echo.kill()
        echo.wait()


def through_wan(a: str, b: str, delay_s: float, count: int, tmp: Path) -> tuple[list[float], float]:
    config = WanConfig(24, [Endpoint("a", a, "wan0", "10.254.77.1", "x"), Endpoint("b", b, "wan0", "10.254.77.2", "y")],
                       {"x|x": (0.0, 0.0), "y|y": (0.0, 0.0), "x|y": (delay_s, 0.0)})
    path = tmp / "wan.json"
    path.write_text(json.dumps(config.dump()))
    wan = subprocess.Popen([sys.executable, "-m", "hypercore.testbed.wan", str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert wan.stdout is not None and wan.stdout.readline().strip() == "ready"
        idle_cpu = 0.0
        if delay_s == 0:
            before = cpu_seconds(wan.pid)
            time.sleep(10)
            idle_cpu = cpu_seconds(wan.pid) - before
        return round_trips(a, b, "10.254.77.2", count), idle_cpu
    finally:
        wan.terminate()
        wan.wait(10)


def through_veth(a: str, b: str, count: int) -> list[float]:
    netns.ip("link", "add", "hcbenchva", "netns", a, "type", "veth", "peer", "name", "hcbenchvb", "netns", b)
    netns.ip("-n", a, "addr", "add", "10.254.78.1/24", "dev", "hcbenchva")
    netns.ip("-n", b, "addr", "add", "10.254.78.2/24", "dev", "hcbenchvb")
    netns.ip("-n", a, "link", "set", "hcbenchva", "up")
    netns.ip("-n", b, "link", "set", "hcbenchvb", "up")
    return round_trips(a, b, "10.254.78.2", count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500, help="round trips per case")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/wan.py needs root (network namespaces, TUN devices)")
    names = [f"hcbench-{os.getpid()}-{x}" for x in ("a", "b", "c", "d")]
    try:
        for name in names:
            if not netns.add(name):
                sys.exit(f"namespace {name} already exists")
        with tempfile.TemporaryDirectory(prefix="hc-wan-bench-") as tmp:
            veth = statistics.median(through_veth(names[2], names[3], args.count))
            zero_samples, idle_cpu = through_wan(names[0], names[1], 0.0, args.count, Path(tmp))
            held_samples, _ = through_wan(names[0], names[1], 0.010, args.count, Path(tmp))
    finally:
        for name in names:
            netns.delete(name)
    zero, held = statistics.median(zero_samples), statistics.median(held_samples)
    p99 = statistics.quantiles(zero_samples, n=100)[98]
    added = (zero - veth) / 2
    late = (held - 20.0 - veth) / 2
    print(f"UDP round trip, median of {args.count}: veth {veth:.3f} ms, wan 0 ms {zero:.3f} ms (p99 {p99:.3f}), "
          f"wan 10+10 ms {held:.3f} ms")
    print(f"added per crossing: {added:.3f} ms (target < 0.5 ms: {'PASS' if added < 0.5 else 'MISS'}); "
          f"a held packet leaves {late:.3f} ms late per crossing")
    print(f"idle CPU: {idle_cpu:.3f} s in 10 s ({idle_cpu * 10:.2f} % of a core)")
    if args.json:
        print(json.dumps({"veth_rtt_ms": round(veth, 3), "wan0_rtt_ms": round(zero, 3), "wan0_p99_ms": round(p99, 3),
                          "wan10_rtt_ms": round(held, 3), "added_per_crossing_ms": round(added, 3),
                          "late_per_crossing_ms": round(late, 3), "idle_cpu_pct": round(idle_cpu * 10, 3)}))


if __name__ == "__main__":
    main()
