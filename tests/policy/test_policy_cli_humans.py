"""Issue 12, "Policy CLI for humans": each finding of the review is a regression test here.

In-process (click's CliRunner, stdout and stderr apart) and with a fake agent API
(ApiClient.request monkeypatched) for the workload-id part: no cluster needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hypercore.cli.main import cli
from hypercore.policy import Policy, PolicyError, load_policy_file, loads_policy, parse_node_records

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


def invoke(*args: str | Path) -> Result:
    result = CliRunner().invoke(cli, [str(a) for a in args], terminal_width=80)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output + result.stderr
    return result


def error_of(text: str, source: str = "p.json") -> str:
    with pytest.raises(PolicyError) as info:
        loads_policy(text, source)
    return str(info.value)


# --------------------------------------------------------------------------- 1. comments


@pytest.mark.parametrize("text,where,part", [
    ('{\n  // a comment\n  "name": "x"\n}', "(line 2, column 3)", "//"),
    ('{"name": "x", /* c */ "mode": "enforce"}', "(line 1, column 15)", "/* */"),
    ('{"name": "x" // after a value\n}', "(line 1, column 14)", "//"),
    ('# a shell comment\n{"name": "x"}', "(line 1, column 1)", "#"),
])
def test_comments_are_named_as_comments(text: str, where: str, part: str) -> None:
    assert error_of(text) == f"p.json: JSON does not allow comments {where}; remove the `{part}` part"


# --------------------------------------------------------------------------- 2. did you mean


@pytest.mark.parametrize("text,hint", [
    ('{"scoring": {"queue_depth_weight": 1}}', "scoring.queue_depth_weight: unknown key; did you mean `queue_weight`?"),
    ('{"max_latncy_ms": 10}', "max_latncy_ms: unknown key; did you mean `max_latency_ms`?"),
    ('{"rules": {"min_reputation": 0.5}}', "rules.min_reputation: unknown key; did you mean `min_reputation_score`?"),
    ('{"scoring": {"scales": {"latency": 100}}}', "did you mean `latency_ms`?"),
    ('{"latency_weight": 1}', "`latency_weight` belongs under `scoring`"),
])
def test_unknown_keys_get_the_closest_known_key(text: str, hint: str) -> None:
    assert hint in error_of(text)


# --------------------------------------------------------------------------- 3. prefer_* keys


def test_original_prefer_keys_load_with_a_warning(tmp_path: Path) -> None:
    p = tmp_path / "old.json"
    p.write_text(json.dumps({"prefer_low_latency": True, "rules": {"prefer_low_price": False,
                                                                   "prefer_high_reputation": True}}))
    policy = load_policy_file(p)
    assert policy.rules.deprecated_given() == ["prefer_low_latency", "prefer_low_price", "prefer_high_reputation"]
    assert "prefer_low_latency" not in json.dumps(policy.model_dump(mode="json"))  # no effect, not sent on
    result = invoke("policy", "validate", p)
    assert result.exit_code == 0 and result.stdout == f"{p}: ok (policy 'old', mode enforce)\n"
    assert result.stderr.count("warning: has no effect") == 3 and f"{p}: prefer_low_price: warning" in result.stderr
    nodes = tmp_path / "nodes.json"
    nodes.write_text('[{"name": "a", "latency_ms": 5}]')
    explained = invoke("policy", "explain", p, "--nodes", nodes, "--json")
    assert json.loads(explained.stdout)["ranked"] and "prefer_low_latency: warning" in explained.stderr
    assert Policy.model_json_schema()["properties"]["prefer_low_latency"]["deprecated"] is True
    assert "not allowed: expected true or false" in error_of('{"prefer_low_price": "yes"}')


# --------------------------------------------------------------------------- 4. line and column


@pytest.mark.parametrize("text,expected", [
    ('{\n  "rules": {\n    "max_latency_ms": -1\n  }\n}', "p.json: rules.max_latency_ms: -1 is not allowed: "
                                                         "must be greater than or equal to 0 (line 3, column 5)"),
    ('{\n "mode": "enforce",\n "mode": "permissive"\n}', 'p.json: key "mode" appears twice in one object (line 3, column 2)'),
    ('{\n "rules": {"max_jitter_ms": NaN}}', "p.json: rules.max_jitter_ms: NaN is not valid JSON; use a finite number "
                                            "(line 2, column 12)"),
    ('{"scoring": {"price_weight": 1e999}}', "(line 1, column 14)"),
    ('{"rules":' * 2000 + "{}" + "}" * 2000, "p.json: JSON is nested too deeply (line 1, column 1801)"),
])
def test_errors_name_file_field_and_line_column(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_nodes_file_errors_name_line_and_column(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.json"
    nodes.write_text('{"nodes": [\n  {"name": "a"},\n  {"name": "b", "latency_ms": -3}\n]}')
    result = invoke("policy", "explain", EXAMPLES / "low-latency.json", "--nodes", nodes)
    assert result.exit_code == 2 and result.stdout == ""
    assert f"error: {nodes}: nodes[1].latency_ms: -3 is not allowed" in result.stderr
    assert "(line 3, column 17)" in result.stderr


# --------------------------------------------------------------------------- 5. no Python-isms

PYTHONISMS = ("instance of", "utf-8-sig", "True", "False", "None", "at at", "starting at", "Input should",
              "Value error", "dictionary", "'str'", "'int'", "char ")

BAD_POLICIES = [
    '{"rules": "strict"}', '{"scoring": []}', '{"rules": {"max_latency_ms": true}}', '{"name": "x}',
    '{"name": "a\tb"}', '{"mode": "fast"}', '{"rules": {"required_capabilities": "gpu"}}', "{'name': 1}",
    '{"name": "x",}', '[1,]', '{"a" 1}', '{"a": 1} x', '{"name": "\\q"}', '{"rules": {"max_latency_ms": null, "x": 1}}',
    '{"scoring": {"normalization": 3}}', '{"strategy": false}',
]


@pytest.mark.parametrize("text", BAD_POLICIES)
def test_messages_have_no_python_isms(text: str) -> None:
    message = error_of(text)
    assert not [w for w in PYTHONISMS if w in message], message


def test_bom_is_accepted_and_node_messages_say_true_not_True() -> None:
    assert loads_policy(b'\xef\xbb\xbf{"name": "bom"}', "p.json").name == "bom"
    with pytest.raises(PolicyError) as info:
        parse_node_records([{"name": "a", "latency_ms": True}, {"name": "b", "reputation": None, "jitter_ms": "x"}])
    text = str(info.value)
    assert "nodes[0].latency_ms: true is not allowed: expected a number" in text.replace("nodes: [0]", "nodes[0]") \
        or "[0].latency_ms: true is not allowed: expected a number" in text
    assert not [w for w in PYTHONISMS if w in text], text


# --------------------------------------------------------------------------- 6. strict numbers in nodes files


@pytest.mark.parametrize("field", ["latency_ms", "jitter_ms", "packet_loss", "price_per_gb", "reputation",
                                   "queue_depth", "cpu_free", "mem_total_mb"])
def test_node_metrics_are_strict_numbers(field: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_node_records([{"name": "a", field: "0"}])
    assert f'[0].{field}: "0" is not allowed: expected a number' in str(info.value)
    (record,) = parse_node_records([{"name": "a", field: 0}])  # an integer is a number
    assert getattr(record, field) == 0.0 and isinstance(getattr(record, field), float)


# --------------------------------------------------------------------------- 7. one stream for errors


def test_validate_and_explain_print_errors_on_stderr(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"mode": "fast"}')
    validated = invoke("policy", "validate", bad)
    assert validated.exit_code == 1 and validated.stdout == "" and f"{bad}: mode: " in validated.stderr
    explained = invoke("policy", "explain", bad, "--nodes", bad)
    assert explained.exit_code == 2 and explained.stdout == "" and f"{bad}: mode: " in explained.stderr


# --------------------------------------------------------------------------- 8. completion and -V


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o"), ("zsh", "#compdef hypercore"),
                                          ("fish", "complete --no-files --command hypercore")])
def test_completion_scripts(shell: str, marker: str) -> None:
    result = invoke("completion", shell)
    assert result.exit_code == 0 and marker in result.stdout and "_HYPERCORE_COMPLETE" in result.stdout


def test_dash_capital_v_is_the_version() -> None:
    short, long = invoke("-V"), invoke("--version")
    assert short.exit_code == 0 and short.stdout == long.stdout and short.stdout.startswith("hypercore, version ")


# --------------------------------------------------------------------------- 10. help texts


def test_top_level_help_lines_are_not_cut() -> None:
    text = invoke("--help").stdout
    commands = text.split("Commands:")[1]
    assert "..." not in commands, commands
    assert "cluster     Run a node agent, or talk to one." in commands


def test_explain_help_says_what_a_nodes_file_is() -> None:
    text = invoke("policy", "explain", "--help").stdout
    assert "hypercore cluster metrics --json > nodes.json" in text and '"latency_ms": 12' in text


# --------------------------------------------------------------------------- 9. workload ids

IDS = ["3f2a9c1e-0000-4000-8000-000000000001", "3f2a9c1e-0000-4000-8000-000000000002",
       "7b41d0aa-1111-4111-8111-111111111111"]


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    listing = {"workloads": [{"id": i, "node": "node-with-a-rather-long-name", "state": "running",
                              "spec": {"command": "sleep 1000"}} for i in IDS], "unreachable": {}}

    def request(self: Any, method: str, path: str, json: Any = None, text: bool = False) -> Any:
        calls.append((method, path))
        if path == "/v1/workloads":
            return listing
        wid = path.split("/")[3]
        if path.endswith("/logs"):
            return f"log of {wid}\n"
        return {"id": wid, "node": "n1", "state": "stopped"}

    monkeypatch.setattr("hypercore.api.client.ApiClient.request", request)
    return calls


ADDR = ("--addr", "http://127.0.0.1:9")


def test_list_shows_short_ids_and_json_full_ids(fake_api: list[tuple[str, str]]) -> None:
    table = invoke("cluster", "list", *ADDR)
    assert table.exit_code == 0
    assert "7b41d0aa " in table.stdout and "7b41d0aa-" not in table.stdout
    assert max(map(len, table.stdout.splitlines())) <= 80
    full = json.loads(invoke("cluster", "list", "--json", *ADDR).stdout)
    assert [w["id"] for w in full["workloads"]] == IDS


def test_list_with_limit_shows_one_page_and_the_command_for_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def request(self: Any, method: str, path: str, json: Any = None, text: bool = False) -> Any:
        asked.append(path)
        after = path.partition("after=")[2] or None
        start = 0 if after is None else IDS.index(after.split("%2C")[1]) + 1
        rows = [{"id": i, "node": "n1", "state": "running", "spec": {"command": "sleep"}} for i in IDS[start:start + 2]]
        more = start + 2 < len(IDS)
        return {"workloads": rows, "unreachable": {}, "next": f"1.0,{rows[-1]['id']}" if more else None}

    monkeypatch.setattr("hypercore.api.client.ApiClient.request", request)
    page = invoke("cluster", "list", "--limit", "2", *ADDR)
    assert page.exit_code == 0 and "3f2a9c1e" in page.stdout and "7b41d0aa" not in page.stdout
    assert f"more: hypercore cluster list --limit 2 --after 1.0,{IDS[1]}" in page.stderr
    rest = json.loads(invoke("cluster", "list", "--json", "--limit", "2", "--after", f"1.0,{IDS[1]}", *ADDR).stdout)
    assert [w["id"] for w in rest["workloads"]] == [IDS[2]] and rest["next"] is None
    assert asked == ["/v1/workloads?limit=2", f"/v1/workloads?limit=2&after=1.0%2C{IDS[1]}"]
    assert invoke("cluster", "list", "--limit", "0", *ADDR).exit_code == 2  # 1..10000


@pytest.mark.parametrize("command", ["stop", "logs", "remove"])
def test_unique_prefix_is_resolved(fake_api: list[tuple[str, str]], command: str) -> None:
    result = invoke("cluster", command, "--id", "7b41", *ADDR)
    assert result.exit_code == 0, result.stderr
    assert any(IDS[2] in path for _, path in fake_api[1:])


def test_full_id_is_sent_without_listing(fake_api: list[tuple[str, str]]) -> None:
    assert invoke("cluster", "stop", "--id", IDS[0], *ADDR).exit_code == 0
    assert fake_api == [("DELETE", f"/v1/workloads/{IDS[0]}")]


def test_ambiguous_short_and_unknown_prefixes_exit_2(fake_api: list[tuple[str, str]]) -> None:
    ambiguous = invoke("cluster", "stop", "--id", "3f2a9c1e", *ADDR)
    assert ambiguous.exit_code == 2 and "matches 2 workloads" in ambiguous.stderr
    assert IDS[0] in ambiguous.stderr and IDS[1] in ambiguous.stderr
    short = invoke("cluster", "logs", "--id", "3f2", *ADDR)
    assert short.exit_code == 2 and "at least 4 characters" in short.stderr
    missing = invoke("cluster", "remove", "--id", "dead", *ADDR)
    assert missing.exit_code == 2 and "no workload id starts with 'dead'" in missing.stderr
    assert all(method == "GET" for method, _ in fake_api)  # nothing was stopped or removed
