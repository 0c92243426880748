"""A real ``genos serve`` (fake runtime): the CLI end to end, and schemathesis on its API."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.pki import make_pki

pytestmark = pytest.mark.server
BIN = Path(sys.executable).parent
PROMPT = "I need a Linux environment with Tor browser for secure browsing"


@dataclass
class Server:
    """A running server: its URL, data dir, admin token and process."""

    url: str
    root: Path
    token: str
    process: subprocess.Popen[bytes]

    def env(self, **extra: str) -> dict[str, str]:
        """Environment variables for a CLI talking to this server."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("GENOS_")}
        return base | {"GENOS_URL": self.url, "GENOS_DATA_DIR": str(self.root)} | extra


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    root: Path, *args: str, port: int | None = None, command: str = "serve",
    ca: Path | None = None,
) -> tuple[subprocess.Popen[bytes], str]:  # fmt: skip
    """Start ``genos serve`` (or ``genos gateway``) and wait until /readyz answers.

    With ``ca`` the server is HTTPS (``--tls-cert``/``--tls-key`` in ``args``)
    and is checked against that CA.
    """
    port = port or free_port()
    # A test run's node (GENOS_NODE) goes along: its servers keep to its run roots.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOS_") or k == "GENOS_NODE"}
    env["GENOS_DATA_DIR"] = str(root)
    with (root.parent / f"{command}-{port}.log").open("ab") as log:
        process = subprocess.Popen(
            [str(BIN / "genos"), command, "--port", str(port), *args],
            env=env, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
    url = f"{'https' if ca else 'http'}://127.0.0.1:{port}"
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else True
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"genos {command} exited {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1, verify=verify).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"genos {command} did not become ready in 60 s")


def display_token(url: str, token: str, env_id: str) -> str:
    """A control display token for ``env_id`` from the server at ``url``."""
    headers = {"Authorization": f"Bearer {token}"}
    grant = httpx.post(f"{url}/v1/environments/{env_id}/display-token", json={}, headers=headers)
    value: str = grant.json()["token"]
    return value


def running_desktop(url: str, token: str) -> str:
    """The id of a new running xterm desktop on the server at ``url``."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {"prompt": "a desktop with xterm", "wait": True}
    env = httpx.post(f"{url}/v1/environments", json=body, headers=headers, timeout=60).json()
    assert env["state"] == "running", env
    env_id: str = env["id"]
    return env_id


def native_hello(sock: socket.socket, env_id: str, token: str) -> bytes:
    """Send the native listener's token line; the first 12 bytes it answers (b"" if refused)."""
    sock.sendall(f"GENOS {env_id} {token}\n".encode())
    return sock.recv(12)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL, the server we started."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``genos serve --driver fake`` on a free loopback port."""
    root = tmp_path_factory.mktemp("serve") / "data"
    # Room for every environment the tests leave running (nothing queues).
    process, url = start_server(root, "--driver", "fake", "--cpus", "64", "--memory-mb", "262144")
    token = (root / "api" / "admin.token").read_text().strip()
    try:
        yield Server(url, root, token, process)
    finally:
        stop(process)


def genos(server: Server, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI against the server."""
    return subprocess.run(
        [str(BIN / "genos"), *args], env=server.env(**env), capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr or result.stdout[-2000:]
    return json.loads(result.stdout)


def test_first_start_prints_the_admin_token_once(server: Server, tmp_path: Path) -> None:
    """The first start announces the token on stderr; it is stored 0600 and works."""
    log = (server.root.parent / f"serve-{server.url.rsplit(':', 1)[1]}.log").read_text()
    assert log.count(server.token) == 1
    assert (server.root / "api" / "admin.token").stat().st_mode & 0o777 == 0o600
    response = httpx.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {server.token}"})
    assert response.json()["name"] == "admin"


def test_up_ls_show_suspend_resume_rm(server: Server) -> None:
    """The CLI round: up waits for running; all print JSON with id, state, url and spec."""
    env = as_json(genos(server, "up", PROMPT, "--json"))
    assert env["state"] == "running"
    assert env["url"] == f"{server.url}/#/env/{env['id']}"
    assert env["login_url"].startswith(f"{env['url']}?login=")
    assert env["spec"]["network"]["mode"] == "tor"
    listed = as_json(genos(server, "ls", "--json"))
    assert env["id"] in [e["id"] for e in listed]
    assert {"id", "state", "url", "spec"} <= set(listed[0])
    shown = as_json(genos(server, "show", env["id"], "--json"))
    assert shown["usage"]["pids"] == 1
    assert as_json(genos(server, "suspend", env["id"], "--json"))["state"] == "suspended"
    assert as_json(genos(server, "resume", env["id"], "--json"))["state"] == "running"
    assert as_json(genos(server, "rm", env["id"], "--json"))["state"] == "terminated"
    events = genos(server, "events", env["id"], "--json")
    states = [json.loads(line)["state"] for line in events.stdout.splitlines()]
    assert states[0] == "requested"
    assert states[-1] == "terminated"
    assert "suspended" in states


def test_up_human_output_prints_the_url(server: Server) -> None:
    """Without --json, up prints where the desktop opens."""
    result = genos(server, "up", "a desktop with xterm")
    assert result.returncode == 0, result.stderr
    assert "is running" in result.stdout
    assert f"Open the desktop: {server.url}/#/env/" in result.stdout


def test_up_no_wait_and_spec_file(server: Server, tmp_path: Path) -> None:
    """up -f reads a spec file; --no-wait returns before running."""
    spec = tmp_path / "desk.yaml"
    spec.write_text("apiVersion: genos/v1\nkind: Environment\nname: from-file\n")
    env = as_json(genos(server, "up", "-f", str(spec), "--no-wait", "--json"))
    assert env["spec"]["name"] == "from-file"
    assert env["state"] in {"requested", "provisioning", "running"}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["up", "I want a browser"], 3, "Answer with --answer"),
        (["up", "give me root on the host machine"], 4, "refused:"),
        (["up"], 2, "give a prompt or -f"),
        (["up", "-f", "/nonexistent.yaml"], 2, "cannot read"),
        (["show", "0123456789"], 1, "no environment"),
        (["suspend", "nope"], 1, "no environment"),
        (["ls", "--state", "dancing"], 2, "state"),
    ],
)
def test_cli_failures_are_one_line_with_exit_codes(
    server: Server, args: list[str], code: int, message: str
) -> None:
    """Every failure is a short message on stderr and a documented exit code, no traceback."""
    result = genos(server, *args)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_token_and_unreachable_server(server: Server) -> None:
    """A wrong GENOS_TOKEN and a dead GENOS_URL fail with one line and exit 1."""
    bad = genos(server, "ls", GENOS_TOKEN="genos_000000000000_nope")
    assert bad.returncode == 1
    assert bad.stderr.strip() == "genos: a bearer token is required" or "not valid" in bad.stderr
    dead = genos(server, "ls", GENOS_URL=f"http://127.0.0.1:{free_port()}")
    assert dead.returncode == 1
    assert dead.stderr.startswith("genos: cannot reach the GenOS server")
    assert len(dead.stderr.strip().splitlines()) == 1


def test_host_json(server: Server) -> None:
    """genos host --json has capacity, use, the queue and the runtimes."""
    host = as_json(genos(server, "host", "--json"))
    assert set(host) >= {"host", "capacity", "used", "free", "queue", "runtimes", "accelerator"}
    assert host["runtimes"] == ["fake"]


def test_openapi_is_published(server: Server) -> None:
    """/openapi.json lists every route of docs/api.md."""
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    for path in [
        "/v1/compose", "/v1/environments", "/v1/environments/{env_id}",
        "/v1/environments/{env_id}/events", "/v1/environments/{env_id}/suspend",
        "/v1/host", "/v1/login", "/healthz", "/readyz", "/metrics",
        "/v1/environments/{env_id}/computer/screenshot",
        "/v1/environments/{env_id}/computer/type", "/v1/environments/{env_id}/computer/exec",
        "/v1/environments/{env_id}/computer/lease",
    ]:  # fmt: skip
        assert path in paths


@pytest.mark.skipif(shutil.which("schemathesis", path=str(BIN)) is None, reason="no schemathesis")
def test_schemathesis_finds_no_5xx_and_no_auth_bypass(tmp_path: Path) -> None:
    """schemathesis fuzzes every operation: no 5xx, and nothing answers without auth."""
    # A fresh server: with free capacity, generated ``wait: true`` requests return promptly.
    root = tmp_path / "data"
    process, url = start_server(root, "--driver", "fake")
    token = (root / "api" / "admin.token").read_text().strip()
    try:
        result = _schemathesis(url, token, tmp_path)
    finally:
        stop(process)
    tail = result.stdout[-3000:]
    assert result.returncode == 0, tail
    assert "passed" in tail


def _schemathesis(url: str, token: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BIN / "schemathesis"), "run", f"{url}/openapi.json",
            "-H", f"Authorization: Bearer {token}",
            "--exclude-path", "/v1/logout",
            # Long polls answer when something happens or their timeout (up to 60-600 s)
            # passes: past the fuzzer's 10 s read timeout by design.
            "--exclude-path", "/v1/environments/{env_id}/computer/wait",
            "--exclude-path", "/v1/environments/{env_id}/computer/lease",
            "--exclude-path", "/v1/environments/{env_id}/computer/approvals",
            "--checks", "not_a_server_error,ignored_auth",
            "-n", "12", "--phases", "coverage,fuzzing", "--generation-database", "none",
            "--seed", "1",
        ],
        capture_output=True, text=True, timeout=900, check=False, cwd=cwd,
    )  # fmt: skip


@contextlib.contextmanager
def connected(server: Server, env_id: str, *flags: str) -> Iterator[dict[str, Any]]:
    """``genos connect ID --json [flags]`` running; yields what it announced."""
    proc = subprocess.Popen(
        [str(BIN / "genos"), "connect", env_id, "--json", *flags], env=server.env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        announced: dict[str, Any] = json.loads(proc.stdout.readline())
        yield announced
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def rfb_size(port: int) -> tuple[int, int]:
    """Complete RFB 3.8 (security None) on a local port; the framebuffer size."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert sock.recv(12) == b"RFB 003.008\n"
        sock.sendall(b"RFB 003.008\n")
        assert sock.recv(2) == b"\x01\x01"
        sock.sendall(b"\x01")
        assert sock.recv(4) == b"\x00\x00\x00\x00"
        sock.sendall(b"\x01")
        init = b""
        while len(init) < 4:
            init += sock.recv(4 - len(init))
    return int.from_bytes(init[:2], "big"), int.from_bytes(init[2:], "big")


def test_connect_opens_a_local_port_that_speaks_rfb(server: Server) -> None:
    """genos connect --json prints the port; a native client there completes RFB."""
    env = as_json(genos(server, "up", "a desktop with xterm", "--json"))
    with connected(server, env["id"]) as announced:
        assert announced["protocol"] == "vnc"
        assert rfb_size(announced["port"]) == (1280, 800)


def test_connect_to_an_unknown_environment_fails_cleanly(server: Server) -> None:
    """genos connect to a missing environment exits 1 with one line."""
    result = genos(server, "connect", "0123456789", "--json")
    assert result.returncode == 1
    assert result.stderr.strip() == "genos: no environment named '0123456789'"


def test_serve_on_a_busy_port_fails_in_one_line(tmp_path: Path) -> None:
    """genos serve on a port someone holds exits 2 with one line, before creating anything."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENOS_")}
        env["GENOS_DATA_DIR"] = str(tmp_path / "data")
        result = subprocess.run(
            [str(BIN / "genos"), "serve", "--driver", "fake", "--port", str(port)],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr.strip() == f"genos: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert not (tmp_path / "data" / "api" / "admin.token").exists()


def test_native_vnc_listener_takes_a_token_line_then_rfb(tmp_path: Path) -> None:
    """With --vnc-port, a viewer sends GENOS <id> <token> and gets RFB; a bad token gets nothing."""
    vnc_port = free_port()
    root = tmp_path / "data"
    process, url = start_server(root, "--driver", "fake", "--vnc-port", str(vnc_port))
    admin = (root / "api" / "admin.token").read_text().strip()
    try:
        env_id = running_desktop(url, admin)
        token = display_token(url, admin, env_id)
        with socket.create_connection(("127.0.0.1", vnc_port), timeout=10) as sock:
            assert native_hello(sock, env_id, token) == b"RFB 003.008\n"
        with socket.create_connection(("127.0.0.1", vnc_port), timeout=10) as sock:
            assert native_hello(sock, env_id, token[:-4] + "AAAA") == b""  # before any RFB byte
    finally:
        stop(process)


def test_native_vnc_listener_speaks_tls(tmp_path: Path) -> None:
    """With --tls-cert/--tls-key the native listener is TLS too; the token line and RFB run
    inside, verified against the private CA."""
    pki = make_pki(tmp_path / "pki")
    vnc_port = free_port()
    root = tmp_path / "data"
    tls = ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]
    process, url = start_server(
        root, "--driver", "fake", "--vnc-port", str(vnc_port), *tls, ca=pki.ca
    )
    admin = (root / "api" / "admin.token").read_text().strip()
    try:
        with httpx.Client(verify=ssl.create_default_context(cafile=str(pki.ca))) as https:
            headers = {"Authorization": f"Bearer {admin}"}
            body = {"prompt": "a desktop with xterm", "wait": True}
            env = https.post(f"{url}/v1/environments", json=body, headers=headers, timeout=60)
            env_id = env.json()["id"]
            grant = https.post(f"{url}/v1/environments/{env_id}/display-token", json={},
                               headers=headers)  # fmt: skip
            token = grant.json()["token"]
        context = ssl.create_default_context(cafile=str(pki.ca))
        with (
            socket.create_connection(("127.0.0.1", vnc_port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
        ):
            assert sock.version() is not None
            assert native_hello(sock, env_id, token) == b"RFB 003.008\n"
    finally:
        stop(process)
