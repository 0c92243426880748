"""The FastAPI application: routes, error shapes, body limits, security headers, the web client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from genos import __version__
from genos.api import display, errors, metrics, routes_account, routes_envs
from genos.api.service import Service

CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob:; "
    "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
DEFAULT_WEB = Path(__file__).resolve().parents[3] / "web" / "dist"


def create_app(
    service: Service,
    *,
    web_dir: Path | None = None,
    manage: bool = False,
    gateway_only: bool = False,
) -> FastAPI:
    """The application for one :class:`Service`.

    Args:
        service: what the routes stand on.
        web_dir: the built web client (default ``web/dist`` of the source tree);
            when it is missing, ``/`` says how to build it.
        manage: start and stop the service with the application (``genos serve``);
            tests that start the service themselves leave it False.
        gateway_only: only the display paths and health (``genos gateway``): no
            API, no web client, and the engine is never started (no reconcile).

    Returns:
        The application.
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage:
            await service.start(engine=not gateway_only)
        try:
            yield
        finally:
            if manage:
                await service.aclose()

    app = FastAPI(
        title="GenOS",
        version=__version__,
        description="Sandboxed Linux desktops from a sentence. See docs/api.md.",
        lifespan=lifespan,
    )
    app.state.service = service
    errors.install(app)
    modules = (
        (metrics, display) if gateway_only else (routes_account, routes_envs, metrics, display)
    )
    for module in modules:
        app.include_router(module.router)
    app.add_middleware(errors.BodyLimit)
    app.middleware("http")(_headers)
    if not gateway_only:
        _mount_web(app, web_dir or DEFAULT_WEB)
    return app


async def _headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.headers.get("content-type", "").startswith("text/html"):
        response.headers["Content-Security-Policy"] = CSP
    if request.url.path.startswith("/v1/"):
        response.headers.setdefault("Cache-Control", "no-store")
    else:  # the client's file names do not change between releases: always revalidate
        response.headers.setdefault("Cache-Control", "no-cache")
    return response


def _mount_web(app: FastAPI, web_dir: Path) -> None:
    if (web_dir / "index.html").is_file():
        app.mount("/", StaticFiles(directory=web_dir, html=True), name="web")
        return

    @app.get("/", include_in_schema=False)
    async def no_web() -> JSONResponse:
        message = f"the web client is not built ({web_dir}); run: bash web/build.sh"
        return JSONResponse({"error": {"code": "not_found", "message": message}}, status_code=404)
