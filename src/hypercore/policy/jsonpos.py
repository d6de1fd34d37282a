"""Where in a JSON text a problem is: line and column, best effort, for messages people act on.

Python's json module keeps no positions, so these helpers search the raw text
again: `locate` walks a field path ("rules.max_latency_ms", "nodes[3].latency_ms")
through the text with a small scanner, `second_key` finds a key written twice,
`constant` a NaN/Infinity token and `too_deep` where nesting passes a depth.
Every helper returns None rather than raise when it cannot tell; a message
without a position is still a message.
"""

from __future__ import annotations

import json
import re

_WS = re.compile(r"[ \t\n\r]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_SCALAR = re.compile(r"[^,\]}\s]+", re.ASCII)  # JSON whitespace is ASCII
_PATH_PART = re.compile(r"\[([0-9]+)\]|\.?([^.\[]+)", re.ASCII)
_MAX_STEPS = 200_000


def line_col(text: str, pos: int) -> tuple[int, int]:
    """1-based (line, column) of offset `pos`."""
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _skip_ws(text: str, i: int) -> int:
    return _WS.match(text, i).end()  # type: ignore[union-attr]


def _skip_value(text: str, i: int) -> int:
    """Offset just after the JSON value at `i` (text known to be valid JSON)."""
    if text[i] == '"':
        return _STRING.match(text, i).end()  # type: ignore[union-attr]
    if text[i] not in "{[":
        return _SCALAR.match(text, i).end()  # type: ignore[union-attr]
    depth, steps = 0, 0
    while i < len(text) and steps < _MAX_STEPS:
        steps += 1
        ch = text[i]
        if ch == '"':
            i = _STRING.match(text, i).end()  # type: ignore[union-attr]
            continue
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError("unterminated value")


def _parts(path: str) -> list[str | int]:
    return [int(m.group(1)) if m.group(1) is not None else m.group(2) for m in _PATH_PART.finditer(path)]


def locate(text: str, path: str) -> tuple[int, int] | None:
    """(line, column) of the key (or list item) that `path` names in `text` (or of the deepest
    part of it that is there), or None."""
    try:
        found = _offset(text, _parts(path))
    except (IndexError, ValueError, AttributeError, TypeError, RecursionError):
        return None
    return None if found is None else line_col(text, found)


def _offset(text: str, parts: list[str | int]) -> int | None:
    if not parts:
        return None
    i = _skip_ws(text, 1 if text.startswith("\ufeff") else 0)
    found = None
    for part in parts:
        i = _skip_ws(text, i)
        if isinstance(part, int):
            if text[i] != "[":
                return found
            i = _skip_ws(text, i + 1)
            for _ in range(part):
                i = _skip_ws(text, _skip_value(text, i))
                if text[i] != ",":
                    return found
                i = _skip_ws(text, i + 1)
            if text[i] == "]":
                return found
            found = i
            continue
        if text[i] != "{":
            return found
        i = _skip_ws(text, i + 1)
        while text[i] == '"':
            end = _STRING.match(text, i).end()  # type: ignore[union-attr]
            key = json.loads(text[i:end])
            value = _skip_ws(text, _skip_ws(text, end) + 1)  # past the ':'
            if key == part:
                found, i = i, value
                break
            i = _skip_ws(text, _skip_value(text, value))
            if text[i] != ",":
                return found
            i = _skip_ws(text, i + 1)
        else:
            return found
    return found


def second_key(text: str, key: str) -> tuple[int, int] | None:
    """(line, column) of the second `"key":` in the text: where a duplicate key is (best effort)."""
    pattern = re.compile(re.escape(json.dumps(key)) + r"\s*:")
    matches = pattern.finditer(text)
    next(matches, None)
    second = next(matches, None)
    return None if second is None else line_col(text, second.start())


def constant(text: str, name: str) -> tuple[int, int] | None:
    """(line, column) of the first NaN/Infinity/-Infinity token outside strings (best effort)."""
    found = re.search(r"(?<=[:\[,\s])" + re.escape(name) + r"\b", text)
    return None if found is None else line_col(text, found.start())


def too_deep(text: str, limit: int = 200) -> tuple[int, int] | None:
    """(line, column) of the first bracket nested deeper than `limit`, outside strings."""
    depth, i = 0, 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            m = _STRING.match(text, i)
            if m is None:
                return None
            i = m.end()
            continue
        if ch in "{[":
            depth += 1
            if depth > limit:
                return line_col(text, i)
        elif ch in "}]":
            depth -= 1
        i += 1
    return None
