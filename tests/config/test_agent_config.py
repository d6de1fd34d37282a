"""The agent's settings are declared once (hypercore.config) and fed by flags, environment and a config file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from hypercore.config import AgentConfig, ConfigError, agent_options, load_file, parse


def capture(args: list[str], env: dict[str, str] | None = None) -> tuple[int, Any, str]:
    """Run a command made of agent_options only; return (exit code, the parsed config, output)."""
    seen: dict[str, Any] = {}

    @click.command(context_settings={"auto_envvar_prefix": "HYPERCORE"})
    @agent_options
    def cmd(**settings: Any) -> None:
        seen["config"] = parse(settings)

    result = CliRunner().invoke(cmd, args, env=env or {})
    return result.exit_code, seen.get("config"), result.output + (str(result.exception) if result.exception else "")


def test_every_field_is_a_flag_and_an_environment_variable() -> None:
    @click.command()
    @agent_options
    def cmd(**_: Any) -> None: ...

    names = {p.name for p in cmd.params}
    assert set(AgentConfig.model_fields) <= names
    envvars = {p.envvar for p in cmd.params if isinstance(p, click.Option) and p.envvar}
    assert {f"HYPERCORE_{f.upper()}" for f in AgentConfig.model_fields if f != "join"} <= envvars


def test_precedence_is_flag_then_environment_then_file_then_default(tmp_path: Path) -> None:
    conf = tmp_path / "agent.toml"
    conf.write_text('beacon-price = 0.5\nbeacon_reputation = 0.7\nserf_profile = "wan"\njoin = ["10.0.0.1:7946"]\n')
    code, config, out = capture(["--config", str(conf), "--beacon-price", "0.2"],
                                env={"HYPERCORE_BEACON_REPUTATION": "0.8"})
    assert code == 0, out
    assert (config.beacon_price, config.beacon_reputation, config.serf_profile) == (0.2, 0.8, "wan")
    assert config.join == ("10.0.0.1:7946",) and config.placement_timeout == 15.0
    code, config, out = capture([])
    assert code == 0 and config == AgentConfig()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--beacon-price", "-1"], "--beacon-price -1.0: Input should be greater than or equal to 0"),
        (["--beacon-reputation", "1.5"], "--beacon-reputation 1.5"),
        (["--http-bind-addr", "8001"], "--http-bind-addr '8001' must be host:port"),
        (["--cluster-bind-addr", "127.0.0.1:0"], "port must be within 1-65535"),
        (["--serf-profile", "fast"], "'fast' is not one of"),
        (["--placement-timeout", "nan"], "--placement-timeout"),
        (["--region", "eu west"], "--region 'eu west': not a region name"),
        (["--region", "-eu"], "--region '-eu': not a region name: 1 to 32 ASCII letters"),
        (["--region", "é"], "not a region name"),
        (["--region", "r" * 33], "not a region name"),
    ],
)
def test_bad_values_name_their_flag(args: list[str], needle: str) -> None:
    code, _, out = capture(args)
    assert code != 0 and needle in out, out


def test_config_files_refuse_unknown_keys_and_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"beacon_pric": 1}))
    with pytest.raises(ConfigError, match="unknown setting\\(s\\) beacon_pric"):
        load_file(bad)
    garbage = tmp_path / "bad.toml"
    garbage.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_file(garbage)
    with pytest.raises(ConfigError, match="No such file"):
        load_file(tmp_path / "missing.toml")
    code, _, out = capture(["--config", str(bad)])
    assert code == 2 and "beacon_pric" in out and "Traceback" not in out


def test_a_region_is_a_short_ascii_name() -> None:
    for good in ("eu", "us-east-1", "AP.south_2", "r" * 32):
        code, config, out = capture(["--region", good])
        assert code == 0 and config.region == good, out
    code, config, _ = capture([])
    assert config.region is None
