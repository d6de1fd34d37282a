"""logfmt logging: `time=… level=info msg="…" key=value …`, as the spec's examples show.

Fields come from `extra=` on the logging call; values with spaces, quotes or
equals signs are quoted so that the line stays machine-parseable.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

# uvicorn adds color_message, a copy of msg with terminal escapes.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName", "color_message"}


def _value(value: Any) -> str:
    text = "" if value is None else str(value)
    if text == "" or any(c in text for c in ' "=\\') or not text.isprintable():
        # Escaped, not written: a stranger's string (a policy name, a request id) must not start a line of its
        # own (\n, \r), move the terminal's cursor (\x1b) or carry a lone surrogate no UTF-8 file can hold.
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        escaped = "".join(c if c.isprintable() or c == " " else _escape(c) for c in escaped)
        return '"' + escaped + '"'
    return text


def _escape(c: str) -> str:
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c)
    if named is not None:
        return named
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        parts = [f"time={stamp}", f"level={record.levelname.lower()}", f"msg={_value(record.getMessage())}"]
        for key, value in record.__dict__.items():
            if key == "fields" and isinstance(value, dict):
                # `extra={"fields": {...}}` carries keys LogRecord reserves, such as name.
                parts.extend(f"{k}={_value(v)}" for k, v in value.items())
            elif key not in _STANDARD and not key.startswith("_"):
                parts.append(f"{key}={_value(value)}")
        if record.exc_info:
            parts.append(f"error={_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log would drown the decision logs.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
