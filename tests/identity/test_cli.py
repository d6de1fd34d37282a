"""`hypercore tls ca|cert create`, `hypercore keygen`, `hypercore token create`."""

from __future__ import annotations

import base64
import re
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from hypercore.cli.identity import keygen_command, tls_group, token_group
from hypercore.identity import NodeIdentity, TokenVerifier, load_ca

REPO = Path(__file__).resolve().parents[2]


@click.group()
def cli() -> None:
    """The identity commands alone: hypercore.cli.main imports every other command too."""


cli.add_command(tls_group)
cli.add_command(token_group)
cli.add_command(keygen_command)


def run(*args: str) -> Result:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def bad_input(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    return result.stderr


def test_commands_are_registered():
    from hypercore.cli.main import cli as main_cli

    assert {"tls", "token", "keygen"} <= set(main_cli.commands)
    assert set(main_cli.commands["tls"].commands) == {"ca", "cert"}
    assert set(main_cli.commands["tls"].commands["ca"].commands) == {"create"}
    assert set(main_cli.commands["tls"].commands["cert"].commands) == {"create"}
    assert set(main_cli.commands["token"].commands) == {"create"}


def test_ca_create(tmp_path: Path):
    d = tmp_path / "ca"
    result = run("tls", "ca", "create", "--dir", d, "--days", "30")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(d / "ca.pem"), str(d / "ca-key.pem")]
    assert stat.S_IMODE((d / "ca-key.pem").stat().st_mode) == 0o600
    first = load_ca(d / "ca.pem").fingerprint
    err = bad_input("tls", "ca", "create", "--dir", d)
    assert "error:" in err and "already exists" in err and "--force" in err
    assert load_ca(d / "ca.pem").fingerprint == first
    assert run("tls", "ca", "create", "--dir", d, "--force").exit_code == 0
    assert load_ca(d / "ca.pem").fingerprint != first


def test_ca_create_bad_input(tmp_path: Path):
    assert "--days" in bad_input("tls", "ca", "create", "--dir", tmp_path / "ca", "--days", "0")
    assert "--dir" in bad_input("tls", "ca", "create")
    (tmp_path / "file").write_text("")
    assert "--dir" in bad_input("tls", "ca", "create", "--dir", tmp_path / "file")


def test_cert_create(tmp_path: Path, ca_dir: Path):
    out = tmp_path / "out"
    result = run("tls", "cert", "create", "--ca-dir", ca_dir, "--node", "n1", "--ip", "10.0.0.7", "--ip", "::1",
                 "--days", "10", "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(out / "n1.pem"), str(out / "n1-key.pem")]
    ident = NodeIdentity.load(ca_dir / "ca.pem", out / "n1.pem", out / "n1-key.pem", "n1")
    assert ident.ips == ("10.0.0.7", "::1")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--node", "bad name"], "--node 'bad name' is not a valid node name"),
        (["--node", "n1", "--ip", "10.0.0.256"], "--ip '10.0.0.256' is not an IP address"),
        (["--node", "n1", "--days", "0"], "--days"),
        (["--node", "n1", "--days", "4000"], "outlives the cluster CA"),
        ([], "--node"),
    ],
)
def test_cert_create_bad_input(tmp_path: Path, ca_dir: Path, extra: list[str], expected: str):
    assert expected in bad_input("tls", "cert", "create", "--ca-dir", ca_dir, "--out", tmp_path / "out", *extra)
    assert not (tmp_path / "out").exists()


def test_cert_create_without_a_ca(tmp_path: Path):
    err = bad_input("tls", "cert", "create", "--ca-dir", tmp_path / "none", "--node", "n1", "--out", tmp_path / "o")
    assert "ca.pem" in err and f"create one with: hypercore tls ca create --dir {tmp_path / 'none'}" in err


def test_keygen():
    first, second = run("keygen"), run("keygen")
    assert first.exit_code == 0 and first.stderr == ""
    assert len(base64.b64decode(first.stdout.strip(), validate=True)) == 32
    assert first.stdout != second.stdout


def test_keygen_console_output_is_one_base64_line():
    proc = subprocess.run([sys.executable, "-m", "hypercore.cli", "keygen"], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"[A-Za-z0-9+/]{43}=\n", proc.stdout), proc.stdout
    assert len(base64.b64decode(proc.stdout.strip(), validate=True)) == 32


def test_token_create(ca_dir: Path):
    result = run("token", "create", "--ca-dir", ca_dir, "--name", "alice", "--ttl", "90m")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1 and result.stdout.endswith("\n")
    verifier = TokenVerifier(load_ca(ca_dir / "ca.pem"))
    user = verifier.verify(result.stdout.strip())
    assert user.name == "alice" and not user.management
    import jwt

    body = jwt.decode(result.stdout.strip(), options={"verify_signature": False})
    assert body["exp"] - body["iat"] == 90 * 60
    mgmt = run("token", "create", "--ca-dir", ca_dir, "--name", "ops", "--management")
    assert verifier.verify(mgmt.stdout.strip()).management


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--name", "alice", "--ttl", "5y"], "--ttl"),
        (["--name", "alice", "--ttl", "0"], "more than 0"),
        (["--name", "alice", "--ttl", "3651d"], "at most 10 years"),
        (["--name", "bob smith"], "--name 'bob smith' is not a valid user name"),
        ([], "--name"),
    ],
)
def test_token_create_bad_input(ca_dir: Path, extra: list[str], expected: str):
    assert expected in bad_input("token", "create", "--ca-dir", ca_dir, *extra)


def test_token_create_without_a_ca(tmp_path: Path):
    err = bad_input("token", "create", "--ca-dir", tmp_path / "none", "--name", "alice")
    assert "hypercore tls ca create --dir" in err
