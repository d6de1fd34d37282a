"""The API's error type and its JSON body: {"error": {"code", "message", ...}}."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from hypercore.errors import HypercoreError


class ApiError(HypercoreError):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        self.status, self.code, self.extra = status, code, extra
        super().__init__(message)


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)
