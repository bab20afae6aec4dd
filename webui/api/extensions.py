"""REST for extensions: management under /atelier/extensions, and each extension's own
routes under /ext/<name>/.

The /ext mount is a small dispatcher that rebuilds its table whenever an extension's
routes change (enable, disable, install), so no restart is needed. Each extension's
routes live in a FastAPI sub-application of their own: an endpoint that raises is
reported against its extension and answered with a JSON error, never taking the
server down.
"""
from __future__ import annotations

import logging
import threading
import traceback

from pydantic import BaseModel, Field

log = logging.getLogger("atelier.api.extensions")


class InstallBody(BaseModel):
    source: str = Field(..., description="a git URL, a local git repository or folder, or a .zip file")
    confirm_requirements: bool = Field(False, description="install the extension's pip requirements")


class UpdateBody(BaseModel):
    confirm_requirements: bool = False


def router(studio):
    from fastapi import APIRouter, Body

    r = APIRouter(tags=["extensions"])
    ext = studio.extensions

    @r.get("/atelier/extensions")
    def list_extensions() -> list[dict]:
        return ext.list()

    @r.get("/atelier/extensions/{name}")
    def describe(name: str) -> dict:
        return ext.describe(name)

    @r.post("/atelier/extensions/install")
    def install(body: InstallBody) -> dict:
        return ext.install(body.source, body.confirm_requirements)

    @r.post("/atelier/extensions/{name}/enable")
    def enable(name: str, body: UpdateBody | None = None) -> dict:
        """Enable (load) it; `{"confirm_requirements": true}` installs its missing pip requirements first."""
        return ext.enable(name, bool(body and body.confirm_requirements))

    @r.post("/atelier/extensions/{name}/disable")
    def disable(name: str) -> dict:
        return ext.disable(name)

    @r.post("/atelier/extensions/{name}/update")
    def update(name: str, body: UpdateBody | None = None) -> dict:
        return ext.update(name, bool(body and body.confirm_requirements))

    @r.delete("/atelier/extensions/{name}")
    def remove(name: str) -> dict:
        return ext.remove(name)

    @r.get("/atelier/extensions/{name}/settings")
    def get_settings(name: str) -> dict:
        return ext.get_settings(name)

    @r.post("/atelier/extensions/{name}/settings")
    def save_settings(name: str, values: dict = Body(...)) -> dict:
        return ext.save_settings(name, values)

    @r.get("/sdapi/v1/extensions", tags=["sdapi"])
    def a1111_extensions() -> list[dict]:
        """AUTOMATIC1111's listing shape, for clients that ask it."""
        out = []
        for e in ext.list():
            git = e["git"] or {}
            out.append({"name": e["name"], "remote": git.get("remote", ""), "branch": git.get("branch", ""),
                        "commit_hash": git.get("commit_hash", ""), "commit_date": git.get("commit_date", 0),
                        "version": e["version"], "enabled": e["enabled"]})
        return out

    r.mount("/ext", ExtensionRoutes(studio))
    return r


class ExtensionRoutes:
    """ASGI app mounted at /ext: /ext/<name>/<path> → that extension's sub-application."""

    def __init__(self, studio):
        self.studio = studio
        self._lock = threading.Lock()
        self._version = -1
        self._router = None

    def _current(self):
        from starlette.routing import Mount, Router

        routes = self.studio.extensions.routes
        with self._lock:
            if self._version != routes.version:
                version = routes.version
                mounts = [Mount(f"/{owner}", app=self._sub_app(owner, routes.list(owner))) for owner in routes.owners()]
                self._router = Router(routes=mounts, default=_not_found)
                self._version = version
            return self._router

    def _sub_app(self, owner: str, specs):
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse

        from modules.errors import AtelierError
        from webui.api.common import validation_response

        app = FastAPI(title=f"extension {owner}", docs_url=None, redoc_url=None, openapi_url=None)
        for spec in specs:
            try:
                app.add_api_route(spec.path, spec.endpoint, methods=list(spec.methods), summary=spec.summary or None)
            except Exception:  # a malformed endpoint is the extension's problem, not the server's
                self.studio.extensions.report_failure(owner, f"route {spec.path}", traceback.format_exc())

        @app.exception_handler(AtelierError)
        async def _atelier_error(request: Request, exc: AtelierError):
            return JSONResponse(exc.to_json(), status_code=exc.status)

        @app.exception_handler(RequestValidationError)
        async def _invalid(request: Request, exc: RequestValidationError):
            return validation_response(exc)

        @app.middleware("http")
        async def _isolate(request: Request, call_next):
            try:
                return await call_next(request)
            except Exception:
                self.studio.extensions.report_failure(owner, f"route {request.url.path}", traceback.format_exc())
                return JSONResponse({"error": "ExtensionFailed",
                                     "detail": f"the extension {owner} raised; see the Extensions tab"},
                                    status_code=500)

        return app

    async def __call__(self, scope, receive, send):
        await self._current()(scope, receive, send)


async def _not_found(scope, receive, send):
    from starlette.responses import JSONResponse

    path = scope.get("path", "")
    response = JSONResponse({"error": "NotFound", "field": "path",
                             "detail": f"{path} is not a route of an enabled extension"}, status_code=404)
    await response(scope, receive, send)
