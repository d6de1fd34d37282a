"""A small synchronous client of the agent API, for the CLI."""

from __future__ import annotations

import ssl
import time
from urllib.parse import quote
from pathlib import Path
from typing import Any, Final

import httpx

from hypercore.errors import HypercoreError, error_from_body


READ_RETRIES: Final = 3  # a read answered 429 is sent again at most this often, after the wait it was told
READ_RETRY_MAX_S: Final = 10.0  # and only if that wait is at most this long


class ApiClientError(HypercoreError):
    def __init__(self, message: str, status: int | None = None, body: dict[str, Any] | None = None) -> None:
        self.status = status
        self.body = body or {}
        super().__init__(message)


def _verify(ca_file: Path | None) -> ssl.SSLContext | bool:
    if ca_file is None:
        return True  # the system's trust store: right for an agent whose certificate a public CA issued
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ApiClientError(f"--ca-file {ca_file}: not a readable CA certificate ({exc})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


class ApiClient:
    def __init__(self, addr: str, token: str | None = None, timeout: float = 120.0, ca_file: Path | None = None) -> None:
        if not addr.startswith(("http://", "https://")):
            addr = f"https://{addr}"
        self.addr = addr.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.addr, headers=headers, timeout=timeout, verify=_verify(ca_file))

    def request(self, method: str, path: str, json: Any = None, text: bool = False) -> Any:
        for waits_left in range(READ_RETRIES, -1, -1):
            response = self._send(method, path, json)
            # A read refused for going too fast (e.g. a listing read page by page: each page asks every node,
            # hypercore.api.ratelimit) waits as told and goes on; a write is the user's to repeat.
            wait = _retry_after(response) if method == "GET" and waits_left else None
            if wait is None or wait > READ_RETRY_MAX_S:
                break
            time.sleep(wait)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            _code, message = error_from_body(response.text)
            raise ApiClientError(f"{message} (HTTP {response.status_code})", response.status_code,
                                 body if isinstance(body, dict) else {})
        return response.text if text else response.json()

    def _send(self, method: str, path: str, json: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, json=json)
        except httpx.ConnectError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise ApiClientError(f"the agent at {self.addr} has a certificate this client does not trust ({exc}); "
                                     "pass the cluster CA with --ca-file (env HYPERCORE_CACERT)") from None
            raise ApiClientError(f"cannot connect to the hypercore agent at {self.addr}: is `hypercore cluster` running "
                                 "there? (--addr / HYPERCORE_ADDR; agents serve https://)") from None
        except httpx.RemoteProtocolError:
            raise ApiClientError(f"the agent at {self.addr} did not answer HTTP: agents serve https:// "
                                 "(unless run with --insecure)") from None
        except httpx.HTTPError as exc:
            raise ApiClientError(f"{self.addr}{path}: {type(exc).__name__}: {exc}") from None


def _retry_after(response: httpx.Response) -> float | None:
    """The seconds a 429 answer asks to wait (its Retry-After header, whole seconds), or None."""
    value = response.headers.get("retry-after", "") if response.status_code == 429 else ""
    return float(value) if value.isascii() and value.isdigit() else None


def fetch_node_records(addr: str, token: str | None, ca_file: Path | None = None,
                       near: str | None = None) -> list[dict[str, Any]]:
    """The nodes as the agent at `addr` sees them (links measured from it, or from `near`)."""
    path = "/v1/nodes" + (f"?near={quote(near, safe='')}" if near else "")
    return ApiClient(addr, token, ca_file=ca_file).request("GET", path)["nodes"]


def dry_run_decision(addr: str, token: str | None, ca_file: Path | None, policy: dict[str, Any],
                     spec: dict[str, Any], near: str | None = None) -> dict[str, Any]:
    """The decision the agent at `addr` makes for a spawn of `spec` under `policy`, without placing it
    (POST /v1/placements: the scheduler's own decision, with what only the agent knows)."""
    body: dict[str, Any] = {"policy": policy, "spec": spec}
    if near:
        body["near"] = near
    return ApiClient(addr, token, ca_file=ca_file).request("POST", "/v1/placements", json=body)
