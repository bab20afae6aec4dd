"""One ASGI app on one port: the REST API, auth, and the Gradio UI mounted at /."""
from __future__ import annotations

import base64
import logging
import secrets
import threading

from modules.errors import AtelierError
from modules.studio import Studio
from webui.flags import parse_auth

log = logging.getLogger("atelier.server")


def _basic_auth_ok(header: str | None, pairs: list[tuple[str, str]]) -> bool:
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return any(secrets.compare_digest(user, u) and secrets.compare_digest(password, p) for u, p in pairs)


def create_app(studio: Studio):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    app = FastAPI(title="Atelier", docs_url="/docs", openapi_url="/openapi.json")
    api_pairs = parse_auth(studio.options.api_auth, "--api-auth")

    @app.exception_handler(AtelierError)
    async def _atelier_error(request: Request, exc: AtelierError):
        return JSONResponse(exc.to_json(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        return JSONResponse(
            {"error": "InvalidRequest", "field": ".".join(loc) or "body", "detail": first.get("msg", "invalid request"),
             "errors": [{"field": ".".join(str(p) for p in e.get("loc", ())), "detail": e.get("msg")} for e in errors[:20]]},
            status_code=422,
        )

    @app.middleware("http")
    async def _api_auth(request: Request, call_next):
        path = request.url.path
        if api_pairs and (path.startswith("/sdapi/") or path.startswith("/ext/") or path.startswith("/atelier/")
                          or path in ("/docs", "/openapi.json")):
            if not _basic_auth_ok(request.headers.get("authorization"), api_pairs):
                return JSONResponse({"error": "Unauthorized", "detail": "this API needs --api-auth credentials (HTTP Basic)"},
                                    status_code=401, headers={"WWW-Authenticate": "Basic"})
        return await call_next(request)

    @app.get("/atelier/health")
    def health():
        return {"ready": studio.ready.is_set(), "load_error": studio.load_error}

    from webui.api import routers

    for router in routers(studio):
        app.include_router(router)

    import gradio as gr

    from webui.ui import build_ui

    blocks = build_ui(studio)
    gradio_auth = parse_auth(studio.options.gradio_auth, "--gradio-auth") or None
    app = gr.mount_gradio_app(app, blocks, path="/", auth=gradio_auth, root_path=studio.options.root_path or None)
    return app


def serve(studio: Studio) -> None:
    import uvicorn

    if studio.options.exposed and not (studio.options.gradio_auth or studio.options.api_auth):
        log.warning("the studio is reachable by others (--listen/--share) and has no --gradio-auth/--api-auth: anyone can use it")
    app = create_app(studio)
    host = "0.0.0.0" if studio.options.listen else "127.0.0.1"
    config = uvicorn.Config(app, host=host, port=studio.options.port, log_level="warning",
                            root_path=studio.options.root_path or "")
    server = uvicorn.Server(config)

    def after_start():
        # Heavy imports and model loading start only once the port answers.
        while not server.started and not server.should_exit:
            threading.Event().wait(0.05)
        print(f"Running on local URL:  http://{'127.0.0.1' if host == '0.0.0.0' else host}:{studio.options.port}", flush=True)
        if studio.options.share:
            _start_share(studio)
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
        log.warning("--share: no public link could be made (%s); the local server keeps running", exc)
