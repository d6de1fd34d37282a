"""The API's error type and its JSON body: {"error": {"code", "message", ...}}."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from hypercore.errors import HypercoreError, encodable


class ApiError(HypercoreError):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        self.status, self.code, self.extra = status, code, extra
        super().__init__(message)


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    # An error quotes what was refused, which may be a lone surrogate that no UTF-8 body can hold.
    return JSONResponse(_encodable({"error": {"code": code, "message": message, **extra}}), status_code=status)


def _encodable(value: Any) -> Any:
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encodable(v) for v in value]
    return value
