"""Fixtures for the browser tests: a real ``genos serve`` and Debian's chromium.

The server runs as a subprocess on a free loopback port with a throwaway
``GENOS_DATA_DIR`` and the fake driver (an in-process RFB display per
environment). Chromium is ``/usr/bin/chromium`` (or ``$GENOS_CHROMIUM``),
driven headless by Playwright; nothing is downloaded. Screenshots go to
``$GENOS_ARTIFACTS/web`` (default ``/tmp/genos-artifacts/web``).
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import struct
import subprocess
import tempfile
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import sync_playwright

from genos.api.security import totp
from genos.runtime.images import ImageStore, Layer
from tests.api.test_server import start_server, stop

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
CHROMIUM = os.environ.get("GENOS_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("GENOS_ARTIFACTS", "/tmp/genos-artifacts")) / "web"
PASSWORD = "correct horse battery staple"
TONE_HZ = 440.0  # what the browser's fake microphone plays
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "is_mobile": True,
    "has_touch": True,
}


@dataclass
class Server:
    """A running ``genos serve``."""

    url: str
    admin_token: str
    data_dir: Path
    process: subprocess.Popen[bytes]

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client for the API, as the admin unless another token is given."""
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            timeout=30,
        )


@dataclass
class User:
    name: str
    password: str
    token: str
    id: str


@pytest.fixture(scope="session")
def web_dist() -> Path:
    """The built web client (``bash web/build.sh`` when it is missing)."""
    dist = WEB / "dist"
    if not (dist / "index.html").is_file():
        subprocess.run(["bash", str(WEB / "build.sh")], check=True)
    return dist


def _serve(top: Path, *args: str, artifact: str) -> Iterator[Server]:
    """Run ``genos serve`` (tests/api's helper) with its data dir under ``top``."""
    data = top / "data"
    process, url = start_server(data, *args)
    try:
        yield Server(url, (data / "api" / "admin.token").read_text().strip(), data, process)
    finally:
        stop(process)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(top / f"serve-{url.rsplit(':', 1)[1]}.log", ARTIFACTS / artifact)


@pytest.fixture(scope="session")
def server(web_dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A ``genos serve --driver fake`` on a free loopback port, for the whole session."""
    # Generous capacity, so environments left running by one test never queue the next.
    fake = ["--driver", "fake", "--cpus", "64", "--memory-mb", "262144"]
    yield from _serve(tmp_path_factory.mktemp("genos-web"), *fake, artifact="serve.log")


def new_user(server: Server) -> User:
    """Make a user with a password on ``server`` and sign it in (for its API token)."""
    name = f"u{secrets.token_hex(4)}"
    with server.client() as api:
        made = api.post("/v1/users", json={"name": name, "password": PASSWORD, "role": "user"})
        assert made.status_code == 201, made.text
        login = api.post("/v1/login", json={"username": name, "password": PASSWORD})
        assert login.status_code == 200, login.text
    return User(name, PASSWORD, login.json()["token"], made.json()["id"])


@pytest.fixture
def user(server: Server) -> User:
    """A fresh user with a password (and its API token from signing in)."""
    return new_user(server)


def totp_now(secret: str, at: float | None = None) -> str:
    """The current RFC 6238 code of a base32 secret."""
    return totp(secret, time.time() if at is None else at)


def tone_wav(path: Path, hz: float = TONE_HZ, seconds: float = 2.0, rate: int = 48000) -> Path:
    """A WAV file of a sine at half scale (16-bit mono): the browser's fake microphone."""
    frames = b"".join(
        struct.pack("<h", int(16383 * math.sin(2 * math.pi * hz * n / rate)))
        for n in range(int(seconds * rate))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return path


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's chromium, headless, through Playwright (no browser download). Its microphone
    is a fake that plays a 440 Hz tone and is allowed without a prompt."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no chromium at {CHROMIUM}: apt-get install chromium (or set GENOS_CHROMIUM)")
    wav = tone_wav(tmp_path_factory.mktemp("microphone") / "tone.wav")
    args = ["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}"]  # fmt: skip
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield browser
        browser.close()


class PageProblems(list[str]):
    """Uncaught page errors and CSP violations seen by a page."""


def _watch(page: Any, problems: PageProblems) -> None:
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def console(msg: Any) -> None:
        if msg.type == "error" and "Content Security Policy" in msg.text:
            problems.append(f"CSP: {msg.text}")

    page.on("console", console)


@pytest.fixture
def open_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """`open_page(**context_options)` -> a page; page errors or CSP violations fail the test."""
    contexts: list[Any] = []
    problems = PageProblems()

    def make(**options: Any) -> Any:
        context = browser.new_context(**options)
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        _watch(page, problems)
        return page

    yield make
    for i, context in enumerate(contexts):
        for j, page in enumerate(context.pages):
            shot(page, f"{request.node.name}-end-{i}-{j}")
        context.close()
    assert list(problems) == []


def shot(page: Any, name: str) -> Path:
    """Save a screenshot under $GENOS_ARTIFACTS/web and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


@pytest.fixture(scope="module")
def oci_server(web_dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A ``genos serve --driver oci`` (real runc environments) for one module."""
    # Share the test session's layer store (tests/conftest.py): a rerun builds nothing.
    images = Path(os.environ.get("GENOS_TEST_CACHE", "/var/cache/genos-test")) / "images"
    real = ["--driver", "oci", "--images-dir", str(images)]
    for server in _serve(tmp_path_factory.mktemp("genos-oci"), *real, artifact="serve-oci.log"):
        yield server
        _terminate_all(server)


def _terminate_all(server: Server) -> None:
    """End every environment (real containers must not outlive the test server)."""
    with server.client() as api:
        items = api.get("/v1/environments", params={"all": "true", "limit": 100}).json()["items"]
        live = [e["id"] for e in items if e["state"] not in ("terminated", "failed")]
        for env_id in live:
            api.delete(f"/v1/environments/{env_id}")
        deadline = time.monotonic() + 60
        while live and time.monotonic() < deadline:
            states = {
                e["id"]: e["state"]
                for e in api.get("/v1/environments", params={"all": "true", "limit": 100}).json()[
                    "items"
                ]
            }
            live = [i for i in live if states.get(i) not in ("terminated", "failed")]
            time.sleep(0.2)


@pytest.fixture
def user_oci(oci_server: Server) -> User:
    """A fresh user on the oci server."""
    return new_user(oci_server)


@pytest.fixture(scope="module")
def vm_server(
    web_dist: Path, image_store: ImageStore, desktop_layers: list[Layer]
) -> Iterator[Server]:
    """A ``genos serve --driver oci`` that also runs VMs (QEMU), for one module."""
    # Under /var/tmp: QEMU's own user must traverse every parent (pytest's are 0700).
    top = Path(tempfile.mkdtemp(prefix="genos-web-vm-", dir="/var/tmp"))
    top.chmod(0o711)
    real = ["--driver", "oci", "--cpus", "2", "--memory-mb", "4096"]
    try:
        for server in _serve(top, *real, "--images-dir", str(image_store.root),
                             artifact="serve-vm.log"):  # fmt: skip
            yield server
            _terminate_all(server)
    finally:
        shutil.rmtree(top, ignore_errors=True)
