"""Loading policies: flat == nested, strictness, and errors that name the file, the field and the value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hypercore.policy import Policy, PolicyError, load_policy_file, loads_policy, parse_policy
from hypercore.policy.loader import MAX_POLICY_BYTES

NESTED_COST = {
    "name": "cost",
    "mode": "enforce",
    "rules": {"max_price_per_gb": 0.05, "max_latency_ms": 500},
    "scoring": {"latency_weight": 0.1, "price_weight": 0.7, "reputation_weight": 0.1, "queue_weight": 0.1},
}
FLAT_COST = {
    "name": "cost",
    "mode": "enforce",
    "max_price_per_gb": 0.05,
    "max_latency_ms": 500,
    "scoring": {"latency_weight": 0.1, "price_weight": 0.7, "reputation_weight": 0.1, "queue_weight": 0.1},
}


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


def load_error(tmp_path: Path, content: str | bytes, name: str = "bad-policy.json") -> tuple[Path, PolicyError]:
    p = write(tmp_path, name, content)
    with pytest.raises(PolicyError) as info:
        load_policy_file(p)
    return p, info.value


# --------------------------------------------------------------------------- flat vs nested


def test_flat_form_equals_nested_form():
    flat = loads_policy(json.dumps(FLAT_COST))
    nested = loads_policy(json.dumps(NESTED_COST))
    assert flat == nested
    assert flat.rules.max_price_per_gb == 0.05 and flat.rules.max_latency_ms == 500


def test_every_rule_key_may_be_flat():
    rules = {
        "required_capabilities": ["exec", "gpu"],
        "max_latency_ms": 100,
        "max_jitter_ms": 20,
        "max_packet_loss": 1.5,
        "max_price_per_gb": 0.03,
        "min_reputation_score": 0.9,
        "max_queue_depth": 10,
    }
    assert parse_policy(rules) == parse_policy({"rules": rules})


def test_flat_and_nested_may_mix_when_disjoint():
    mixed = parse_policy({"max_latency_ms": 100, "rules": {"max_jitter_ms": 20}})
    assert mixed == parse_policy({"rules": {"max_latency_ms": 100, "max_jitter_ms": 20}})


def test_flat_with_null_rules_object():
    assert parse_policy({"max_latency_ms": 100, "rules": None}) == parse_policy({"rules": {"max_latency_ms": 100}})


def test_example_flat_files_equal_their_nested_rewrite(examples_dir):
    for stem in ("low-latency", "cost-optimized"):
        raw = json.loads((examples_dir / f"{stem}.json").read_text())
        rules = {k: raw.pop(k) for k in list(raw) if k.startswith(("max_", "min_", "required_"))}
        assert rules, f"{stem} is expected to use the flat form"
        raw["rules"] = rules
        assert load_policy_file(examples_dir / f"{stem}.json") == parse_policy(raw)


def test_rule_both_flat_and_nested_is_an_error():
    with pytest.raises(PolicyError) as info:
        loads_policy('{"max_latency_ms": 100, "rules": {"max_latency_ms": 50}}', source="dup.json")
    msg = str(info.value)
    assert msg.startswith("dup.json")
    assert "max_latency_ms" in msg
    assert "both" in msg


def test_rule_both_flat_and_nested_is_an_error_even_if_equal():
    with pytest.raises(PolicyError):
        parse_policy({"max_latency_ms": 100, "rules": {"max_latency_ms": 100}})


def test_capabilities_are_deduplicated_and_sorted():
    assert parse_policy({"rules": {"required_capabilities": ["gpu", "exec", "gpu"]}}).rules.required_capabilities == [
        "exec",
        "gpu",
    ]


# --------------------------------------------------------------------------- names


def test_name_defaults_to_file_stem(tmp_path):
    p = write(tmp_path, "my-gpu-policy.json", '{"mode": "permissive"}')
    assert load_policy_file(p).name == "my-gpu-policy"


def test_explicit_name_wins_over_stem(tmp_path):
    p = write(tmp_path, "file-stem.json", '{"name": "declared"}')
    assert load_policy_file(p).name == "declared"


def test_name_from_text_without_file():
    assert loads_policy("{}").name == "unnamed"
    assert loads_policy("{}", default_name="given").name == "given"
    assert loads_policy('{"name": "own"}', default_name="given").name == "own"


def test_defaults_of_an_empty_policy():
    p = loads_policy("{}")
    assert p.mode == "enforce"
    assert p.rules.model_dump() == {
        "required_capabilities": None,
        "max_latency_ms": None,
        "max_jitter_ms": None,
        "max_packet_loss": None,
        "max_price_per_gb": None,
        "min_reputation_score": None,
        "max_queue_depth": None,
    }
    assert p.scoring.normalization == "fixed"
    assert (p.scoring.scales.latency_ms, p.scoring.scales.price_per_gb, p.scoring.scales.queue_depth) == (200, 1.0, 100)


# --------------------------------------------------------------------------- errors naming file, path, value

BAD_FIELDS = [
    # (json text, field path in the message, the bad value as shown)
    ('{"max_latncy_ms": 100}', "max_latncy_ms", None),
    ('{"rules": {"max_latncy_ms": 100}}', "rules.max_latncy_ms", None),
    ('{"scoring": {"latency_wieght": 1}}', "scoring.latency_wieght", None),
    ('{"scoring": {"scales": {"latency": 100}}}', "scoring.scales.latency", None),
    ('{"rules": {"max_latency_ms": "100"}}', "rules.max_latency_ms", "'100'"),
    ('{"rules": {"max_latency_ms": true}}', "rules.max_latency_ms", "true"),
    ('{"rules": {"max_latency_ms": [100]}}', "rules.max_latency_ms", None),
    ('{"rules": {"max_latency_ms": -1}}', "rules.max_latency_ms", "-1"),
    ('{"rules": {"max_price_per_gb": -0.01}}', "rules.max_price_per_gb", "-0.01"),
    ('{"rules": {"max_queue_depth": -5}}', "rules.max_queue_depth", "-5"),
    ('{"rules": {"max_jitter_ms": -0.5}}', "rules.max_jitter_ms", "-0.5"),
    ('{"rules": {"min_reputation_score": 1.5}}', "rules.min_reputation_score", "1.5"),
    ('{"rules": {"min_reputation_score": -0.1}}', "rules.min_reputation_score", "-0.1"),
    ('{"rules": {"max_packet_loss": 150}}', "rules.max_packet_loss", "150"),
    ('{"rules": {"max_latency_ms": 1e400}}', "rules.max_latency_ms", "Infinity"),
    ('{"rules": {"required_capabilities": "gpu"}}', "rules.required_capabilities", "'gpu'"),
    ('{"rules": {"required_capabilities": ["gpu", ""]}}', "rules.required_capabilities[1]", "''"),
    ('{"rules": {"required_capabilities": ["gpu", 7]}}', "rules.required_capabilities[1]", "7"),
    ('{"rules": 5}', "rules", "5"),
    ('{"mode": "strict"}', "mode", "'strict'"),
    ('{"mode": "Enforce"}', "mode", "'Enforce'"),
    ('{"name": ""}', "name", "''"),
    ('{"name": 42}', "name", "42"),
    ('{"scoring": {"latency_weight": -0.2}}', "scoring.latency_weight", "-0.2"),
    ('{"scoring": {"price_weight": "0.5"}}', "scoring.price_weight", "'0.5'"),
    ('{"scoring": {"normalization": "minmax"}}', "scoring.normalization", "'minmax'"),
    ('{"scoring": {"scales": {"latency_ms": 0}}}', "scoring.scales.latency_ms", "0"),
    ('{"scoring": {"scales": {"price_per_gb": -1}}}', "scoring.scales.price_per_gb", "-1"),
]


@pytest.mark.parametrize("text,path,value", BAD_FIELDS, ids=[b[1] + ":" + b[0][-24:] for b in BAD_FIELDS])
def test_bad_field_error_names_file_path_and_value(tmp_path, text, path, value):
    p, err = load_error(tmp_path, text)
    msg = str(err)
    assert msg.startswith(f"{p}: "), msg
    assert any(prob.path == path for prob in err.problems), [(q.path, q.message) for q in err.problems]
    assert f"{p}: {path}: " in msg
    if value is not None:  # values are shown as JSON writes them: "100", not '100'
        assert value.replace("'", '"') in msg, msg
    assert "Traceback" not in msg


def test_unknown_key_message_says_unknown(tmp_path):
    _, err = load_error(tmp_path, '{"max_latncy_ms": 100, "max_latency_ms": 50}')
    (prob,) = err.problems
    assert prob.path == "max_latncy_ms"
    assert "unknown key" in prob.message


def test_every_problem_is_reported(tmp_path):
    _, err = load_error(
        tmp_path, '{"rules": {"max_latency_ms": -1, "min_reputation_score": 2}, "scoring": {"queue_weight": -3}}'
    )
    assert sorted(p.path for p in err.problems) == [
        "rules.max_latency_ms",
        "rules.min_reputation_score",
        "scoring.queue_weight",
    ]
    assert len(str(err).splitlines()) == 3


@pytest.mark.parametrize(
    "content,needle",
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("not json", "not valid JSON"),
        ('{"max_latency_ms": 100', "not valid JSON"),
        ('{"max_latency_ms": 100,}', "not valid JSON"),
        ("{'max_latency_ms': 100}", "not valid JSON"),
        ('{"max_latency_ms": NaN}', "NaN"),
        ('{"max_latency_ms": Infinity}', "Infinity"),
        ('{"max_latency_ms": -Infinity}', "-Infinity"),
        ('{"max_latency_ms": 100, "max_latency_ms": 200}', "max_latency_ms"),
        ('{"rules": {"max_jitter_ms": 1, "max_jitter_ms": 1}}', "max_jitter_ms"),
        ("[]", "list"),
        ('[{"name": "x"}]', "list"),
        ('"policy"', "str"),
        ("42", "int"),
        ("null", "null"),
        ("true", "bool"),
        (b"\xff\xfe{\x00}\x00", "UTF-8"),
        ("[" * 100_000 + "]" * 100_000, ""),
    ],
    ids=[
        "empty", "whitespace", "garbage", "truncated", "trailing-comma", "single-quotes", "nan", "inf", "-inf",
        "duplicate-top", "duplicate-nested", "empty-list", "list", "string", "number", "null", "bool", "utf16",
        "deep-nesting",
    ],
)
def test_malformed_file_errors_name_the_file(tmp_path, content, needle):
    p, err = load_error(tmp_path, content)
    msg = str(err)
    assert msg.startswith(f"{p}: "), msg
    assert needle in msg
    assert err.problems and all(prob.source == str(p) for prob in err.problems)


def test_duplicate_key_error_mentions_twice(tmp_path):
    _, err = load_error(tmp_path, '{"mode": "enforce", "mode": "permissive"}')
    assert '"mode"' in str(err) and "twice" in str(err)
    assert "(line 1, column 21)" in str(err)  # the second "mode"


def test_top_level_non_object_says_object(tmp_path):
    _, err = load_error(tmp_path, "[1, 2]")
    assert "expected a JSON object" in str(err)


def test_huge_file_is_refused(tmp_path):
    big = '{"description": "x", "name": "big"}' + " " * (MAX_POLICY_BYTES + 1)
    p, err = load_error(tmp_path, big)
    msg = str(err)
    assert msg.startswith(f"{p}: ")
    assert str(MAX_POLICY_BYTES) in msg
    assert MAX_POLICY_BYTES == 256 * 1024


def test_huge_text_is_refused():
    with pytest.raises(PolicyError) as info:
        loads_policy("{}" + " " * (MAX_POLICY_BYTES + 10), source="big")
    assert str(info.value).startswith("big: ")
    with pytest.raises(PolicyError):
        loads_policy(b"{}" + b" " * (MAX_POLICY_BYTES + 10), source="big")


def test_file_at_exactly_the_size_limit_loads(tmp_path):
    text = '{"name": "edge"}'
    p = write(tmp_path, "edge.json", text + " " * (MAX_POLICY_BYTES - len(text)))
    assert p.stat().st_size == MAX_POLICY_BYTES
    assert load_policy_file(p).name == "edge"
    p2 = write(tmp_path, "over.json", text + " " * (MAX_POLICY_BYTES - len(text) + 1))
    with pytest.raises(PolicyError):
        load_policy_file(p2)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(PolicyError) as info:
        load_policy_file(tmp_path / "nope.json")
    assert str(info.value) == f"{tmp_path / 'nope.json'}: no such file"
    with pytest.raises(PolicyError) as info:
        load_policy_file(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: ")


def test_utf8_bom_is_a_clear_error_or_accepted(tmp_path):
    p = write(tmp_path, "bom.json", b'\xef\xbb\xbf{"name": "bom"}')
    try:
        assert load_policy_file(p).name == "bom"
    except PolicyError as exc:
        assert str(exc).startswith(f"{p}: ")


def test_python_float_nan_and_inf_are_refused_by_parse_policy():
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(PolicyError) as info:
            parse_policy({"rules": {"max_latency_ms": bad}})
        assert info.value.problems[0].path == "rules.max_latency_ms"
        with pytest.raises(PolicyError):
            parse_policy({"scoring": {"latency_weight": bad}})


def test_int_limits_accepted_as_numbers():
    p = parse_policy({"rules": {"max_latency_ms": 100, "max_queue_depth": 0}})
    assert p.rules.max_latency_ms == 100.0 and p.rules.max_queue_depth == 0.0


def test_policy_is_immutable():
    p = parse_policy({})
    with pytest.raises(Exception):
        p.name = "changed"  # type: ignore[misc]


def test_round_trip_through_json():
    p = parse_policy(FLAT_COST)
    assert loads_policy(json.dumps(p.model_dump(mode="json"))) == p
    assert isinstance(p, Policy)


def test_problem_str_format():
    with pytest.raises(PolicyError) as info:
        loads_policy('{"rules": {"max_latency_ms": -1}}', source="src.json")
    (prob,) = info.value.problems
    assert (prob.source, prob.path) == ("src.json", "rules.max_latency_ms")
    assert (prob.line, prob.column) == (1, 12)  # where "max_latency_ms" is in the text
    assert str(prob) == f"src.json: rules.max_latency_ms: {prob.message} (line 1, column 12)"
    assert "-1" in prob.message and ">= 0" in prob.message.replace("greater than or equal to", ">=")


def test_flat_rule_error_names_the_key_and_value():
    with pytest.raises(PolicyError) as info:
        loads_policy('{"max_latency_ms": -1}', source="flat.json")
    msg = str(info.value)
    assert msg.startswith("flat.json: ")
    assert "max_latency_ms" in msg and "-1" in msg
