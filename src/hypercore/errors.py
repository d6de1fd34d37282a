"""The root of hypercore's error hierarchy.

Every error a user can cause derives from HypercoreError, so the CLI and the
HTTP API can turn it into a clear message (and an exit code or 4xx status)
instead of a traceback.
"""

from __future__ import annotations


class HypercoreError(Exception):
    """Base class of every error hypercore raises on purpose."""


def encodable(text: str) -> str:
    """`text` with lone surrogates written as their escape (the six characters `\\ud800`).

    A JSON body may spell a lone surrogate (`"\\ud800"`); the models refuse it, but an error message that
    quotes the refused value carried it on, and no UTF-8 response or log line can hold it (the API
    answered such a policy with a 500).
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_from_body(text: str) -> tuple[str, str]:
    """(code, message) of an error response of our API, `{"error": {"code", "message"}}`, or of any other body."""
    import json

    try:
        err = json.loads(text)["error"]
        return str(err.get("code") or "upstream"), str(err.get("message") or err)
    except (ValueError, KeyError, TypeError, AttributeError):
        return "upstream", text[:200]
