"""The fast ways (policy.fastjson, policy.node_columns) against the careful ways they stand in for.

`parse_json_strict` first tries jiter and `table_from_json` first checks whole
columns; either may step aside (NOT_FAST, or a fall back to pydantic), but
when it answers, its answer must be the careful way's, value for value. Over
hostile documents (duplicate keys, NaN, 5,000-digit integers, 1e999, lone
surrogates, deep nesting) and hostile node records (strings as numbers,
booleans, nulls, lists of objects).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from hypercore.policy import NodeTable, PolicyError, parse_node_records
from hypercore.policy.fastjson import NOT_FAST, parse_fast
from hypercore.policy.loader import parse_json_careful
from hypercore.policy.node_columns import _columns, _NotFast, table_from_json
from tests.fuzz.strategies import documents, dump, node_files, node_records, policies, trees
from tests.fuzz.support import FuzzCases, fuzz
from tests.fuzz.test_fuzz_nodes import _python


# Records a cluster writes: valid, with nulls, integers and left-out keys, so the fast way answers.
_plain_records = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=8)},
    optional={
        "status": st.sampled_from(["alive", "failed", "left", "suspect"]),
        "admitted": st.booleans(),
        "capabilities": st.none() | st.lists(st.sampled_from(["exec", "container", "gpu", "wasm"]), max_size=3),
        **{k: st.none() | st.integers(0, 100) | st.floats(0, 100) for k in
           ("latency_ms", "jitter_ms", "packet_loss", "price_per_gb", "queue_depth", "cpu_total", "cpu_free",
            "mem_total_mb", "mem_free_mb")},
        "reputation": st.none() | st.floats(0, 1) | st.sampled_from([0, 1]),
    },
)


def _careful(text: str) -> tuple[str, Any]:
    try:
        return "ok", parse_json_careful(text, "f.json")
    except PolicyError as exc:
        return "refused", [str(p) for p in exc.problems]


def test_fast_json_answers_only_what_the_careful_parse_answers(fuzz_cases: FuzzCases) -> None:
    answered: list[str] = []

    @fuzz(600)
    @given(documents(st.one_of(trees, policies, node_files)))
    def run(doc: str | bytes) -> None:
        fuzz_cases.tick()
        if isinstance(doc, bytes):
            try:
                doc = doc.decode("utf-8")
            except UnicodeDecodeError:
                return  # never reaches a parser (read_json_file refuses it)
        text = doc.removeprefix("\ufeff")
        if not text.strip():
            return
        fast = parse_fast(text)
        if fast is NOT_FAST:
            return
        answered.append(text)
        verdict, careful = _careful(text)
        assert verdict == "ok", (text[:200], careful)
        # repr tells 1 from 1.0 and -0.0 from 0.0, and shows key order.
        assert repr(fast) == repr(careful)

    run()
    fuzz_cases.report()
    assert len(answered) >= fuzz_cases.n // 10, "the fast way should answer a good share of these cases"


def _same_table(a: NodeTable, b: NodeTable) -> None:
    assert a.names == b.names and a.statuses == b.statuses
    assert np.array_equal(a.alive, b.alive) and np.array_equal(a.name_rank, b.name_rank)
    for metric, column in a.columns.items():
        assert np.array_equal(column, b.columns[metric], equal_nan=True), metric
        assert np.array_equal(a.unknown[metric], b.unknown[metric]), metric
    assert [a.cap_sets[i] for i in a.cap_ids] == [b.cap_sets[i] for i in b.cap_ids]


def _compare(data: Any) -> bool:
    """table_from_json(data) is the record parser's table or error; True when the fast way answered."""
    try:
        expected: Any = NodeTable.from_records(parse_node_records(data, "nodes.json"))
    except PolicyError as exc:
        expected = [str(p) for p in exc.problems]
    try:
        got: Any = table_from_json(data, "nodes.json")
    except PolicyError as exc:
        got = [str(p) for p in exc.problems]
    if isinstance(expected, list) or isinstance(got, list):
        assert got == expected
    else:
        _same_table(got, expected)
    items = data.get("nodes") if isinstance(data, dict) else data
    try:
        fast = _columns(items) if type(items) is list else None
    except _NotFast:
        fast = None
    if fast is not None:  # what the fast way accepts, the record parser accepts, with the same table
        assert not isinstance(expected, list), expected
        _same_table(fast, expected)
    return fast is not None


def test_node_table_from_json_is_the_record_parser_s_table(fuzz_cases: FuzzCases) -> None:
    answered = []

    @fuzz(500)
    @given(st.one_of(node_files, st.lists(node_records, max_size=30), st.lists(_plain_records, max_size=30))
           .map(_python))
    def run(data: Any) -> None:
        fuzz_cases.tick()
        answered.append(_compare(data))

    run()
    fuzz_cases.report()
    assert sum(answered) >= len(answered) // 10, "the fast way should answer a good share of these cases"


def test_node_table_from_parsed_text_is_the_record_parser_s_table(fuzz_cases: FuzzCases) -> None:
    @fuzz(300)
    @given(node_files)
    def run(tree: Any) -> None:
        fuzz_cases.tick()
        try:
            data = parse_json_careful(dump(tree), "nodes.json")
        except PolicyError:
            return
        _compare(data)

    run()
    fuzz_cases.report()
