"""`hypercore policy schema|validate|explain` through the real console script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hypercore.policy import decide, load_policy_file, parse_node_records
from hypercore.policy.model import RULE_KEYS

HERE = Path(__file__).resolve().parent
EXAMPLES = sorted((HERE.parents[1] / "examples" / "policies").glob("*.json"))
FLAT_FORM = {"cost-optimized", "low-latency"}
DECISION_KEYS = {"policy", "mode", "fallback", "ranked", "rejected", "summary"}


def no_traceback(proc):
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout


def write(tmp_path: Path, name: str, content) -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    elif isinstance(content, str):
        p.write_text(content)
    else:
        p.write_text(json.dumps(content))
    return p


# --------------------------------------------------------------------------- schema


@pytest.fixture(scope="module")
def schema(run_cli):
    proc = run_cli("policy", "schema")
    assert proc.returncode == 0, proc.stderr
    no_traceback(proc)
    return json.loads(proc.stdout)


def test_schema_structure(schema):
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert {"name", "description", "mode", "rules", "scoring"} <= set(schema["properties"])
    assert schema["properties"]["mode"]["enum"] == ["enforce", "permissive"]
    rules = schema["$defs"]["Rules"]
    assert set(RULE_KEYS) <= set(rules["properties"])
    assert rules["additionalProperties"] is False
    scoring = schema["$defs"]["Scoring"]
    assert {"latency_weight", "price_weight", "reputation_weight", "queue_weight", "scales", "normalization"} <= set(
        scoring["properties"]
    )


def test_schema_checker_is_not_vacuous(schema, schema_errors):
    assert schema_errors({"name": "ok", "rules": {"max_latency_ms": 100}}, schema) == []
    assert schema_errors({"rules": {"max_latncy_ms": 100}}, schema)
    assert schema_errors({"rules": {"max_latency_ms": -1}}, schema)
    assert schema_errors({"rules": {"min_reputation_score": 1.5}}, schema)
    assert schema_errors({"mode": "strict"}, schema)
    assert schema_errors({"scoring": {"scales": {"latency_ms": 0}}}, schema)
    assert schema_errors([], schema)


SCHEMA_CASES = [
    pytest.param(p, id=p.stem)
    for p in EXAMPLES
]


@pytest.mark.parametrize("path", SCHEMA_CASES)
def test_examples_validate_against_printed_schema(path, schema, schema_errors):
    assert schema_errors(json.loads(path.read_text()), schema) == []


# --------------------------------------------------------------------------- validate


def test_validate_all_examples_ok(run_cli):
    proc = run_cli("policy", "validate", *EXAMPLES)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(EXAMPLES)
    for path, line in zip(EXAMPLES, lines):
        policy = load_policy_file(path)
        assert line == f"{path}: ok (policy '{policy.name}', mode {policy.mode})"


def test_validate_one_line_per_problem_and_exit_1(run_cli, tmp_path):
    bad = write(tmp_path, "bad.json", {"max_latncy_ms": 100, "rules": {"min_reputation_score": 2}})
    good = write(tmp_path, "good.json", {"name": "fine"})
    proc = run_cli("policy", "validate", bad, good)
    no_traceback(proc)
    assert proc.returncode == 1
    # Problems go to stderr (as `explain` prints its errors); results to stdout.
    problems = proc.stderr.splitlines()
    assert all(line.startswith(f"{bad}: ") for line in problems)
    assert len(problems) == 2, problems
    assert any(f"{bad}: max_latncy_ms: " in line and "unknown key" in line for line in problems)
    assert any(f"{bad}: rules.min_reputation_score: " in line and "2" in line for line in problems)
    assert proc.stdout.splitlines() == [f"{good}: ok (policy 'fine', mode enforce)"]


def test_validate_warns_about_zero_limit(run_cli, tmp_path):
    p = write(tmp_path, "zero.json", {"rules": {"max_queue_depth": 0, "max_latency_ms": 100}})
    proc = run_cli("policy", "validate", p)
    no_traceback(proc)
    assert proc.returncode == 0
    assert proc.stderr.splitlines() == [
        f"{p}: rules.max_queue_depth: warning: 0 is a literal zero limit, not 'no limit' (omit the rule for no limit)",
    ]
    assert proc.stdout.splitlines() == [f"{p}: ok (policy 'zero', mode enforce)"]


def test_validate_no_warning_for_min_reputation_zero(run_cli, tmp_path):
    p = write(tmp_path, "rep0.json", {"rules": {"min_reputation_score": 0}})
    proc = run_cli("policy", "validate", p)
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [f"{p}: ok (policy 'rep0', mode enforce)"]


def test_validate_unreadable_inputs(run_cli, tmp_path):
    missing = tmp_path / "missing.json"
    garbage = write(tmp_path, "garbage.json", "{not json")
    empty = write(tmp_path, "empty.json", "")
    nan = write(tmp_path, "nan.json", '{"max_latency_ms": NaN}')
    proc = run_cli("policy", "validate", missing, garbage, empty, nan)
    no_traceback(proc)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 4, lines
    assert lines[0] == f"{missing}: no such file"
    assert lines[1].startswith(f"{garbage}: not valid JSON")
    assert lines[2].startswith(f"{empty}: ") and "empty" in lines[2]
    assert lines[3].startswith(f"{nan}: ") and "NaN" in lines[3]


def test_validate_requires_a_file(run_cli):
    proc = run_cli("policy", "validate")
    no_traceback(proc)
    assert proc.returncode == 2


# --------------------------------------------------------------------------- explain


def expected_decision(policy_path: Path, nodes_path: Path, limit=None) -> dict:
    records = parse_node_records(json.loads(nodes_path.read_text()), source=str(nodes_path))
    return decide(load_policy_file(policy_path), records).to_dict(limit)


def test_explain_json_shape_and_content(run_cli, examples_dir, sample_cluster):
    policy = examples_dir / "cost-optimized.json"
    proc = run_cli("policy", "explain", policy, "--nodes", sample_cluster, "--json")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == DECISION_KEYS
    assert out["policy"] == "cost-optimized" and out["mode"] == "enforce" and out["fallback"] is False
    for r in out["ranked"]:
        assert set(r) == {"node", "score", "components"}
        assert set(r["components"]) == {"latency", "price", "reputation", "queue"}
        assert r["score"] == pytest.approx(sum(r["components"].values()), rel=1e-12)
    for r in out["rejected"]:
        assert set(r) == {"node", "reasons"} and isinstance(r["reasons"], list)
    assert out["rejected"] == [{"node": "mad-down-6", "reasons": ["not alive (status failed)"]}]
    assert out["ranked"][0]["node"] == "ams-cheap-2"  # 0.006 $/GB, the cheapest alive node
    # cost-optimized, ams-cheap-2: 0.01*(1-85/500) + 0.97*(1-0.006/0.05) + 0.01*0.82 + 0.01*(1-9/100)
    assert out["ranked"][0]["score"] == pytest.approx(0.0083 + 0.8536 + 0.0082 + 0.0091, rel=1e-12)
    assert out["summary"] == "5/6 nodes match policy 'cost-optimized': 1 not alive"
    assert out == expected_decision(policy, sample_cluster)


def test_explain_list_form_equals_object_form(run_cli, examples_dir, fixtures_dir, tmp_path):
    list_form = fixtures_dir / "us-regions.json"
    nodes = json.loads(list_form.read_text())
    assert isinstance(nodes, list)
    object_form = write(tmp_path, "object.json", {"nodes": nodes})
    policy = examples_dir / "low-latency.json"
    a = run_cli("policy", "explain", policy, "--nodes", list_form, "--json")
    b = run_cli("policy", "explain", policy, "--nodes", object_form, "--json")
    assert a.returncode == b.returncode == 0
    assert json.loads(a.stdout) == json.loads(b.stdout) == expected_decision(policy, list_form)


def test_explain_table_output(run_cli, examples_dir, fixtures_dir):
    nodes = fixtures_dir / "mixed-health.json"
    policy = examples_dir / "high-trust.json"
    proc = run_cli("policy", "explain", policy, "--nodes", nodes)
    no_traceback(proc)
    assert proc.returncode == 0
    want = expected_decision(policy, nodes)
    assert proc.stdout.splitlines()[-1] == want["summary"]
    for r in want["ranked"]:
        assert r["node"] in proc.stdout
    for r in want["rejected"]:
        assert r["node"] in proc.stdout
    assert "reputation unknown" in proc.stdout  # node-b has no reputation: rejected in enforce


def test_explain_limit(run_cli, examples_dir, fixtures_dir):
    policy, nodes = examples_dir / "balanced.json", fixtures_dir / "apac-budget.json"
    proc = run_cli("policy", "explain", policy, "--nodes", nodes, "--json", "--limit", "2")
    assert proc.returncode == 0
    out = json.loads(proc.stdout)
    full = expected_decision(policy, nodes)
    assert out["ranked"] == full["ranked"][:2]
    assert len(full["ranked"]) == 8


def test_explain_permissive_fallback_json(run_cli, tmp_path, fixtures_dir):
    policy = write(tmp_path, "picky.json", {"mode": "permissive", "rules": {"max_latency_ms": 1}})
    nodes = fixtures_dir / "global-edge.json"
    proc = run_cli("policy", "explain", policy, "--nodes", nodes, "--json")
    assert proc.returncode == 0
    out = json.loads(proc.stdout)
    assert out["fallback"] is True
    assert out["policy"] == "picky"
    assert len(out["ranked"]) == 5
    assert out["summary"].startswith("0/5 nodes match policy 'picky': 5 latency_ms > 1")


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_explain_exit_3_when_no_node_qualifies(run_cli, tmp_path, fixtures_dir, as_json):
    policy = write(
        tmp_path,
        "ultra-strict.json",
        {"rules": {"max_latency_ms": 1, "max_price_per_gb": 0.001, "min_reputation_score": 0.99}},
    )
    nodes = fixtures_dir / "eu-metro.json"
    proc = run_cli("policy", "explain", policy, "--nodes", nodes, *(["--json"] if as_json else []))
    no_traceback(proc)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    summary = (
        "0/7 nodes match policy 'ultra-strict': 6 latency_ms > 1, 6 price_per_gb > 0.001, "
        "5 reputation < 0.99, 1 not alive"
    )
    if as_json:
        out = json.loads(proc.stdout)
        assert out["ranked"] == [] and out["summary"] == summary
        assert len(out["rejected"]) == 7
    else:
        assert proc.stdout.splitlines()[-1] == summary


def test_explain_exit_3_on_empty_cluster(run_cli, examples_dir, tmp_path):
    nodes = write(tmp_path, "empty-cluster.json", {"nodes": []})
    proc = run_cli("policy", "explain", examples_dir / "permissive.json", "--nodes", nodes, "--json")
    assert proc.returncode == 3
    assert json.loads(proc.stdout)["summary"] == "0/0 nodes match policy 'permissive'"


BAD_INPUTS = {
    # name: (policy content or None for the example, nodes content or None for the fixture, text expected in stderr)
    "policy-typo": ({"max_latncy_ms": 100}, None, "max_latncy_ms"),
    "policy-not-json": ("{oops", None, "not valid JSON"),
    "policy-empty": ("", None, "empty"),
    "policy-negative": ({"rules": {"max_latency_ms": -5}}, None, "rules.max_latency_ms"),
    "policy-missing": ("MISSING", None, "no such file"),
    "nodes-missing": (None, "MISSING", "no such file"),
    "nodes-not-json": (None, "nodes, nodes", "not valid JSON"),
    "nodes-empty": (None, "", "empty"),
    "nodes-nan": (None, '[{"name": "a", "latency_ms": NaN}]', "NaN"),
    "nodes-wrong-shape": (None, {"members": []}, "nodes"),
    "nodes-not-list": (None, {"nodes": {"a": 1}}, "list"),
    "nodes-scalar": (None, "42", "list"),
    "nodes-negative-metric": (None, [{"name": "a", "latency_ms": -3}], "latency_ms"),
    "nodes-reputation-over-1": (None, [{"name": "a", "reputation": 1.5}], "reputation"),
    "nodes-bool-metric": (None, [{"name": "a", "latency_ms": True}], "latency_ms"),
    "nodes-no-name": (None, [{"latency_ms": 3}], "name"),
    "nodes-duplicate-name": (None, [{"name": "a"}, {"name": "a"}], "twice"),
    "nodes-item-not-object": (None, ["a"], "object"),
    "nodes-binary": (None, b"\xff\xfe\x00garbage", "UTF-8"),
    "nodes-deep": (None, "[" * 50_000 + "]" * 50_000, ""),
}


# Each start of the real console script costs about a second, so a representative
# subset goes through a subprocess and every case also runs in-process (CliRunner).
SUBPROCESS_CASES = [
    "policy-typo",
    "policy-not-json",
    "policy-missing",
    "nodes-missing",
    "nodes-not-json",
    "nodes-nan",
    "nodes-wrong-shape",
    "nodes-negative-metric",
    "nodes-deep",
]


def _bad_input_files(d: Path, case: str, examples_dir: Path, fixtures_dir: Path) -> tuple[Path, Path]:
    policy_content, nodes_content, _ = BAD_INPUTS[case]
    d.mkdir(parents=True, exist_ok=True)
    if policy_content is None:
        policy = examples_dir / "balanced.json"
    elif policy_content == "MISSING":
        policy = d / "no-such-policy.json"
    else:
        policy = write(d, "policy.json", policy_content)
    if nodes_content is None:
        nodes = fixtures_dir / "eu-metro.json"
    elif nodes_content == "MISSING":
        nodes = d / "no-such-nodes.json"
    else:
        nodes = write(d, "nodes.json", nodes_content)
    return policy, nodes


@pytest.fixture(scope="module")
def bad_input_runs(run_cli, tmp_path_factory, examples_dir, fixtures_dir):
    """Run the subprocess cases once, concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    base = tmp_path_factory.mktemp("bad-inputs")
    jobs = {case: _bad_input_files(base / case, case, examples_dir, fixtures_dir) for case in SUBPROCESS_CASES}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            case: pool.submit(run_cli, "policy", "explain", policy, "--nodes", nodes, "--json")
            for case, (policy, nodes) in jobs.items()
        }
        return {case: (jobs[case], f.result()) for case, f in futures.items()}


def _check_bad_input(case, policy, nodes, code, stdout, stderr):
    policy_content, _, needle = BAD_INPUTS[case]
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr
    assert code == 2, (code, stdout, stderr)
    assert stdout == ""
    assert stderr.startswith("error: "), stderr
    bad_file = nodes if policy_content is None else policy
    assert str(bad_file) in stderr
    assert needle in stderr


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_explain_bad_input_exit_2_without_traceback(bad_input_runs, case):
    (policy, nodes), proc = bad_input_runs[case]
    _check_bad_input(case, policy, nodes, proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_explain_bad_input_in_process(case, tmp_path, examples_dir, fixtures_dir):
    from click.testing import CliRunner

    from hypercore.cli.main import cli

    policy, nodes = _bad_input_files(tmp_path / case, case, examples_dir, fixtures_dir)
    result = CliRunner().invoke(cli, ["policy", "explain", str(policy), "--nodes", str(nodes), "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    _check_bad_input(case, policy, nodes, result.exit_code, result.stdout, result.stderr)


def test_explain_needs_nodes_or_live(run_cli, examples_dir):
    proc = run_cli("policy", "explain", examples_dir / "balanced.json")
    no_traceback(proc)
    assert proc.returncode == 2
    assert "--nodes" in proc.stderr


def test_explain_rejects_limit_zero(run_cli, examples_dir, sample_cluster):
    proc = run_cli("policy", "explain", examples_dir / "balanced.json", "--nodes", sample_cluster, "--limit", "0")
    no_traceback(proc)
    assert proc.returncode == 2


def test_explain_shows_each_nodes_region_when_the_nodes_have_one(run_cli, tmp_path):
    # Regions come from the nodes' signed beacons (`cluster metrics --json` prints them): shown, never scored.
    nodes = write(tmp_path, "nodes.json", {"nodes": [
        {"name": "eu-2", "region": "eu", "latency_ms": 3, "jitter_ms": 1, "price_per_gb": 0.02},
        {"name": "ap-2", "region": "ap-south", "latency_ms": 160, "jitter_ms": 1, "price_per_gb": 0.01},
        {"name": "x-1", "latency_ms": 5, "jitter_ms": 1, "price_per_gb": 0.03}]})
    policy = HERE.parents[1] / "examples" / "policies" / "low-latency.json"
    proc = run_cli("policy", "explain", str(policy), "--nodes", str(nodes))
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert "region" in proc.stdout
    ranked = [line for line in proc.stdout.splitlines() if "eu-2" in line or "x-1" in line]
    assert any("eu " in line or "eu│" in line.replace(" ", "") for line in ranked), proc.stdout
    assert any("ap-south" in line and "latency_ms > 100" in line for line in proc.stdout.splitlines()), proc.stdout
    as_json = json.loads(run_cli("policy", "explain", str(policy), "--nodes", str(nodes), "--json").stdout)
    assert as_json["regions"] == {"eu-2": "eu", "ap-2": "ap-south"}
    # Without any region, the table is as it always was.
    plain = write(tmp_path, "plain.json", [{"name": "n1", "latency_ms": 3}])
    proc = run_cli("policy", "explain", str(policy), "--nodes", str(plain))
    assert "region" not in proc.stdout and "regions" not in json.loads(
        run_cli("policy", "explain", str(policy), "--nodes", str(plain), "--json").stdout)
