"""Turn bytes, files or JSON values into a Policy, or a PolicyError that says why not.

JSON is parsed strictly here (NaN/Infinity and duplicate keys are refused, and
files over MAX_POLICY_BYTES are not read) because Python's json module would
otherwise accept them silently. Numbers Python cannot hold faithfully (an
integer of more than MAX_INT_DIGITS digits, which past 4,300 digits makes
json raise a bare ValueError, or a float such as 1e999 that overflows to
infinity) are refused with the path of the value. Only regular files are
read: a FIFO or a device would block or stream without end.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hypercore.policy.errors import PolicyError, Problem
from hypercore.policy.model import RULE_KEYS, Policy

MAX_POLICY_BYTES = 256 * 1024
# Far beyond any value a policy, node file or request means, and far below
# Python's int-string limit (4,300 digits), so every int we accept can be printed.
MAX_INT_DIGITS = 1000
_MAX_REPORTED = 20


class _StrictJSONError(ValueError):
    pass


class _Unrepresentable:
    """Stands in, in a parsed tree, for a number refused at parse time (found again by path)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _clip(text: str, width: int = 24) -> str:
    return text if len(text) <= width else f"{text[:width - 3]}..."


def _parse_int(text: str) -> int | _Unrepresentable:
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        return _Unrepresentable(f"integer {_clip(text)} has {digits} digits; at most {MAX_INT_DIGITS} are allowed")
    return int(text)


def _parse_float(text: str) -> float | _Unrepresentable:
    value = float(text)
    if math.isinf(value):
        infinity = "-Infinity" if value < 0 else "Infinity"
        return _Unrepresentable(f"number {_clip(text)} is out of range: too large for a float (it would be {infinity})")
    return value


def _unrepresentable(tree: Any) -> list[tuple[str, str]]:
    """(path, message) of the numbers _parse_int/_parse_float refused, in document order."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[str, Any]] = [("", tree)]
    while stack and len(found) < _MAX_REPORTED:
        path, value = stack.pop()
        if isinstance(value, _Unrepresentable):
            found.append((path, value.message))
        elif isinstance(value, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(value))))
    return found


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
    """Parse JSON, refusing NaN/Infinity, numbers out of range and duplicate keys; errors name the source."""
    if not text.strip():
        raise PolicyError([Problem(source, "", "file is empty; expected a JSON object")])
    refused: list[_Unrepresentable] = []

    def parse_int(token: str) -> int | _Unrepresentable:
        value = _parse_int(token)
        if isinstance(value, _Unrepresentable):
            refused.append(value)
        return value

    def parse_float(token: str) -> float | _Unrepresentable:
        value = _parse_float(token)
        if isinstance(value, _Unrepresentable):
            refused.append(value)
        return value

    try:
        tree = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates,
                          parse_int=parse_int, parse_float=parse_float)
    except _StrictJSONError as exc:
        raise PolicyError([Problem(source, "", str(exc))]) from None
    except json.JSONDecodeError as exc:
        raise PolicyError(
            [Problem(source, "", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")]
        ) from None
    except RecursionError:
        raise PolicyError([Problem(source, "", "JSON is nested too deeply")]) from None
    except ValueError as exc:  # anything else json refuses; never a traceback
        raise PolicyError([Problem(source, "", f"not valid JSON: {exc}")]) from None
    if refused:  # find them again, to name where they are
        raise PolicyError([Problem(source, path, message) for path, message in _unrepresentable(tree)])
    return tree


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _short(value: Any) -> str:
    try:
        text = json.dumps(value) if not isinstance(value, str) else repr(value)
    except (ValueError, TypeError, RecursionError):  # an int past Python's digit limit, say
        text = f"a {type(value).__name__}"
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


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def not_regular(mode: int) -> str | None:
    """None for a regular file's st_mode, else why it is refused ("is a FIFO (named pipe), not a regular file")."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "a special file")
    return f"is {kind}, not a regular file; refusing to read it"


def read_regular_file(path: str | Path, limit: int, what: str = "the file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes, or PolicyError naming the file and why not.

    FIFOs, devices, sockets and directories are refused before opening (a FIFO
    blocks until a writer comes, a device may never end). The open does not
    block (O_NONBLOCK) and is checked again with fstat, so a file swapped for a
    FIFO in between is refused as well.
    """
    source = str(path)

    def refuse(message: str) -> PolicyError:
        return PolicyError([Problem(source, "", message)])

    try:
        why = not_regular(os.stat(path).st_mode)
        if why:
            raise refuse(why)
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
        with os.fdopen(os.open(path, flags), "rb") as fh:
            info = os.fstat(fh.fileno())
            why = not_regular(info.st_mode)
            if why:
                raise refuse(why)
            if info.st_size > limit:
                raise refuse(f"is {info.st_size} bytes; {what} may be at most {limit}")
            raw = fh.read(limit + 1)
    except FileNotFoundError:
        raise refuse("no such file") from None
    except PermissionError:
        raise refuse("permission denied") from None
    except OSError as exc:
        raise refuse(f"cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:  # an embedded NUL in the path
        raise refuse(f"cannot be read: {exc}") from None
    if len(raw) > limit:
        raise refuse(f"is over {limit} bytes; {what} may be at most {limit}")
    return raw


def load_policy_file(path: str | Path) -> Policy:
    """Read a policy file. A policy without a name takes the file's stem as its name."""
    path = Path(path)
    raw = read_regular_file(path, MAX_POLICY_BYTES, "a policy")
    return loads_policy(raw, str(path), default_name=path.stem)
