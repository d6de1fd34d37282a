"""Shared fixtures of the policy-engine tests.

Helpers are exposed as fixtures (session scoped, so hypothesis tests may use
them too): node builders, the example policies, the realistic cluster
fixtures under tests/policy/fixtures/, a runner of the real `hypercore`
console script, and a JSON Schema checker (the `jsonschema` package when it
is installed, otherwise a small structural validator below).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

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
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "COLUMNS": "200"},
        )

    return run


# --------------------------------------------------------------------------- JSON Schema


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}

_HANDLED = {
    "type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "properties", "additionalProperties",
    "required", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
    "pattern", "items", "minItems", "maxItems", "$defs",
    # annotations only
    "title", "description", "default", "examples",
}


def _mini_validate(instance: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "$") -> list[str]:
    """A small Draft 2020-12 subset, enough for pydantic's policy schema."""
    unknown = set(schema) - _HANDLED
    assert not unknown, f"mini validator does not understand {sorted(unknown)} at {path}"
    errs: list[str] = []
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        errs += _mini_validate(instance, target, root, path)
    if "anyOf" in schema and not any(not _mini_validate(instance, s, root, path) for s in schema["anyOf"]):
        errs.append(f"{path}: matches none of anyOf")
    if "oneOf" in schema and sum(not _mini_validate(instance, s, root, path) for s in schema["oneOf"]) != 1:
        errs.append(f"{path}: does not match exactly one of oneOf")
    for sub in schema.get("allOf", []):
        errs += _mini_validate(instance, sub, root, path)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](instance) for t in types):
            return errs + [f"{path}: {instance!r} is not of type {types}"]
    if "enum" in schema and instance not in schema["enum"]:
        errs.append(f"{path}: {instance!r} not in {schema['enum']}")
    if "const" in schema and instance != schema["const"]:
        errs.append(f"{path}: {instance!r} != {schema['const']!r}")
    if _TYPES["number"](instance):
        if "minimum" in schema and instance < schema["minimum"]:
            errs.append(f"{path}: {instance} < minimum {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errs.append(f"{path}: {instance} > maximum {schema['maximum']}")
        if "exclusiveMinimum" in schema and instance <= schema["exclusiveMinimum"]:
            errs.append(f"{path}: {instance} <= exclusiveMinimum {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and instance >= schema["exclusiveMaximum"]:
            errs.append(f"{path}: {instance} >= exclusiveMaximum {schema['exclusiveMaximum']}")
    if isinstance(instance, str):
        if "minLength" in schema and len(instance) < schema["minLength"]:
            errs.append(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errs.append(f"{path}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errs.append(f"{path}: does not match {schema['pattern']!r}")
    if isinstance(instance, list):
        if "minItems" in schema and len(instance) < schema["minItems"]:
            errs.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            errs.append(f"{path}: more than {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(instance):
                errs += _mini_validate(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in instance:
                errs.append(f"{path}: {key!r} is required")
        for key, value in instance.items():
            if key in props:
                errs += _mini_validate(value, props[key], root, f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errs.append(f"{path}: additional property {key!r} is not allowed")
            elif isinstance(schema.get("additionalProperties"), dict):
                errs += _mini_validate(value, schema["additionalProperties"], root, f"{path}.{key}")
    return errs


@pytest.fixture(scope="session")
def schema_errors() -> Callable[[Any, dict[str, Any]], list[str]]:
    """schema_errors(instance, schema) -> list of validation errors ([] when valid)."""
    try:
        import jsonschema  # type: ignore[import-not-found]
    except ImportError:
        return lambda instance, schema: _mini_validate(instance, schema, schema)

    def check(instance: Any, schema: dict[str, Any]) -> list[str]:
        cls = jsonschema.validators.validator_for(schema)
        return [e.message for e in cls(schema).iter_errors(instance)]

    return check
