"""Fuzz the node-file parser: JSON text (strict parse) and Python values (as an API hands them over).

Whatever it is given, the parser returns node records or raises PolicyError
naming the source, and the engine decides over whatever it accepted.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hypercore.policy import PERMISSIVE_DEFAULT, NodeRecord, PolicyError, decide, parse_json_strict, parse_node_records
from tests.fuzz.strategies import Obj, Raw, as_bytes, documents, node_files
from tests.fuzz.support import FuzzCases, fuzz


def _decide_over(records: list[NodeRecord]) -> None:
    assert all(isinstance(r, NodeRecord) for r in records)
    decision = decide(PERMISSIVE_DEFAULT, records)
    assert len(decision.ranked) + len(decision.rejected) == len(records)
    decision.to_dict()
    str(decision.summary)


def test_fuzz_node_file_text(fuzz_cases: FuzzCases) -> None:
    @fuzz(400)
    @given(documents(node_files).map(as_bytes))
    def run(doc: bytes) -> None:
        fuzz_cases.tick()
        try:
            text = doc.decode("utf-8")
        except UnicodeDecodeError:
            return  # read_json_file refuses it before parsing (tested in tests/policy)
        try:
            records = parse_node_records(parse_json_strict(text, "nodes.json"), source="nodes.json")
        except PolicyError as exc:
            assert exc.problems and all(p.source == "nodes.json" for p in exc.problems)
            for problem in exc.problems:
                str(problem)  # printable: no int past the digit limit sneaks into a message
            return
        _decide_over(records)

    run()
    fuzz_cases.report()


def _python(value: Any) -> Any:
    """A tree as Python values, the numbers json would refuse made real (10**5000, inf, nan)."""
    if isinstance(value, Raw):
        token = str(value)
        if token.lstrip("-").isdigit():
            return int(token[:4000]) * 10 ** max(0, len(token) - 4000)  # as large as written
        try:
            return float(token)
        except ValueError:
            return token
    if isinstance(value, Obj):
        return {k: _python(v) for k, v in value}
    if isinstance(value, dict):
        return {k: _python(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_python(v) for v in value]
    return value


def test_fuzz_node_records_from_python_values(fuzz_cases: FuzzCases) -> None:
    @fuzz(400)
    @given(node_files.map(_python), st.sampled_from(["nodes", "https://a:8001/v1/nodes"]))
    def run(data: Any, source: str) -> None:
        fuzz_cases.tick()
        try:
            records = parse_node_records(data, source=source)
        except PolicyError as exc:
            assert exc.problems and all(p.source == source for p in exc.problems)
            for problem in exc.problems:
                str(problem)
            return
        _decide_over(records)

    run()
    fuzz_cases.report()
