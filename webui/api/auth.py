"""HTTP Basic auth (--api-auth) and API keys (--api-key) for every API route (plain ASGI, so
Gradio's streams pass untouched). `Authorization: Bearer KEY` is what OpenAI clients send;
`Bearer USER:PASS` is accepted too, for clients that only send an API key.

Protected: every route of the FastAPI app itself (the REST API, /docs, /openapi.json,
routes extensions add) and anything under the API prefixes, even when no route matches
(so a 404 does not reveal what exists). Not protected here: the Gradio UI mounted at /,
which has its own login (--gradio-auth).
"""
from __future__ import annotations

import base64
import binascii
import json
import secrets

API_PREFIXES = ("/sdapi/", "/atelier/", "/ext/", "/v1/", "/docs", "/redoc", "/openapi.json")


def basic_auth_ok(header: str | None, pairs: list[tuple[str, str]]) -> bool:
    """HTTP Basic, or `Bearer USER:PASS` (so OpenAI-style clients can pass it as their api_key)."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "basic":
        try:
            value = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    user, sep, password = value.strip().partition(":")
    if not sep:
        return False
    ok = False
    for u, p in pairs:  # compare against every pair so the time taken does not tell which user exists
        ok |= secrets.compare_digest(user.encode(), u.encode()) & secrets.compare_digest(password.encode(), p.encode())
    return ok


def api_key_ok(header: str | None, keys: list[str]) -> bool:
    """`Authorization: Bearer KEY` with one of --api-key's keys."""
    if not header or not keys:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    ok = False
    for key in keys:  # compare against every key so the time taken does not tell which one is close
        ok |= secrets.compare_digest(value.strip().encode(), key.encode())
    return ok


def route_path(scope) -> str:
    """The path the app routes on: without the --root-path prefix when a proxy kept it."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root):] or "/"
    return path


class ApiAuth:
    def __init__(self, app, pairs: list[tuple[str, str]], routes_of, keys: list[str] = ()):
        self.app = app
        self.pairs = pairs
        self.keys = list(keys)
        self.routes_of = routes_of  # () -> the FastAPI app's routes, read at request time

    def _protected(self, scope) -> bool:
        from starlette.routing import Match, Mount

        path = route_path(scope)
        if path.startswith(API_PREFIXES):
            return True
        for route in self.routes_of():
            if isinstance(route, Mount):
                continue
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return True
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not (self.pairs or self.keys) or not self._protected(scope):
            await self.app(scope, receive, send)
            return
        headers = dict((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", []))
        given = headers.get("authorization")
        if basic_auth_ok(given, self.pairs) or api_key_ok(given, self.keys):
            await self.app(scope, receive, send)
            return
        how = " or ".join(w for w, on in (("the --api-auth credentials (HTTP Basic)", self.pairs),
                                          ("an API key (Authorization: Bearer KEY)", self.keys)) if on)
        detail = f"this API needs {how}"
        if route_path(scope).startswith("/v1/"):  # OpenAI clients read OpenAI's error shape
            body = {"error": {"message": detail, "type": "invalid_request_error", "param": None,
                              "code": "invalid_api_key"}}
        else:
            body = {"error": "Unauthorized", "field": "authorization", "detail": detail}
        raw = json.dumps(body).encode()
        challenge = b'Basic realm="Atelier API"' if self.pairs else b'Bearer realm="Atelier API"'
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
            (b"www-authenticate", challenge)]})
        await send({"type": "http.response.body", "body": raw})
