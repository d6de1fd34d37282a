"""deploy/hypercore.service passes `systemd-analyze verify`; deploy/agent.toml.example is a working
config with every setting; an unknown setting in a config file is reported with the file and line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hypercore.config import AgentConfig, ConfigError, load_file, parse

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "hypercore.service"
EXAMPLE = ROOT / "deploy" / "agent.toml.example"
INSTALLED = "/usr/local/bin/hypercore"  # where the unit expects `pip install` to have put the command
SETTING = re.compile(r"^(#\s?)?([a-z_]+) = (.*)$")  # `name = value`, or `# name = value` (a default)


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def verify(unit: Path) -> list[str]:
    """systemd-analyze verify's complaints about `unit`. It exits 0 on an unknown key or a bad value, and only
    says so on stderr: both count."""
    analyze = shutil.which("systemd-analyze", path=os.environ.get("PATH", os.defpath) + ":/usr/sbin:/usr/bin")
    assert analyze is not None
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines() if unit.name in line]
    if proc.returncode != 0:
        complaints.append(f"exit status {proc.returncode}: {proc.stderr.strip()}")
    return complaints


def checkable_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit, with ExecStart pointing at a hypercore that exists here.

    `verify` fails when ExecStart's program is missing, and the unit names
    /usr/local/bin/hypercore, where a system-wide `pip install` puts it, which
    a development machine does not have: the copy runs this venv's entry
    point (the same console script), or a stub when there is none.
    """
    venv_script = Path(sys.executable).parent / "hypercore"
    program = venv_script if venv_script.exists() else tmp_path / "hypercore"
    if not program.exists():
        program.write_text("#!/bin/sh\nexit 0\n")
        program.chmod(0o755)
    text = (text or UNIT.read_text())
    assert text.count(f"ExecStart={INSTALLED} ") == 1
    copy = tmp_path / "hypercore.service"
    copy.write_text(text.replace(f"ExecStart={INSTALLED} ", f"ExecStart={program} "))
    return copy


@pytest.mark.systemd
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    assert verify(checkable_copy(tmp_path)) == []
    # The check is not vacuous: a misspelt key and a bad value are reported.
    broken = UNIT.read_text().replace("ProtectSystem=full", "ProtectSystm=full").replace("TasksMax=infinity",
                                                                                         "TasksMax=lots")
    complaints = verify(checkable_copy(tmp_path, broken))
    assert any("ProtectSystm" in c for c in complaints) and any("'lots'" in c for c in complaints), complaints


def test_the_unit_runs_the_agent_on_its_config_and_spares_workloads_on_restart() -> None:
    s = unit_settings()
    assert s["ExecStart"] == [f"{INSTALLED} cluster --config /etc/hypercore/agent.toml"]
    assert s["Type"] == ["exec"]  # hypercore does not send sd_notify
    assert s["KillMode"] == ["process"]  # workloads outlive the agent
    assert s["Restart"] == ["on-failure"] and s["LimitNOFILE"] == ["65536"]
    assert s["ProtectSystem"] == ["full"] and s["ProtectHome"] == ["yes"]
    # Not set, for the reasons the unit gives: inherited by containers; /tmp deleted under running workloads;
    # /run/hypercore (uid leases of running workloads) deleted on stop.
    for unset in ("NoNewPrivileges", "PrivateTmp", "RuntimeDirectory"):
        assert unset not in s
    # The state directory is the data dir the example config sets (the default is under /root, hidden).
    assert s["StateDirectory"] == ["hypercore"]
    assert load_file(EXAMPLE)["data_dir"] == "/var/lib/hypercore"


def example_lines() -> list[tuple[bool, str, str]]:
    """(commented out, name, value) of every `name = value` line of the example."""
    found = []
    for line in EXAMPLE.read_text().splitlines():
        if (m := SETTING.match(line)) and m.group(2) in AgentConfig.model_fields:
            found.append((m.group(1) is not None, m.group(2), m.group(3)))
    return found


def test_the_example_config_loads_as_it_is() -> None:
    config = parse(load_file(EXAMPLE), source=str(EXAMPLE))
    assert config.data_dir == Path("/var/lib/hypercore")
    assert config.ca_file == Path("/etc/hypercore/ca.pem")


def test_the_example_config_shows_every_setting_once_with_its_default(tmp_path: Path) -> None:
    lines = example_lines()
    names = [name for _, name, _ in lines]
    assert sorted(names) == sorted(AgentConfig.model_fields), "every setting, each once: " + ", ".join(
        sorted(set(AgentConfig.model_fields) ^ set(names)) or sorted({n for n in names if names.count(n) > 1}))

    # With every line uncommented, the file is still a valid config.
    enabled = tmp_path / "all.toml"
    enabled.write_text("\n".join(SETTING.sub(r"\2 = \3", line) for line in EXAMPLE.read_text().splitlines()))
    parse(load_file(enabled), source=str(enabled))

    # A commented-out line shows the default, unless there is none (None, or an empty list): then an example.
    defaults = parse({})
    for commented, name, value in lines:
        default = AgentConfig.model_fields[name].default
        if not commented or default in (None, ()):
            continue
        settings: dict[str, Any] = tomllib.loads(f"{name} = {value}")
        assert getattr(parse(settings), name) == getattr(defaults, name), f"{name} = {value} is not the default"


@pytest.mark.parametrize("name,text,line", [
    ("agent.toml", 'beacon_price = 0.02\nlog_level = "info"\n\n  beacon_pric = 0.03\n', 4),
    ("agent.toml", '# beacon-pricey = 1\nbeacon_price = 0.02\n"--beacon-pricey" = 0.03\n', 3),
    ("agent.toml", 'beacon_price = 0.02\n[beacon]\nprice = 0.03\n', 2),
    ("agent.json", '{\n  "beacon_price": 0.02,\n  "probe-intervall": 3\n}\n', 3),
])
def test_an_unknown_setting_is_reported_with_the_file_and_line(tmp_path: Path, name: str, text: str,
                                                               line: int) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) (beacon_pric|beacon_pricey|beacon|probe_intervall) "
                                          + re.escape(f"({path}:{line})")):
        load_file(path)


def test_the_agent_command_names_the_file_and_line_of_an_unknown_setting(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(EXAMPLE.read_text() + "\nbeacon_pric = 0.03\n")
    line = len(path.read_text().splitlines())
    proc = subprocess.run([sys.executable, "-m", "hypercore.cli", "cluster", "--config", str(path)],
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if not k.startswith("HYPERCORE_")})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"unknown setting(s) beacon_pric ({path}:{line})" in proc.stderr, proc.stderr
