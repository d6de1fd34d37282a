"""Shared fixtures of the policy-engine tests.

Helpers are exposed as fixtures (session scoped, so hypothesis tests may use
them too): node builders, the example policies, the realistic cluster
fixtures under tests/policy/fixtures/, a runner of the real `hypercore`
console script, and a JSON Schema checker (the `jsonschema` package).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest

from hypercore.policy import Policy, load_policy_file

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EXAMPLES_DIR = REPO / "examples" / "policies"
SAMPLE_CLUSTER = REPO / "examples" / "clusters" / "sample.json"
FIXTURES_DIR = HERE / "fixtures"
HYPERCORE = Path(sys.executable).with_name("hypercore")
if not HYPERCORE.exists():  # pragma: no cover - venv layout fallback
    HYPERCORE = REPO / ".venv" / "bin" / "hypercore"


# --------------------------------------------------------------------------- nodes


def _node(name: str, status: str = "alive", **metrics: Any) -> dict[str, Any]:
    return {"name": name, "status": status, **metrics}


@pytest.fixture(scope="session")
def node() -> Callable[..., dict[str, Any]]:
    """node("n1", latency_ms=10, ...) -> a node record dict (alive by default)."""
    return _node


# --------------------------------------------------------------------------- policies and clusters


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES_DIR


@pytest.fixture(scope="session")
def example_policies() -> dict[str, Policy]:
    return {p.stem: load_policy_file(p) for p in sorted(EXAMPLES_DIR.glob("*.json"))}


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def sample_cluster() -> Path:
    return SAMPLE_CLUSTER


def _cluster_nodes(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    return data["nodes"] if isinstance(data, dict) else data


@pytest.fixture(scope="session")
def cluster_nodes() -> Callable[[Path | str], list[dict[str, Any]]]:
    """cluster_nodes(path or fixture stem) -> the list of node records of a cluster file."""

    def load(path: Path | str) -> list[dict[str, Any]]:
        p = Path(path)
        if not p.suffix:
            p = FIXTURES_DIR / f"{p}.json"
        return _cluster_nodes(p)

    return load


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="session")
def hypercore_bin() -> Path:
    assert HYPERCORE.exists(), f"console script not installed at {HYPERCORE}"
    return HYPERCORE


@pytest.fixture(scope="session")
def run_cli(hypercore_bin: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """run_cli(*args, cwd=None) -> CompletedProcess of the real `hypercore` entry point."""

    def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(hypercore_bin), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd,
            # PYTHONPATH passes through: a worktree run with its own src first tests that code, not the venv's.
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "COLUMNS": "200",
                 **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}},
        )

    return run


# --------------------------------------------------------------------------- JSON Schema


def _validator_class(schema: dict[str, Any]) -> type[jsonschema.protocols.Validator]:
    # pydantic writes Draft 2020-12 without saying so; honour "$schema" if a
    # later version starts declaring another draft.
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


def _schema_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    cls = _validator_class(schema)
    # A broken schema would accept anything; refuse it instead of passing vacuously.
    cls.check_schema(schema)
    # No format_checker: the policy schema uses no "format" keywords.
    return [
        f"{error.json_path}: {error.message}"
        for error in sorted(cls(schema).iter_errors(instance), key=lambda e: e.json_path)
    ]


@pytest.fixture(scope="session")
def schema_errors() -> Callable[[Any, dict[str, Any]], list[str]]:
    """schema_errors(instance, schema) -> list of "path: message" errors ([] when valid)."""
    return _schema_errors
