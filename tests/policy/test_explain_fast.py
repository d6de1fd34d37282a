"""Issue 12: `policy explain` builds its node table straight from the parsed JSON columns.

The speed itself is measured in bench/explain_100k.py, never here. These tests
pin what must not change on the way: the fast way answers for a clean file
(the record-by-record parser is not even called), and every kind of bad value
still gets the record parser's message, with its node index, field and
line:column. In-process (click's CliRunner) on files written to tmp_path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import hypercore.policy.node_columns as node_columns
from hypercore.cli.main import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


def explain(nodes: Path, *extra: str) -> Result:
    result = CliRunner().invoke(cli, ["policy", "explain", str(EXAMPLES / "low-latency.json"), "--nodes", str(nodes),
                                      *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def records(n: int) -> list[dict[str, Any]]:
    # Every fourth node is too far for low-latency (max_latency_ms 100); one in 50 is not alive.
    return [{"name": f"n{i:05d}", "status": "failed" if i % 50 == 7 else "alive", "latency_ms": 150 if i % 4 == 0 else i % 90,
             "jitter_ms": 1.5, "packet_loss": 0, "price_per_gb": 0.01, "reputation": 0.9, "queue_depth": i % 7,
             "capabilities": ["exec"]} for i in range(n)]


def test_a_clean_file_never_goes_record_by_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the record-by-record parser was called for a clean file")

    monkeypatch.setattr(node_columns, "parse_node_records", refuse)
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps({"nodes": records(3000)}))
    result = explain(nodes, "--limit", "5", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert len(out["ranked"]) == 5 and len(out["rejected"]) == 5  # --limit caps the rejected list too
    assert out["rejected_more"] == 750 + 60 - 5  # 750 too far, 60 not alive (odd numbers: never both)
    assert out["summary"] == "2190/3000 nodes match policy 'low-latency': 750 latency_ms > 100, 60 not alive"


@pytest.mark.parametrize("bad,message", [
    ('"latency_ms": "10"', 'nodes[1].latency_ms: "10" is not allowed: expected a number (line 3, column'),
    ('"latency_ms": true', "nodes[1].latency_ms: true is not allowed: expected a number (line 3, column"),
    ('"latency_ms": -1', "nodes[1].latency_ms: -1 is not allowed: must be greater than or equal to 0 (line 3"),
    ('"reputation": 1.5', "nodes[1].reputation: 1.5 is not allowed: must be less than or equal to 1 (line 3"),
    ('"latency_ms": 1e999', "nodes[1].latency_ms: number 1e999 is out of range: too large for a float"),
    ('"note": 1e999', "nodes[1].note: number 1e999 is out of range"),  # a key the engine ignores, too
    ('"note": %s' % ("7" * 1200), "nodes[1].note: integer 777777777777777777777... has 1200 digits"),
    ('"latency_ms": NaN', "nodes[1].latency_ms: NaN is not valid JSON; use a finite number"),
    ('"latency_ms": 1, "latency_ms": 2', 'key "latency_ms" appears twice in one object (line 3'),
    ('"status": null', "nodes[1].status: null is not allowed: expected a string"),
    ('"admitted": "maybe"', 'nodes[1].admitted: "maybe" is not allowed'),
    ('"capabilities": ["gpu", 3]', "nodes[1].capabilities.1: 3 is not allowed: expected a string"),
])
def test_bad_values_keep_the_record_parser_s_messages(tmp_path: Path, bad: str, message: str) -> None:
    nodes = tmp_path / "nodes.json"
    nodes.write_text('{"nodes": [\n  {"name": "a", "latency_ms": 5},\n  {"name": "b", %s}\n]}' % bad)
    result = explain(nodes)
    assert result.exit_code == 2 and result.stdout == ""
    assert f"error: {nodes}: " in result.stderr and message in result.stderr, result.stderr


def test_a_name_given_twice_is_named(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.json"
    nodes.write_text('[{"name": "a"}, {"name": "b"}, {"name": "a"}]')
    result = explain(nodes)
    assert result.exit_code == 2 and f"error: {nodes}: [2].name: node 'a' appears twice (line 1, column" in result.stderr
