"""One ASGI app on one port: the REST API, auth, and the Gradio UI mounted at /."""
from __future__ import annotations

import json
import logging
import re
import secrets
import threading

from modules.errors import AtelierError, NotFound
from modules.studio import Studio
from webui.flags import parse_auth, parse_keys

log = logging.getLogger("atelier.server")


def api_credentials(studio: Studio) -> list[tuple[str, str]]:
    """--api-auth; without it, --gradio-auth guards the API too (here the API is always on,
    unlike A1111's opt-in --api, so a UI password must not leave a back door open)."""
    return parse_auth(studio.options.api_auth, "--api-auth") or parse_auth(studio.options.gradio_auth, "--gradio-auth")


class ErrorShield:
    """Outermost guard: an unexpected exception becomes a short JSON 500, logged once, never a traceback page."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            body = json.dumps({"error": "InternalError", "field": None,
                               "detail": f"unexpected {type(exc).__name__}; the server log has the details"}).encode()
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


class HideApiInfoBeforeLogin:
    """Gradio's page embeds `window.gradio_api_info` (component defaults and choices, e.g. the
    checkpoint names) even on the login page it shows before --gradio-auth's login. Blank it
    there; after login the page is served whole. Only small HTML pages are buffered."""

    _LOGIN_PAGE = re.compile(rb'"auth_required":\s*true')
    _API_INFO = re.compile(rb"<script>window\.gradio_api_info = .*?;</script>", re.S)
    _BLANK = b"<script>window.gradio_api_info = null;</script>"

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        start, chunks = None, []

        async def filtered(message):
            nonlocal start
            if message["type"] == "http.response.start":
                ctype = dict(message.get("headers", [])).get(b"content-type", b"")
                if ctype.startswith(b"text/html"):
                    start = message
                    return
                await send(message)
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            if self._LOGIN_PAGE.search(body):
                body = self._API_INFO.sub(self._BLANK, body)
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": headers + [(b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, filtered)


class RootPath:
    """--root-path: tell the app its public prefix. Works behind proxies that strip the prefix and
    those that keep it (Starlette routes on the path without the prefix either way)."""

    def __init__(self, app, root_path: str):
        self.app = app
        self.root_path = "/" + root_path.strip("/") if root_path.strip("/") else ""

    async def __call__(self, scope, receive, send):
        if self.root_path and scope["type"] in ("http", "websocket"):
            scope = dict(scope)
            scope["root_path"] = self.root_path
        await self.app(scope, receive, send)


def _install_error_handlers(app) -> None:
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    from webui.api.common import validation_response

    @app.exception_handler(AtelierError)
    async def _atelier_error(request: Request, exc: AtelierError):
        return JSONResponse(exc.to_json(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return validation_response(exc)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        # FastAPI's own refusal of a body it cannot decode (not UTF-8) is about the body, like a JSON error.
        field = "body" if exc.status_code == 400 and exc.detail == "There was an error parsing the body" else None
        return JSONResponse({"error": type(exc).__name__, "field": field, "detail": exc.detail},
                            status_code=exc.status_code, headers=exc.headers)


def create_app(studio: Studio):
    from fastapi import FastAPI

    app = FastAPI(title="Atelier", version="1", docs_url="/docs", openapi_url="/openapi.json",
                  description="AUTOMATIC1111-compatible REST API (/sdapi/v1) and Atelier's own routes. See docs/api.md.")
    _install_error_handlers(app)

    @app.get("/atelier/health", tags=["atelier"])
    def health():
        return {"ready": studio.ready.is_set(), "load_error": studio.load_error}

    from webui.api import routers

    for router in routers(studio):
        app.include_router(router)

    @app.api_route("/sdapi/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def unknown_api(rest: str):
        # Without this, an unknown /sdapi path would fall through to the UI and answer with HTML.
        raise NotFound(f"no such endpoint /sdapi/{rest[:100]} for this method; /docs lists them", "path")

    from webui.api.auth import ApiAuth

    api_app = app  # the name `app` is rebound below; auth must read this app's routes
    app.add_middleware(ApiAuth, pairs=api_credentials(studio), routes_of=lambda: api_app.router.routes,
                       keys=parse_keys(studio.options.api_key))
    if studio.options.gradio_auth:
        app.add_middleware(HideApiInfoBeforeLogin)
    app.add_middleware(ErrorShield)

    import gradio as gr

    from webui.ui import CSS, build_ui

    blocks = build_ui(studio)
    gradio_auth = parse_auth(studio.options.gradio_auth, "--gradio-auth") or None
    root = studio.options.root_path.strip("/")
    app = gr.mount_gradio_app(app, blocks, path="/", auth=gradio_auth, root_path=("/" + root) if root else None,
                              css=CSS)
    return RootPath(app, studio.options.root_path) if root else app


def start_warnings(studio: Studio) -> list[str]:
    """What is open to others: printed at start when --listen/--share leave the UI or API without auth."""
    opts = studio.options
    if not opts.exposed:
        return []
    how = " and ".join(x for x, on in (("--listen", opts.listen), ("--share", opts.share)) if on)
    out = []
    if not opts.gradio_auth:
        out.append(f"{how} without --gradio-auth: anyone who can reach this server can use the web UI")
    if not api_credentials(studio) and not parse_keys(opts.api_key):
        out.append(f"{how} without --api-auth or --api-key: anyone who can reach this server can use the REST API")
    return out


def serve(studio: Studio) -> None:
    import uvicorn

    for warning in start_warnings(studio):
        log.warning(warning)
    app = create_app(studio)
    host = "0.0.0.0" if studio.options.listen else "127.0.0.1"
    config = uvicorn.Config(app, host=host, port=studio.options.port, log_level="warning", timeout_keep_alive=30)
    server = uvicorn.Server(config)

    def after_start():
        # Heavy imports and model loading start only once the port answers.
        while not server.started and not server.should_exit:
            threading.Event().wait(0.05)
        prefix = studio.options.root_path.strip("/")
        print(f"Running on local URL:  http://{'127.0.0.1' if host == '0.0.0.0' else host}:{studio.options.port}"
              f"{'/' + prefix if prefix else ''}", flush=True)
        if studio.options.share:
            threading.Thread(target=_start_share, args=(studio,), name="atelier-share", daemon=True).start()
        studio.load_in_background()

    threading.Thread(target=after_start, daemon=True).start()
    try:
        server.run()
    finally:
        studio.shutdown()


def _start_share(studio: Studio) -> None:
    """Ask Gradio's tunnel for a public link; offline, warn and keep serving locally."""
    try:
        from gradio import networking

        url = networking.setup_tunnel("127.0.0.1", studio.options.port, secrets.token_urlsafe(32), None, None)
        print(f"Running on public URL: {url}", flush=True)
    except Exception as exc:
        log.warning("--share: no public link could be made (%s: %s); the local server keeps serving",
                    type(exc).__name__, exc)
