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

import difflib
import json
import math
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import hypercore.policy.jsonpos as jsonpos
from hypercore.policy.errors import PolicyError, Problem, describe
from hypercore.policy.fastjson import NOT_FAST, parse_fast
from hypercore.policy.model import Policy, PolicyModels, flat_keys, policy_models
from hypercore.policy.registry import DEFAULT_REGISTRY, MetricRegistry

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


_JSON_MESSAGES = (  # json's wording, said for a person editing the file
    ("Expecting value", "expected a value"),
    ("Expecting property name enclosed in double quotes", "expected a key in double quotes"),
    ("Expecting ':' delimiter", "expected ':' after the key"),
    ("Expecting ',' delimiter", "expected ',' or the end of the object or list"),
    ("Unterminated string starting at", "a string starts here and is never closed"),
    ("Invalid control character at", "a string holds a raw control character (write \\n, \\t, ...)"),
    ("Invalid \\uXXXX escape", "a \\u escape needs four hex digits"),
    ("Invalid \\escape", "a string holds an invalid backslash escape"),
    ("Extra data", "more text after the end of the JSON value"),
)


def _syntax_message(text: str, exc: json.JSONDecodeError) -> str:
    """What is wrong at exc.pos, in words a person fixes a file with (comments, quotes, trailing commas)."""
    line, column = jsonpos.line_col(text, exc.pos)
    at = f"(line {line}, column {column})"
    rest = text[exc.pos:exc.pos + 2]
    if rest[:1] in ("/", "#") and not exc.msg.startswith(("Unterminated", "Invalid")):
        part = "/* */" if rest == "/*" else "//" if rest == "//" else rest[:1]
        return f"JSON does not allow comments {at}; remove the `{part}` part"
    if rest[:1] == "'" and exc.msg.startswith(("Expecting value", "Expecting property")):
        return f"not valid JSON {at}: keys and strings take double quotes, not single quotes"
    before = text[:exc.pos].rstrip()
    if rest[:1] in ("}", "]") and before.endswith(","):
        return f"not valid JSON {at}: a comma before `{rest[:1]}` (JSON allows no trailing comma)"
    said = next((ours for theirs, ours in _JSON_MESSAGES if exc.msg.startswith(theirs)), exc.msg)
    return f"not valid JSON {at}: {said}"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _StrictJSONError(key)
        seen[key] = value
    return seen


def _at(problem: Problem, where: tuple[int, int] | None) -> Problem:
    return problem if where is None else replace(problem, line=where[0], column=where[1])


def with_locations(problems: list[Problem], text: str) -> list[Problem]:
    """`problems` with the line and column of each one's field path in `text`, where it can be found."""
    return [p if p.line is not None or not p.path else _at(p, jsonpos.locate(text, p.path)) for p in problems]


def parse_json_strict(text: str, source: str) -> Any:
    """Parse JSON, refusing NaN/Infinity, numbers out of range and duplicate keys; errors name the source.

    A UTF-8 byte order mark is skipped. Errors give the line and column (of the
    syntax error, or of the field that holds a refused value; best effort).
    """
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise PolicyError([Problem(source, "", "file is empty; expected a JSON object")])
    fast = parse_fast(text)
    return fast if fast is not NOT_FAST else parse_json_careful(text, source)


def parse_json_careful(text: str, source: str) -> Any:
    """parse_json_strict without the fast way (policy.fastjson): Python's json with a hook per
    number and per object, which finds what is refused and says what, and where."""
    refused: list[_Unrepresentable] = []

    def keep(value: Any) -> Any:
        if isinstance(value, _Unrepresentable):
            refused.append(value)
        return value

    def parse_constant(name: str) -> _Unrepresentable:
        return keep(_Unrepresentable(f"{name} is not valid JSON; use a finite number"))

    try:
        tree = json.loads(text, parse_constant=parse_constant, object_pairs_hook=_no_duplicates,
                          parse_int=lambda t: keep(_parse_int(t)), parse_float=lambda t: keep(_parse_float(t)))
    except _StrictJSONError as exc:
        key = str(exc)
        problem = Problem(source, "", f"key {json.dumps(key)} appears twice in one object")
        raise PolicyError([_at(problem, jsonpos.second_key(text, key))]) from None
    except json.JSONDecodeError as exc:
        raise PolicyError([Problem(source, "", _syntax_message(text, exc))]) from None
    except RecursionError:
        problem = Problem(source, "", "JSON is nested too deeply")
        raise PolicyError([_at(problem, jsonpos.too_deep(text))]) from None
    except ValueError as exc:  # anything else json refuses; never a traceback
        raise PolicyError([Problem(source, "", f"not valid JSON: {exc}")]) from None
    if refused:  # find them again, to name where they are
        problems = [Problem(source, path, message) for path, message in _unrepresentable(tree)]
        raise PolicyError(with_locations(problems, text))
    return tree


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _allowed_at(models: PolicyModels, loc: tuple[int | str, ...]) -> tuple[str, ...]:
    """The keys a policy allows in the object at `loc` (for "did you mean")."""
    by_loc: dict[tuple[int | str, ...], Any] = {(): models.policy, ("rules",): models.rules,
                                                ("scoring",): models.scoring, ("scoring", "scales"): models.scales}
    model = by_loc.get(loc)
    if model is None:
        return ()
    keys = tuple(model.model_fields)
    return keys + flat_keys(models.registry) if model is models.policy else keys


def _unknown_key(models: PolicyModels, loc: tuple[int | str, ...]) -> str:
    key = str(loc[-1])
    close = difflib.get_close_matches(key, _allowed_at(models, loc[:-1]), n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean `{close[0]}`?"
    for parent, model in (("scoring", models.scoring), ("rules", models.rules), ("scoring.scales", models.scales)):
        if key in model.model_fields and _path(loc[:-1]) != parent:
            return f"unknown key here; `{key}` belongs under `{parent}`"
    return "unknown key; check its spelling (see `hypercore policy schema`)"


def _problems(models: PolicyModels, exc: ValidationError, source: str, flat: frozenset[str] = frozenset()) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        if len(loc) >= 2 and loc[0] == "rules" and loc[1] in flat:
            loc = loc[1:]  # the user wrote this rule at the top level; point there
        path = _path(loc) or "(top level)"
        message = _unknown_key(models, loc) if err["type"] == "extra_forbidden" else describe(err)
        problems.append(Problem(source, path, message))
    return problems


def parse_policy(data: Any, source: str = "policy", default_name: str | None = None,
                 registry: MetricRegistry = DEFAULT_REGISTRY) -> Policy:
    """Validate a JSON value as a policy (of `registry`'s metrics). `default_name` names a policy that has none."""
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "null"
        raise PolicyError([Problem(source, "", f"expected a JSON object, got {kind}")])
    if default_name and "name" not in data:
        data = {**data, "name": default_name}
    models = policy_models(registry)
    try:
        return models.policy.model_validate(data)  # type: ignore[return-value]
    except ValidationError as exc:
        flat = frozenset(k for k in flat_keys(registry) if k in data)
        raise PolicyError(_problems(models, exc, source, flat)) from None
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
    text = text.removeprefix("\ufeff")
    tree = parse_json_strict(text, source)
    try:
        return parse_policy(tree, source, default_name)
    except PolicyError as exc:
        problems = with_locations(exc.problems, text)
        if any(p.message == "JSON is nested too deeply" for p in problems):
            problems = [_at(p, jsonpos.too_deep(text)) if p.line is None else p for p in problems]
        raise PolicyError(problems) from None


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
