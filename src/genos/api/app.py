"""The FastAPI application: routes, error shapes, body limits, security headers, the web client."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genos import __version__
from genos.api import (
    audio,
    display,
    errors,
    metrics,
    routes_account,
    routes_approvals,
    routes_computer,
    routes_desktop,
    routes_envs,
    routes_files,
    routes_nodes,
    routes_pools,
    routes_record,
    video,
)
from genos.api.proxy import ForwardedFor
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
    trusted_proxies: Sequence[str] = (),
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
        trusted_proxies: addresses or networks of reverse proxies whose
            ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed
            (:class:`genos.api.proxy.ForwardedFor`); nobody else's are.

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
    modules: tuple[ModuleType, ...] = (
        (metrics, display)
        if gateway_only
        else (
            routes_account,
            routes_envs,
            routes_computer,
            routes_files,
            routes_record,
            routes_approvals,
            routes_pools,
            routes_nodes,
            metrics,
            display,
        )
    )
    modules += (audio, video) if gateway_only else (routes_desktop, audio, video)
    for module in modules:
        app.include_router(module.router)
    app.add_middleware(errors.BodyLimit, exempt=routes_desktop.is_upload)
    app.add_middleware(SecurityHeaders)
    if trusted_proxies:
        app.add_middleware(ForwardedFor, trusted=trusted_proxies)
    if not gateway_only:
        _mount_web(app, web_dir or DEFAULT_WEB)
    return app


class SecurityHeaders:
    """ASGI middleware: nosniff, no referrer, the CSP on HTML, and caching rules
    (API answers are never stored; the web client always revalidates). Plain
    ASGI, so a request costs a header edit, not a task and a stream.

    API answers also carry ``Server-Timing: app;dur=<ms>`` (W3C Server
    Timing): how long this process took from the request to the answer's
    first byte, so clients and benchmarks tell the server's time from the
    network's."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = str(scope.get("path", "")).startswith("/v1/")
        began = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if api:
                    took = (time.perf_counter() - began) * 1000
                    headers["Server-Timing"] = f"app;dur={took:.2f}"
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if headers.get("content-type", "").startswith("text/html"):
                    headers["Content-Security-Policy"] = CSP
                headers.setdefault("Cache-Control", "no-store" if api else "no-cache")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _mount_web(app: FastAPI, web_dir: Path) -> None:
    if (web_dir / "index.html").is_file():
        app.mount("/", StaticFiles(directory=web_dir, html=True), name="web")
        return

    @app.get("/", include_in_schema=False)
    async def no_web() -> JSONResponse:
        message = f"the web client is not built ({web_dir}); run: bash web/build.sh"
        return JSONResponse({"error": {"code": "not_found", "message": message}}, status_code=404)
