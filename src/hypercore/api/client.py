"""A small synchronous client of the agent API, for the CLI."""

from __future__ import annotations

from typing import Any

import httpx

from hypercore.errors import HypercoreError


class ApiClientError(HypercoreError):
    def __init__(self, message: str, status: int | None = None, body: dict[str, Any] | None = None) -> None:
        self.status = status
        self.body = body or {}
        super().__init__(message)


class ApiClient:
    def __init__(self, addr: str, token: str | None = None, timeout: float = 120.0) -> None:
        if not addr.startswith(("http://", "https://")):
            addr = f"http://{addr}"
        self.addr = addr.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.addr, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, json: Any = None, text: bool = False) -> Any:
        try:
            response = self._client.request(method, path, json=json)
        except httpx.ConnectError:
            raise ApiClientError(f"cannot connect to the hypercore agent at {self.addr}: is `hypercore cluster` running there? (--addr / HYPERCORE_ADDR)") from None
        except httpx.HTTPError as exc:
            raise ApiClientError(f"{self.addr}{path}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
                err = body.get("error", {})
                message = err.get("message") or str(body)
            except (ValueError, AttributeError):
                body, message = {}, response.text[:300]
            raise ApiClientError(f"{message} (HTTP {response.status_code})", response.status_code, body)
        return response.text if text else response.json()


def fetch_node_records(addr: str, token: str | None) -> list[dict[str, Any]]:
    return ApiClient(addr, token).request("GET", "/v1/nodes")["nodes"]
