"""One ASGI app on one port: the REST API, auth, and the Gradio UI mounted at /."""
from __future__ import annotations

import json
import logging
import re
import secrets
import signal
import threading

from modules.errors import AtelierError, NotFound
from modules.studio import Studio
from webui.access import Access, decide_access, start_messages

log = logging.getLogger("atelier.server")


def studio_access(studio: Studio) -> Access:
    """The logins (webui/access.py). Without --api-auth, --gradio-auth guards the API too (here the API is
    always on, unlike A1111's opt-in --api, so a UI password must not leave a back door open)."""
    return decide_access(studio.options, studio.paths.login_file)


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


def create_app(studio: Studio, access: Access | None = None):
    from fastapi import FastAPI

    access = access or studio_access(studio)
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
    from webui.login_limit import LoginLimiter

    api_app = app  # the name `app` is rebound below; auth must read this app's routes
    app.add_middleware(ApiAuth, pairs=list(access.api_pairs), routes_of=lambda: api_app.router.routes,
                       keys=list(access.api_keys))
    if access.ui_pairs:
        app.add_middleware(HideApiInfoBeforeLogin)
    if studio.options.exposed and (access.ui_pairs or access.api_pairs or access.api_keys):
        app.add_middleware(LoginLimiter)  # others can reach it: guessing the login gets slow
    app.add_middleware(ErrorShield)

    import gradio as gr

    from webui.ui import CSS, build_ui

    blocks = build_ui(studio)
    gradio_auth = list(access.ui_pairs) or None
    root = studio.options.root_path.strip("/")
    app = gr.mount_gradio_app(app, blocks, path="/", auth=gradio_auth, root_path=("/" + root) if root else None,
                              css=CSS)
    return RootPath(app, studio.options.root_path) if root else app


def serve(studio: Studio) -> None:
    import uvicorn

    access = studio_access(studio)
    printed, warnings = start_messages(studio.options, access)
    for warning in warnings:
        log.warning(warning)
    app = create_app(studio, access)
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
        if studio.options.share:  # the public URL and then the login come last (what a Colab user reads)
            threading.Thread(target=_start_share, args=(studio, printed), name="atelier-share", daemon=True).start()
        else:
            for line in printed:
                print(line, flush=True)
        studio.load_in_background()

    threading.Thread(target=after_start, daemon=True).start()
    if threading.current_thread() is threading.main_thread():
        # uvicorn stops gracefully on SIGTERM and then raises the signal again, which would end the process
        # before `finally`; leave through SystemExit instead, so running jobs are interrupted (a training saves).
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        server.run()
    finally:
        studio.shutdown()
        print("Atelier stopped.", flush=True)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _start_share(studio: Studio, then_print: list[str]) -> None:
    """Ask Gradio's tunnel for a public link; offline, warn and keep serving locally."""
    try:
        from gradio import networking

        url = networking.setup_tunnel("127.0.0.1", studio.options.port, secrets.token_urlsafe(32), None, None)
        print(f"Running on public URL: {url}", flush=True)
    except Exception as exc:
        log.warning("--share: no public link could be made (%s: %s); the local server keeps serving",
                    type(exc).__name__, exc)
    for line in then_print:
        print(line, flush=True)
