"""Hostile JSON for the fuzzers: documents written token by token, so they can hold what
Python's json.dumps never writes (5,000-digit integers, 1e999, NaN, duplicate keys,
lone surrogates, 100,000 levels of nesting, bytes that are not UTF-8).

A tree is made of plain JSON values plus:
- `Raw`: a token written as is (a huge number, NaN, an escaped lone surrogate);
- `Obj`: an object as a list of (key, value) pairs, so a key may appear twice.
`dump(tree)` writes it; `documents(tree_strategy)` adds the damage done to whole
files (a trailing newline, a BOM, deep nesting, truncation, invalid UTF-8).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from hypercore.policy.model import RULE_KEYS
from hypercore.policy.nodes import METRICS


@dataclass(frozen=True)
class Raw:
    """A JSON token written verbatim.

    Not a str subclass: hypothesis 6.170, splicing earlier values into a test case, took a Raw for one of
    its own string choices and failed inside itself (KeyError: <class 'Raw'> in conjecture/data.py), twice
    in `make test` on 2026-11-29."""

    text: str

    def __str__(self) -> str:
        return self.text


class Obj(tuple):  # type: ignore[type-arg]
    """A JSON object as (key, value) pairs; keys may repeat."""


def dump(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


UNICODE_DIGITS = "٠١٢٣٤٥٦٧٨٩０１２３۴߀०৪๓"
HOSTILE_CHARS = "\x00\x01\x07\x08\x1b\x7f\x85\x9b\u200b\u200e\u202e\u2028\u2029\ufeff\n\r\t[]/:=@;$`\\\"' " + UNICODE_DIGITS

huge_ints = st.one_of(
    st.integers(4301, 6000).map(lambda n: Raw("9" * n)),  # past Python's int-string limit
    st.integers(1001, 4300).map(lambda n: Raw("-" + "1" * n)),  # past ours, within Python's
    st.integers(300, 1000).map(lambda n: Raw("7" * n)),  # fine for json, too large for a float
)
float_tokens = st.sampled_from(
    ["1e999", "-1e999", "1E400", "-0.0", "-0", "1e-400", "NaN", "Infinity", "-Infinity", "0e0", "1.7976931348623159e308",
     "123456789012345678901234567890.5e300", "5e-324", "1" + "0" * 400 + ".5"]
).map(Raw)
surrogates = st.sampled_from(['"\\ud800"', '"a\\udfffb"', '"\\u0000"', '"\\u001b[31m"']).map(Raw)
numbers = st.one_of(
    st.integers(-5, 2000),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e9, max_value=1e9),
    huge_ints,
    float_tokens,
)
hostile_text = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.sampled_from(HOSTILE_CHARS + "abcAZ09.-_"), max_size=16),
    st.sampled_from(["[red]x[/red]", "rack[red]-1", ":smile:", "[bold]", "\x1b]0;title\x07", "exec\n", "8080:80\n",
                     "٨٠٨٠:80", "busybox\n", "A\n", "gpu", "exec", "container", ""]),
    st.text(max_size=8).map(lambda s: s + "\n"),
    st.integers(0, 5).map(lambda n: "x" * (10 ** n)),  # long strings
)
leaves = st.one_of(st.none(), st.booleans(), numbers, hostile_text, surrogates)

POLICY_KEYS = ("name", "description", "mode", "strategy", "rules", "scoring", *RULE_KEYS)
SCORING_KEYS = ("latency_weight", "price_weight", "reputation_weight", "queue_weight", "scales", "normalization")
NODE_KEYS = ("name", "status", "admitted", "capabilities", *METRICS, "cpu_total", "cpu_free", "mem_total_mb", "mem_free_mb")
SPEC_KEYS = ("command", "image_ref", "args", "cpu", "mem", "ports", "env")
keys = st.one_of(st.sampled_from(POLICY_KEYS + SCORING_KEYS + NODE_KEYS + SPEC_KEYS + ("nodes", "spec", "policy")),
                 hostile_text)


def _objects(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(st.tuples(keys, children), max_size=6).map(Obj)


trees = st.recursive(leaves, lambda children: st.lists(children, max_size=5) | _objects(children), max_leaves=20)
small = st.recursive(leaves, lambda children: st.lists(children, max_size=3) | _objects(children), max_leaves=5)


def _shaped(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(required, optional=optional)


policies = st.one_of(
    _shaped({}, {
        "name": hostile_text | small,
        "mode": st.sampled_from(["enforce", "permissive"]) | small,
        "strategy": st.sampled_from(["spread", "binpack"]) | small,
        "rules": st.dictionaries(st.sampled_from(RULE_KEYS) | hostile_text, numbers | small, max_size=4),
        "scoring": st.dictionaries(st.sampled_from(SCORING_KEYS), numbers | small, max_size=4),
        **{k: numbers | small for k in RULE_KEYS[1:3]},
        "required_capabilities": st.lists(hostile_text, max_size=3) | small,
    }),
    trees,
)

node_records = st.one_of(
    _shaped({"name": hostile_text}, {
        "status": st.sampled_from(["alive", "failed", "left"]) | hostile_text,
        "admitted": st.booleans() | small,
        "capabilities": st.lists(hostile_text, max_size=4) | small,
        **{k: numbers | small for k in NODE_KEYS if k not in ("name", "status", "admitted", "capabilities")},
    }),
    small,
)
node_files = st.one_of(
    st.lists(node_records, max_size=8),
    st.lists(node_records, max_size=8).map(lambda nodes: {"nodes": nodes}),
    trees,
)

_SPEC_EXTRAS = {
    "cpu": st.floats(0.1, 8) | numbers | small,
    "mem": st.integers(1, 4096) | numbers | small,
    "ports": st.lists(st.sampled_from(["8080:80", "53:53/udp"]) | hostile_text, max_size=3) | small,
    "env": st.dictionaries(st.sampled_from(["A", "_B1", "PATH"]) | hostile_text, hostile_text | small, max_size=3) | small,
}
specs = st.one_of(
    _shaped({"command": st.sampled_from(["true", "echo hi"]) | hostile_text}, _SPEC_EXTRAS),
    _shaped({"image_ref": st.sampled_from(["busybox", "nginx:latest"]) | hostile_text},
            {**_SPEC_EXTRAS, "args": st.lists(hostile_text, max_size=3) | small}),
    _shaped({}, {
        "command": hostile_text | small,
        "image_ref": hostile_text | small,
        "args": st.lists(hostile_text, max_size=3) | small,
        **_SPEC_EXTRAS,
    }),
    small,
)


def _damage(text: str, how: str, n: int) -> str | bytes:
    if how == "newline":
        return text + "\n"
    if how == "bom":
        return "\ufeff" + text
    if how == "nest":
        return "[" * n + text + "]" * n
    if how == "truncate":
        return text[: n % (len(text) + 1)]
    if how == "garbage":
        return text + "}{,"
    if how == "latin1":
        return text.encode("utf-8", "surrogatepass") + b"\xff\xfe\xc0"
    return text


def documents(tree_strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[str | bytes]:
    """Whole documents: a tree written out, sometimes damaged the way files and bodies get damaged."""
    return st.builds(
        lambda tree, how, n: _damage(dump(tree), how, n),
        tree_strategy,
        st.sampled_from(["none", "none", "none", "newline", "bom", "nest", "truncate", "garbage", "latin1"]),
        st.sampled_from([1, 50, 600, 5000, 100_000]),
    )


def as_bytes(doc: str | bytes) -> bytes:
    return doc if isinstance(doc, bytes) else doc.encode("utf-8", "surrogatepass")
