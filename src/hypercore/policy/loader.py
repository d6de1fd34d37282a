"""Turn bytes, files or JSON values into a Policy, or a PolicyError that says why not.

JSON is parsed strictly here (NaN/Infinity and duplicate keys are refused, and
files over MAX_POLICY_BYTES are not read) because Python's json module would
otherwise accept them silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hypercore.policy.errors import PolicyError, Problem
from hypercore.policy.model import RULE_KEYS, Policy

MAX_POLICY_BYTES = 256 * 1024


class _StrictJSONError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _StrictJSONError(f"{name} is not valid JSON; use a finite number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _StrictJSONError(f"key {key!r} appears twice in one object")
        seen[key] = value
    return seen


def parse_json_strict(text: str, source: str) -> Any:
    """Parse JSON, refusing NaN/Infinity and duplicate keys; errors name the source."""
    if not text.strip():
        raise PolicyError([Problem(source, "", "file is empty; expected a JSON object")])
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except _StrictJSONError as exc:
        raise PolicyError([Problem(source, "", str(exc))]) from None
    except json.JSONDecodeError as exc:
        raise PolicyError(
            [Problem(source, "", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")]
        ) from None
    except RecursionError:
        raise PolicyError([Problem(source, "", "JSON is nested too deeply")]) from None


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problems(exc: ValidationError, source: str, flat: frozenset[str] = frozenset()) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        if len(loc) >= 2 and loc[0] == "rules" and loc[1] in flat:
            loc = loc[1:]  # the user wrote this rule at the top level; point there
        path = _path(loc) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            message = "unknown key; check its spelling (see `hypercore policy schema`)"
        elif kind == "missing":
            message = "is required"
        elif kind in ("value_error", "assertion_error"):
            message = str(err["ctx"].get("error", err["msg"])) if "ctx" in err else err["msg"]
        else:
            given = err.get("input")
            shown = f"{_short(given)} is not allowed: " if not isinstance(given, (dict, list)) else ""
            message = f"{shown}{err['msg'][0].lower()}{err['msg'][1:]}"
        problems.append(Problem(source, path, message))
    return problems


def parse_policy(data: Any, source: str = "policy", default_name: str | None = None) -> Policy:
    """Validate a JSON value as a policy. `default_name` names a policy that has none."""
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "null"
        raise PolicyError([Problem(source, "", f"expected a JSON object, got {kind}")])
    if default_name and "name" not in data:
        data = {**data, "name": default_name}
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        flat = frozenset(k for k in RULE_KEYS if k in data)
        raise PolicyError(_problems(exc, source, flat)) from None
    except RecursionError:
        raise PolicyError([Problem(source, "", "JSON is nested too deeply")]) from None


def loads_policy(text: str | bytes, source: str = "policy", default_name: str | None = None) -> Policy:
    """Parse and validate a policy from JSON text."""
    if isinstance(text, bytes):
        if len(text) > MAX_POLICY_BYTES:
            raise PolicyError([Problem(source, "", f"is {len(text)} bytes; a policy may be at most {MAX_POLICY_BYTES}")])
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError([Problem(source, "", "is not UTF-8 text")]) from None
    if len(text) > MAX_POLICY_BYTES:
        raise PolicyError([Problem(source, "", f"is {len(text)} characters; a policy may be at most {MAX_POLICY_BYTES}")])
    return parse_policy(parse_json_strict(text, source), source, default_name)


def load_policy_file(path: str | Path) -> Policy:
    """Read a policy file. A policy without a name takes the file's stem as its name."""
    path = Path(path)
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_POLICY_BYTES:
            raise PolicyError([Problem(source, "", f"is {size} bytes; a policy may be at most {MAX_POLICY_BYTES}")])
        with path.open("rb") as fh:
            raw = fh.read(MAX_POLICY_BYTES + 1)
    except FileNotFoundError:
        raise PolicyError([Problem(source, "", "no such file")]) from None
    except IsADirectoryError:
        raise PolicyError([Problem(source, "", "is a directory, not a policy file")]) from None
    except PermissionError:
        raise PolicyError([Problem(source, "", "permission denied")]) from None
    except OSError as exc:
        raise PolicyError([Problem(source, "", f"cannot be read: {exc.strerror or exc}")]) from None
    return loads_policy(raw, source, default_name=path.stem)
