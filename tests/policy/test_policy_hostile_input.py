"""Issue 9, "Limits on input": numbers, names and files that once broke the CLI or the API.

Each test here failed before the fix (but test_api_overflowing_float_in_a_body_is_a_422,
which pins an answer that was already right):
- an integer over Python's 4,300-digit limit made `policy validate` print a
  traceback and stop the batch, `policy explain --nodes` too, and the API
  answer 500 (PUT /v1/policy) or a vague 400 (bodies parsed by FastAPI);
- a float that overflows (1e999) was reported as "Infinity", not as written;
- names were rich markup (`rack[red]-1` showed as `rack-1`) and control
  characters reached the terminal;
- a FIFO given as any input file hung the command.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from click.testing import CliRunner, Result

from hypercore.cli.main import cli
from hypercore.policy import PolicyError, loads_policy, parse_json_strict

BIG = "9" * 5000  # past Python's int-string limit (4,300 digits)
ESC = "\x1b"


def invoke(*args: str | Path) -> Result:
    """The CLI in-process, colour kept (click strips ESC otherwise, hiding what a terminal would get)."""
    result = CliRunner().invoke(cli, [str(a) for a in args], color=True, terminal_width=200)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def run_module(*args: str | Path, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """The CLI as a process (a FIFO would block it: the timeout turns a hang into a failure)."""
    env = {**os.environ, "COLUMNS": "200", "LC_ALL": "C.UTF-8"}
    proc = subprocess.run([sys.executable, "-m", "hypercore.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return proc


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def fifo(tmp_path: Path, name: str) -> Path:
    p = tmp_path / name
    os.mkfifo(p)
    return p


@pytest.fixture
def ok_policy(tmp_path: Path) -> Path:
    return write(tmp_path, "ok.json", '{"name": "fine"}')


# --------------------------------------------------------------------------- numbers in files


def test_validate_reports_a_huge_integer_and_goes_on_to_the_next_file(tmp_path: Path, ok_policy: Path) -> None:
    big = write(tmp_path, "big.json", '{"rules": {"max_latency_ms": %s}}' % BIG)
    result = invoke("policy", "validate", big, ok_policy)
    assert result.exit_code == 1
    assert f"{big}: rules.max_latency_ms: " in result.output and "5000 digits" in result.output
    assert f"{ok_policy}: ok (policy 'fine', mode enforce)" in result.output


def test_validate_reports_an_overflowing_float_as_written(tmp_path: Path, ok_policy: Path) -> None:
    inf = write(tmp_path, "inf.json", '{"scoring": {"latency_weight": -1e999}}')
    result = invoke("policy", "validate", inf, ok_policy)
    assert result.exit_code == 1
    assert f"{inf}: scoring.latency_weight: number -1e999 is out of range" in result.output


@pytest.mark.parametrize("value,shown", [(BIG, "5000 digits"), ("1e999", "1e999"), ("-" + BIG, "5000 digits")])
def test_explain_nodes_file_with_unrepresentable_number_exits_2_naming_the_field(
        tmp_path: Path, ok_policy: Path, value: str, shown: str) -> None:
    nodes = write(tmp_path, "nodes.json", '{"nodes": [{"name": "a"}, {"name": "b", "latency_ms": %s}]}' % value)
    result = invoke("policy", "explain", ok_policy, "--nodes", nodes)
    assert result.exit_code == 2
    assert f"error: {nodes}: nodes[1].latency_ms: " in result.output and shown in result.output


def test_the_console_script_prints_no_traceback_for_huge_integers(run_cli: Any, tmp_path: Path, ok_policy: Path) -> None:
    big = write(tmp_path, "big.json", '{"max_latency_ms": %s}' % BIG)
    nodes = write(tmp_path, "nodes.json", '[{"name": "a", "queue_depth": %s}]' % BIG)
    proc = run_cli("policy", "validate", big, ok_policy)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and f"{ok_policy}: ok" in proc.stdout
    proc = run_cli("policy", "explain", ok_policy, "--nodes", nodes)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "[0].queue_depth" in proc.stderr


def test_parse_json_strict_names_where_each_unrepresentable_number_is() -> None:
    with pytest.raises(PolicyError) as info:
        parse_json_strict('{"a": [1, {"b": %s}], "c": 1e400, "d": 2}' % BIG, "f.json")
    assert [(p.source, p.path) for p in info.value.problems] == [("f.json", "a[1].b"), ("f.json", "c")]
    with pytest.raises(PolicyError) as info:
        parse_json_strict(BIG, "top")
    assert info.value.problems[0].path == ""


def test_integers_up_to_the_digit_limit_still_parse() -> None:
    from hypercore.policy.loader import MAX_INT_DIGITS

    assert parse_json_strict("9" * MAX_INT_DIGITS, "s") == int("9" * MAX_INT_DIGITS)
    assert parse_json_strict("-" + "9" * MAX_INT_DIGITS, "s") < 0
    assert parse_json_strict("[1e308, 1e-400]", "s") == [1e308, 0.0]
    with pytest.raises(PolicyError):
        parse_json_strict("9" * (MAX_INT_DIGITS + 1), "s")


def test_node_records_given_a_python_int_past_the_digit_limit_is_a_policy_error() -> None:
    from hypercore.policy import parse_node_records

    with pytest.raises(PolicyError) as info:  # an int that has no repr (found by tests/fuzz)
        parse_node_records([{"name": "a", "latency_ms": 10 ** 5000}], source="api")
    assert str(info.value).startswith("api: [0].latency_ms: an integer of about 5001 digits is not allowed")


def test_loads_policy_refuses_a_huge_integer_cleanly() -> None:
    with pytest.raises(PolicyError) as info:
        loads_policy(b'{"rules": {"max_queue_depth": %s}}' % BIG.encode(), source="request policy")
    assert str(info.value).startswith("request policy: rules.max_queue_depth: integer")


def test_config_file_nested_too_deeply_or_with_huge_integer_is_a_config_error(tmp_path: Path) -> None:
    from hypercore.config import ConfigError, load_file

    for name, text in (("deep.json", '{"join": %s}' % ("[" * 100_000 + "]" * 100_000)),
                       ("big.json", '{"beacon_price": %s}' % BIG),
                       ("deep.toml", "join = " + "[" * 100_000 + "]" * 100_000)):
        with pytest.raises(ConfigError) as info:
            load_file(write(tmp_path, name, text))
        assert str(info.value).startswith(f"--config {tmp_path / name}: ")


# --------------------------------------------------------------------------- numbers in API bodies


@pytest_asyncio.fixture
async def fake(tmp_path: Path) -> AsyncIterator[Any]:
    from tests.inprocess.harness import FakeCluster

    cluster = FakeCluster(tmp_path)
    cluster.add("a")
    try:
        yield cluster
    finally:
        await cluster.close()


def _json_error(r: Any) -> dict[str, Any]:
    assert r.status_code == 422, (r.status_code, r.text[:300])
    body = r.json()
    assert body["error"]["code"] in ("invalid_request", "invalid_policy")
    return body["error"]


@pytest.mark.parametrize("path", ["/v1/workloads", "/v1/placements"])
async def test_api_body_with_huge_integer_is_a_422_naming_the_field(fake: Any, path: str) -> None:
    async with fake.client("a", fake.token("alice")) as c:
        for body, field in ((f'{{"spec": {{"command": "x", "cpu": {BIG}}}}}', "spec.cpu"),
                            (f'{{"spec": {{"command": "x"}}, "policy": {{"rules": {{"max_latency_ms": {BIG}}}}}}}',
                             "policy.rules.max_latency_ms")):
            error = _json_error(await c.post(path, content=body, headers={"content-type": "application/json"}))
            assert f"request body: {field}: integer" in error["message"]


async def test_api_body_nested_too_deeply_or_not_utf8_is_a_422(fake: Any) -> None:
    async with fake.client("a", fake.token("alice")) as c:
        deep = '{"spec": {"command": "x"}, "policy": %s}' % ("[" * 100_000 + "]" * 100_000)
        error = _json_error(await c.post("/v1/placements", content=deep, headers={"content-type": "application/json"}))
        assert "nested too deeply" in error["message"]
        error = _json_error(await c.post("/v1/workloads", content=b'{"spec": {"command": "\xff"}}',
                                         headers={"content-type": "application/json"}))
        assert "UTF-8" in error["message"]


async def test_api_overflowing_float_in_a_body_is_a_422(fake: Any) -> None:
    async with fake.client("a", fake.token("alice")) as c:
        r = await c.post("/v1/workloads", content='{"spec": {"command": "x", "cpu": 1e999}}',
                         headers={"content-type": "application/json"})
        assert "spec.cpu" in _json_error(r)["message"]


async def test_api_put_policy_with_huge_integer_or_overflow_is_a_422(fake: Any) -> None:
    async with fake.client("a", fake.token("root", management=True)) as c:
        for text, shown in ((f'{{"rules": {{"max_latency_ms": {BIG}}}}}', "5000 digits"),
                            ('{"rules": {"max_latency_ms": 1e999}}', "1e999")):
            error = _json_error(await c.put("/v1/policy", content=text))
            assert error["message"].startswith("request policy: rules.max_latency_ms: ") and shown in error["message"]


# --------------------------------------------------------------------------- names printed literally


def test_explain_prints_node_names_literally_not_as_markup(tmp_path: Path, ok_policy: Path) -> None:
    nodes = write(tmp_path, "nodes.json", json.dumps([{"name": "rack[red]-1", "latency_ms": 1},
                                                       {"name": "[bold]b[/bold]", "latency_ms": 2},
                                                       {"name": ":smile:", "latency_ms": 3}]))
    result = invoke("policy", "explain", ok_policy, "--nodes", nodes)
    assert result.exit_code == 0
    assert "rack[red]-1" in result.output and "[bold]b[/bold]" in result.output and ":smile:" in result.output


def test_explain_escapes_control_characters_in_node_and_policy_names(tmp_path: Path) -> None:
    policy = write(tmp_path, "p.json", json.dumps({"name": "p[red]x", "rules": {"max_latency_ms": 5}}))
    nodes = write(tmp_path, "nodes.json", json.dumps([{"name": "ok\x1b[2J", "latency_ms": 1},
                                                       {"name": "far\x07\u2028", "latency_ms": 50}]))
    result = invoke("policy", "explain", policy, "--nodes", nodes)
    assert result.exit_code == 0
    out = result.output
    assert ESC not in out and "\x9b" not in out and "\x07" not in out and "\u202e" not in out and "\u2028" not in out
    assert "ok\\x1b[2J" in out and "far\\x07\\u2028" in out and "p[red]x" in out


def test_validate_and_errors_escape_control_characters(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.json", json.dumps({"rules": {"\x1b[2Jx": 1}}))
    named = write(tmp_path, "named.json", json.dumps({"name": "n\x9b2J\u202e"}))
    result = invoke("policy", "validate", bad, named)
    assert result.exit_code == 1
    assert ESC not in result.output and "\x9b" not in result.output
    assert f"{bad}: rules.\\x1b[2Jx: unknown key" in result.output
    # A policy name with C1 controls or text-direction overrides is refused, and the refusal prints escaped.
    assert f"{named}: name: " in result.output and "U+009B, U+202E" in result.output
    result = invoke("policy", "explain", bad, "--nodes", named)  # the error path (user_errors) too
    assert result.exit_code == 2 and ESC not in result.output and "rules.\\x1b[2Jx" in result.output


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Answers of ApiClient.request by path (a value, or an exception to raise)."""
    answers: dict[str, Any] = {}

    def request(self: Any, method: str, path: str, json: Any = None, text: bool = False) -> Any:
        answer = answers[path]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr("hypercore.api.client.ApiClient.request", request)
    return answers


def test_cluster_list_and_metrics_print_what_nodes_send_literally(fake_api: dict[str, Any]) -> None:
    node = "rack[red]-1\x1b]0;owned\x07"
    fake_api["/v1/workloads"] = {"workloads": [{"id": "w[b]1", "node": node, "state": "running",
                                                "spec": {"command": "echo \x1b[31mhi"}}],
                                 "unreachable": {"n\x1b2": "down\x1b[0m"}}
    fake_api["/v1/nodes"] = {"nodes": [{"name": node, "status": "alive\x1b[5m", "beacon_id": "[i]x",
                                        "problem": "p\x1b", "latency_ms": "12\x1b", "jitter_ms": 10 ** 400,
                                        "packet_loss": None, "queue_depth": True, "age_s": 10 ** 400, "price_per_gb": 0.5,
                                        "reputation": 1, "capabilities": ["[b]gpu", "\x1b"]}]}
    listed = invoke("cluster", "list", "--addr", "http://127.0.0.1:9")
    assert listed.exit_code == 0 and ESC not in listed.output
    assert "rack[red]-1\\x1b]0;owned\\x07" in listed.output and "w[b]1" in listed.output
    assert "echo \\x1b[31mhi" in listed.output and "node n\\x1b2 did not answer: down\\x1b[0m" in listed.output
    shown = invoke("cluster", "metrics", "--addr", "http://127.0.0.1:9")
    assert shown.exit_code == 0 and ESC not in shown.output
    assert "Node: rack[red]-1\\x1b]0;owned\\x07 (alive\\x1b[5m)" in shown.output
    assert "[i]x (p\\x1b)" in shown.output and "[b]gpu, \\x1b" in shown.output
    assert "Queue Depth:  True (published out of range ago)" in shown.output


def test_an_answer_the_cli_cannot_use_is_one_error_line(fake_api: dict[str, Any]) -> None:
    # httpx's response.json() raises a bare ValueError on a 5,000-digit integer.
    fake_api["/v1/workloads"] = ValueError("Exceeds the limit (4300 digits) for integer string conversion")
    result = invoke("cluster", "list", "--addr", "http://127.0.0.1:9")
    assert result.exit_code == 2 and result.output.startswith("error: unexpected ValueError: Exceeds")
    fake_api["/v1/nodes"] = {"nodes": "not a list"}
    fake_api["/v1/workloads"] = {"workloads": []}
    assert invoke("cluster", "metrics", "--addr", "http://127.0.0.1:9").exit_code == 2


# --------------------------------------------------------------------------- files that are not regular


def test_fifo_policy_file_is_refused_and_the_batch_goes_on(tmp_path: Path, ok_policy: Path) -> None:
    pipe = fifo(tmp_path, "policy.json")
    proc = run_module("policy", "validate", pipe, ok_policy)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"{pipe}: is a FIFO (named pipe), not a regular file; refusing to read it"]
    assert proc.stdout.splitlines() == [f"{ok_policy}: ok (policy 'fine', mode enforce)"]


def test_fifo_or_device_as_nodes_or_policy_file_is_refused(tmp_path: Path, ok_policy: Path) -> None:
    pipe = fifo(tmp_path, "nodes.json")
    proc = run_module("policy", "explain", ok_policy, "--nodes", pipe)
    assert proc.returncode == 2 and f"error: {pipe}: is a FIFO" in proc.stderr
    proc = run_module("policy", "explain", pipe, "--nodes", ok_policy)
    assert proc.returncode == 2 and f"error: {pipe}: is a FIFO" in proc.stderr
    result = invoke("policy", "explain", ok_policy, "--nodes", "/dev/null")
    assert result.exit_code == 2 and "/dev/null: is a character device, not a regular file" in result.output


@pytest.mark.parametrize("option", ["--token-file", "--ca-file"])
def test_fifo_token_or_ca_file_is_refused(tmp_path: Path, option: str) -> None:
    pipe = fifo(tmp_path, "file")
    proc = run_module("cluster", "list", "--addr", "https://127.0.0.1:9", option, pipe)
    assert proc.returncode == 2 and option in proc.stderr and "FIFO" in proc.stderr


def test_fifo_encrypt_file_or_config_is_refused(tmp_path: Path) -> None:
    pipe = fifo(tmp_path, "key")
    proc = run_module("cluster", "run", "--insecure", "--data-dir", tmp_path / "d", "--encrypt-file", pipe)
    assert proc.returncode == 2 and "--encrypt-file" in proc.stderr and "FIFO" in proc.stderr
    conf = fifo(tmp_path, "conf.toml")
    proc = run_module("cluster", "run", "--config", conf)
    assert proc.returncode == 2 and "--config" in proc.stderr and "not a regular file" in proc.stderr


@pytest.mark.parametrize("command", [["token", "create", "--name", "alice"],
                                     ["tls", "cert", "create", "--node", "n1", "--out", "OUT"]])
def test_fifo_in_the_ca_dir_is_refused(tmp_path: Path, command: list[str]) -> None:
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    fifo(ca_dir, "ca.pem")
    args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    proc = run_module(*args, "--ca-dir", ca_dir)
    assert proc.returncode == 2 and "--ca-dir" in proc.stderr and "FIFO" in proc.stderr


def test_token_file_that_is_not_utf8_is_a_clean_error(tmp_path: Path) -> None:
    token = write(tmp_path, "token", b"\xff\xfe")
    result = invoke("cluster", "list", "--addr", "http://127.0.0.1:9", "--token-file", token)
    assert result.exit_code == 2 and "not UTF-8" in result.output


def test_a_file_swapped_for_a_fifo_after_the_check_is_refused_without_blocking(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hypercore.policy.loader import read_regular_file

    pipe = fifo(tmp_path, "swapped.json")
    real_stat = os.stat

    def regular_stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        result = real_stat(path, *args, **kwargs)
        if str(path) == str(pipe):  # as if it were a regular file when checked
            return os.stat_result((stat.S_IFREG | 0o644, *tuple(result)[1:]))
        return result

    monkeypatch.setattr(os, "stat", regular_stat)
    with pytest.raises(PolicyError, match="FIFO"):
        read_regular_file(pipe, 1024)
