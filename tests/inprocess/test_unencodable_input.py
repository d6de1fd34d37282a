"""A body that spells a lone surrogate (`"\\ud800"`, valid JSON, not encodable as UTF-8) is refused with a
422 that names the field, never a 500 (found by tests/fuzz/test_fuzz_api.py: the error message quoted the
refused value, and the JSON response could not be encoded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.inprocess.harness import FakeCluster

ROOT = Path(__file__).resolve().parents[2]
COST = json.loads((ROOT / "examples" / "policies" / "cost-optimized.json").read_text())
JSON = {"content-type": "application/json"}


def with_surrogate(document: dict, marker: str) -> bytes:
    return json.dumps(document).replace(marker, "x\\ud800y").encode()


@pytest.mark.parametrize("method, path, document, field", [
    ("PUT", "/v1/policy", {**COST, "name": "MARK"}, "name"),
    ("POST", "/v1/workloads", {"spec": {"command": "sleep 1", "cpu": 0.1}, "request_id": "MARK"}, "request_id"),
    ("POST", "/v1/workloads", {"spec": {"command": "sleep 1", "cpu": 0.1}, "policy": {**COST, "name": "MARK"},
                               "dry_run": True}, "name"),
])
async def test_a_lone_surrogate_is_refused_with_a_422_naming_the_field(
        fake: FakeCluster, method: str, path: str, document: dict, field: str) -> None:
    fake.add("a")
    async with fake.client("a", fake.token("root", management=True)) as client:
        r = await client.request(method, path, content=with_surrogate(document, "MARK"), headers=JSON)
        assert r.status_code == 422, r.text
        message = r.json()["error"]["message"]
        assert field in message
        assert "ud800" in message or "unicode" in message  # the refused value as its escape, or why
        assert (await client.get("/v1/policy")).json()["name"] != "x\ud800y"  # nothing taken
