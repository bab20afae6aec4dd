"""The server's last line of defence: an unexpected exception becomes a short JSON 500 that
leaks nothing, and the log keeps the traceback."""
from __future__ import annotations

import asyncio
import logging

import httpx

from webui.server import ErrorShield


async def _crashing_app(scope, receive, send):
    raise RuntimeError("secret internals /etc/shadow")


def test_unexpected_exception_becomes_a_short_json_500_and_is_logged(caplog):
    async def call():
        transport = httpx.ASGITransport(app=ErrorShield(_crashing_app))
        async with httpx.AsyncClient(transport=transport, base_url="http://atelier") as client:
            return await client.post("/sdapi/v1/txt2img", json={})

    with caplog.at_level(logging.ERROR, logger="atelier.server"):
        r = asyncio.run(call())
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "InternalError" and "RuntimeError" in r.json()["detail"]
    assert "secret internals" not in r.text and "Traceback" not in r.text
    assert "unexpected error on POST /sdapi/v1/txt2img" in caplog.text and "secret internals" in caplog.text
