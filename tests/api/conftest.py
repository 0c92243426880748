"""Fixtures for API tests: the FastAPI app in-process over a registry on each backend.

``api`` is an ``httpx.AsyncClient`` on the app (ASGI transport, no socket)
signed in as the bootstrapped admin; ``as_user`` makes clients for other
accounts. ``live`` runs the same app under uvicorn on a loopback port for
WebSocket tests.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from genos.api.app import create_app
from genos.api.service import Service
from genos.gateway.metrics import REGISTRY
from genos.gateway.tokens import MemoryRevocations, TokenAuthority
from genos.node.local import DemoDriver
from genos.orchestrator import Capacity, Engine, Registry

AsUser = Callable[..., Awaitable[httpx.AsyncClient]]


@dataclass
class Api:
    """The app under test and what it stands on."""

    app: FastAPI
    service: Service
    admin_token: str
    root: Path


@pytest.fixture
async def api_app(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """A started service (fake runtime with a real RFB display) and its app."""
    registry = await Registry.open(db_url)
    driver = DemoDriver(tmp_path / "displays")
    engine = Engine(registry, driver, Capacity(cpus=4, memory_mb=8192), host_name="test-host")
    gateway = TokenAuthority(secrets.token_bytes(32), revocations=MemoryRevocations())
    service = Service(engine, tmp_path / "data", gateway, public_url="http://genos.test")
    await service.start()
    token = await service.bootstrap_admin()
    assert token is not None
    try:
        yield Api(create_app(service, web_dir=tmp_path / "no-web"), service, token, tmp_path)
    finally:
        await service.aclose()
        await driver.aclose()
        await registry.aclose()


def client_for(app: FastAPI, token: str | None = None) -> httpx.AsyncClient:
    """An in-process client, with a bearer token if given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app=app, client=("127.0.0.9", 5555))
    return httpx.AsyncClient(transport=transport, base_url="http://genos.test", headers=headers)


@pytest.fixture
async def api(api_app: Api) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in as the admin."""
    async with client_for(api_app.app, api_app.admin_token) as client:
        yield client


@pytest.fixture
async def as_user(api_app: Api, api: httpx.AsyncClient) -> AsyncIterator[AsUser]:
    """Make a user (role ``user`` by default) and give a client signed in as them."""
    clients: list[httpx.AsyncClient] = []

    async def make(
        name: str, role: str = "user", password: str = "correct horse"
    ) -> httpx.AsyncClient:
        made = await api.post("/v1/users", json={"name": name, "password": password, "role": role})
        assert made.status_code == 201, made.text
        login = await api.post("/v1/login", json={"username": name, "password": password})
        client = client_for(api_app.app, login.json()["token"])
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.aclose()


@pytest.fixture
async def live(api_app: Api) -> AsyncIterator[str]:
    """The app served by uvicorn on 127.0.0.1 (a free port); yields its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        api_app.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        for _ in range(500):  # let viewers that just left finish closing their streams
            if REGISTRY.count() == 0:
                break
            await asyncio.sleep(0.01)
        server.should_exit = True
        await task
