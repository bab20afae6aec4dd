"""A short lock-out for an address after repeated failed logins, on the UI and the API.

A failure is a 401 from the API's auth or a refused Gradio login (POST /login → 400). After
`max_failures` within `window_s`, every request from that address gets 429 for `lockout_s`, logged
once. A success clears the count. Plain ASGI, so streams pass untouched.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from webui.api.auth import route_path

log = logging.getLogger("atelier.auth")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass
class LoginLimits:
    max_failures: int = 5
    window_s: float = 300.0
    lockout_s: float = 60.0


@dataclass
class _Record:
    failures: deque = field(default_factory=deque)
    locked_until: float = 0.0


def client_address(scope) -> str:
    """The peer; behind a local tunnel or proxy (--share's tunnel, a reverse proxy on this machine) the
    address it forwarded — the last hop of X-Forwarded-For, the one the proxy itself wrote."""
    peer = (scope.get("client") or ("?", 0))[0]
    if peer in LOOPBACK:
        for key, value in scope.get("headers", []):
            if key.lower() == b"x-forwarded-for":
                hops = [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
                if hops:
                    return hops[-1]
    return peer


class LoginLimiter:
    def __init__(self, app, limits: LoginLimits | None = None, clock=time.monotonic):
        self.app = app
        self.limits = limits or LoginLimits()
        self.clock = clock
        self.records: dict[str, _Record] = {}

    def _is_login(self, scope) -> bool:
        return scope.get("method") == "POST" and route_path(scope).rstrip("/").endswith("/login")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        address = client_address(scope)
        now = self.clock()
        record = self.records.get(address)
        if record and record.locked_until > now:
            await self._refuse(send, record.locked_until - now)
            return
        login = self._is_login(scope)
        status = 0

        async def watch(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if status == 401 or (login and status == 400):
            self._failed(address, now)
        elif record and (login and status == 200 or _sent_credentials(scope) and status < 400):
            self.records.pop(address, None)

    def _failed(self, address: str, now: float) -> None:
        record = self.records.setdefault(address, _Record())
        record.failures.append(now)
        while record.failures and record.failures[0] < now - self.limits.window_s:
            record.failures.popleft()
        if len(record.failures) >= self.limits.max_failures:
            record.failures.clear()
            record.locked_until = now + self.limits.lockout_s
            log.warning("%d failed logins from %s: refused for %.0f s", self.limits.max_failures, address,
                        self.limits.lockout_s)

    async def _refuse(self, send, wait_s: float) -> None:
        body = json.dumps({"error": "TooManyRequests", "field": "authorization",
                           "detail": f"too many failed logins from this address; try again in {wait_s:.0f} s"}).encode()
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(max(1, round(wait_s))).encode())]})
        await send({"type": "http.response.body", "body": body})


def _sent_credentials(scope) -> bool:
    return any(key.lower() == b"authorization" for key, _ in scope.get("headers", []))
