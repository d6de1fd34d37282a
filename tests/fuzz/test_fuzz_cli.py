"""Fuzz `hypercore policy validate` and `policy explain --nodes` with hostile files.

Whatever the files hold, the CLI ends with an exit code it documents, never
a traceback, a batch of files is never cut short, and nothing it prints
carries a control character to the terminal (colour is kept, as a terminal
would get it, so an ESC could not hide in click's stripping).
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from hypercore.cli.main import cli
from tests.fuzz.support import FuzzCases, fuzz
from tests.fuzz.strategies import as_bytes, documents, node_files, policies

RUNNER = CliRunner()


def invoke(*args: str | Path) -> Result:
    result = RUNNER.invoke(cli, [str(a) for a in args], color=True, terminal_width=160)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    controls = {ch for ch in result.output if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")}
    assert not controls, (controls, result.output[-400:])
    return result


def test_fuzz_policy_validate(tmp_path: Path, fuzz_cases: FuzzCases) -> None:
    ok = tmp_path / "ok.json"
    ok.write_text('{"name": "fine"}')
    target = tmp_path / "fuzzed.json"

    @fuzz(600)
    @given(documents(policies))
    def run(doc: str | bytes) -> None:
        fuzz_cases.tick()
        target.write_bytes(as_bytes(doc))
        result = invoke("policy", "validate", target, ok)
        assert result.exit_code in (0, 1), result.output
        # The batch goes on: the good file is always checked, and last.
        assert result.output.splitlines()[-1] == f"{ok}: ok (policy 'fine', mode enforce)", result.output

    run()
    fuzz_cases.report()


def test_fuzz_policy_explain_nodes(tmp_path: Path, fuzz_cases: FuzzCases) -> None:
    policy_file = tmp_path / "policy.json"
    nodes_file = tmp_path / "nodes.json"

    @fuzz(500)
    @given(st.one_of(st.just(b'{"name": "fine", "mode": "permissive"}'), documents(policies).map(as_bytes)),
           documents(node_files).map(as_bytes), st.booleans())
    def run(policy: bytes, nodes: bytes, as_json: bool) -> None:
        fuzz_cases.tick()
        policy_file.write_bytes(policy)
        nodes_file.write_bytes(nodes)
        result = invoke("policy", "explain", policy_file, "--nodes", nodes_file, *(["--json"] if as_json else []))
        assert result.exit_code in (0, 1, 2, 3), result.output
        if result.exit_code == 2:  # errors, after the policy's warnings (a zero limit, a prefer_* key) if any
            lines = result.output.splitlines()
            errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
            assert errors, result.output
            assert all(": warning: " in line for line in lines[:errors[0]]), result.output

    run()
    fuzz_cases.report()
