"""Errors of the policy language and engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hypercore.errors import HypercoreError

if TYPE_CHECKING:
    from hypercore.policy.decision import Decision


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy: where, what was given, what is allowed.

    `line`/`column` (1-based) say where in the file the field `path` is, when
    the loader could find it in the raw text (best effort: see policy.jsonpos).
    """

    source: str
    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}: {self.path}" if self.path else self.source
        at = f" (line {self.line}, column {self.column})" if self.line is not None else ""
        return f"{where}: {self.message}{at}"


class PolicyError(HypercoreError):
    """A policy could not be loaded; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class NoQualifyingNode(HypercoreError):
    """Enforce mode and no node passed the rules; carries the decision."""

    def __init__(self, decision: "Decision") -> None:
        self.decision = decision
        super().__init__(decision.summary)


# pydantic's wording names Python types ("a valid dictionary or instance of Rules");
# a policy author reads JSON, so each kind of error is said in JSON's terms.
_EXPECTED = {
    "model_type": "expected a JSON object", "dict_type": "expected a JSON object",
    "model_attributes_type": "expected a JSON object", "list_type": "expected a list", "tuple_type": "expected a list",
    "string_type": "expected a string", "float_type": "expected a number", "int_type": "expected a number",
    "float_parsing": "expected a number", "int_parsing": "expected a number", "bool_type": "expected true or false",
    "bool_parsing": "expected true or false", "finite_number": "must be a finite number",
    "missing": "is required",
}
_LEADS = ("Input should be ", "String should ", "List should ", "Value should ", "Dictionary should ")


def shown_value(value: object) -> str:
    """A value as JSON would write it (true, null, "10"), clipped to 60 characters."""
    import json

    try:
        text = json.dumps(value, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):  # an int past Python's digit limit, say
        try:
            text = f"an integer of about {value.bit_length() * 30103 // 100000 + 1} digits"  # type: ignore[attr-defined]
        except AttributeError:
            text = "a value"
    return text if len(text) <= 60 else text[:57] + "..."


def describe(err: dict) -> str:  # type: ignore[type-arg]
    """One pydantic error (from `errors(include_url=False)`) in the words of a JSON author."""
    kind = err["type"]
    if kind in ("value_error", "assertion_error"):
        ctx = err.get("ctx") or {}
        return str(ctx.get("error", err["msg"])).removeprefix("Value error, ")
    message = _EXPECTED.get(kind)
    if message is None:
        message = err["msg"]
        for lead in _LEADS:
            if message.startswith(lead):
                verb = "must be " if lead == "Input should be " else "must "
                message = verb + message[len(lead):]
                break
        else:
            message = message[:1].lower() + message[1:]
    given = err.get("input")
    if kind == "missing" or isinstance(given, (dict, list)) or not err.get("loc"):
        return message
    return f"{shown_value(given)} is not allowed: {message}"
