"""Node-to-node HTTP calls (scheduler attempts, cluster-wide reads, probes).

aiohttp rather than httpx here: on this path every millisecond is placement
overhead, and a keep-alive aiohttp request on loopback costs about 1 ms where
httpx's async client costs about 4 ms (measured; see bench/README.md).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp


class PeerUnreachable(Exception):
    """No HTTP answer: connection refused or reset, or no answer in time."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        self.timed_out = timed_out
        super().__init__(message)


@dataclass(frozen=True)
class PeerResponse:
    status: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)

    def error_message(self) -> str:
        try:
            body = self.json()
            return str(body.get("error", {}).get("message") or body)
        except (ValueError, AttributeError):
            return self.text[:200]


class PeerClient:
    def __init__(self, token: str | None) -> None:
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Created lazily: an aiohttp session must be made inside the running loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, connector=aiohttp.TCPConnector(limit=256))
        return self._session

    async def request(
        self, method: str, url: str, *, json_body: Any = None, timeout: float = 10.0, headers: dict[str, str] | None = None
    ) -> PeerResponse:
        try:
            async with self._open().request(
                method, url, json=json_body, timeout=aiohttp.ClientTimeout(total=timeout), headers=headers
            ) as response:
                return PeerResponse(response.status, await response.text())
        except asyncio.TimeoutError:
            raise PeerUnreachable(f"no answer within {timeout:g} s", timed_out=True) from None
        except aiohttp.ClientError as exc:
            raise PeerUnreachable(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
