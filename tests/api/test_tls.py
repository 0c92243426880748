"""The network edge: built-in HTTPS/WSS with a private CA, bad TLS options, trusted proxies."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from genos.api.app import create_app
from genos.audit import AuditLog
from tests.api.conftest import Api
from tests.api.pki import Pki, make_pki
from tests.api.test_server import BIN, free_port, start_server, stop

RFB_BANNER = b"RFB 003.008\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A private CA and a server certificate for 127.0.0.1 signed by it."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def https_server(
    pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, Path]]:
    """``genos serve --driver fake --tls-cert --tls-key --trusted-proxy 127.0.0.1`` on a
    loopback port: URL, admin token, data dir."""
    root = tmp_path_factory.mktemp("https") / "data"
    tls = ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]
    proxy = ["--trusted-proxy", "127.0.0.1"]  # the tests' requests play the proxy
    process, url = start_server(root, "--driver", "fake", *tls, *proxy, ca=pki.ca)
    try:
        yield url, (root / "api" / "admin.token").read_text().strip(), root
    finally:
        stop(process)


def cli_env(url: str, token: str, **extra: str) -> dict[str, str]:
    """The environment of a CLI talking to ``url`` (no GENOS_* of the test run's own)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GENOS_")}
    return base | {"GENOS_URL": url, "GENOS_TOKEN": token} | extra


def genos(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion."""
    return subprocess.run([str(BIN / "genos"), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


@pytest.mark.server
def test_https_answers_only_clients_that_trust_the_ca(
    https_server: tuple[str, str, Path], pki: Pki
) -> None:
    """The API is HTTPS with the given certificate: the CLI trusts it through GENOS_CA, refuses
    it without (one line naming GENOS_CA, exit 1), and plain HTTP gets no answer."""
    url, token, _root = https_server
    assert url.startswith("https://127.0.0.1:")
    trusted = genos("ls", "--json", env=cli_env(url, token, GENOS_CA=str(pki.ca)))
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout) == []
    untrusted = genos("ls", "--json", env=cli_env(url, token))
    assert untrusted.returncode == 1
    assert len(untrusted.stderr.strip().splitlines()) == 1
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    assert "GENOS_CA" in untrusted.stderr
    bad_ca = genos("ls", env=cli_env(url, token, GENOS_CA=str(pki.key.parent / "missing.pem")))
    assert bad_ca.returncode == 2
    assert bad_ca.stderr.strip().splitlines() == [bad_ca.stderr.strip()]
    assert "GENOS_CA" in bad_ca.stderr
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https://", "http://") + "/readyz", timeout=5)
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as raw:
        context = ssl.create_default_context(cafile=str(pki.ca))
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            peer = tls.getpeercert()
    assert peer is not None
    assert ("IP Address", "127.0.0.1") in peer["subjectAltName"]


@pytest.mark.server
def test_genos_connect_reaches_a_desktop_over_wss(
    https_server: tuple[str, str, Path], pki: Pki
) -> None:
    """``genos connect`` trusts the private CA and bridges a viewer over WSS: the RFB banner
    arrives on its local port."""
    url, token, _root = https_server
    context = ssl.create_default_context(cafile=str(pki.ca))
    headers = {"Authorization": f"Bearer {token}"}
    body = {"prompt": "a desktop with xterm", "wait": True}
    with httpx.Client(verify=context, headers=headers, timeout=60) as https:
        env = https.post(f"{url}/v1/environments", json=body).json()
    assert env["state"] == "running", env
    with subprocess.Popen(
        [str(BIN / "genos"), "connect", env["id"], "--json"],
        env=cli_env(url, token, GENOS_CA=str(pki.ca)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    ) as bridge:  # fmt: skip
        try:
            assert bridge.stdout is not None
            port = json.loads(bridge.stdout.readline())["port"]
            with socket.create_connection(("127.0.0.1", port), timeout=10) as viewer:
                viewer.settimeout(10)
                assert viewer.recv(12) == RFB_BANNER
        finally:
            bridge.send_signal(signal.SIGINT)
            try:
                bridge.wait(timeout=10)
            except subprocess.TimeoutExpired:
                bridge.kill()
                bridge.wait()


@pytest.mark.server
def test_a_wss_display_connection_verifies_against_the_ca(
    https_server: tuple[str, str, Path], pki: Pki
) -> None:
    """A WebSocket client speaking TLS to the display path gets the RFB banner (WSS)."""
    from websockets.sync.client import connect  # noqa: PLC0415 - this test only

    url, token, _root = https_server
    context = ssl.create_default_context(cafile=str(pki.ca))
    headers = {"Authorization": f"Bearer {token}"}
    body = {"prompt": "a desktop with xterm", "wait": True}
    with httpx.Client(verify=context, headers=headers, timeout=60) as https:
        env = https.post(f"{url}/v1/environments", json=body).json()
        grant = https.post(f"{url}/v1/environments/{env['id']}/display-token", json={}).json()
    wss = "wss://" + url.removeprefix("https://") + grant["websocket"]
    got: list[bytes | str | BaseException] = []

    def banner() -> None:
        try:
            with connect(wss, ssl=context, subprotocols=["binary"], open_timeout=10) as ws:  # type: ignore[list-item]
                got.append(ws.recv(timeout=10))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            got.append(exc)

    # websockets' sync client, on a failed TLS handshake, joins a reader thread that a closed
    # TLS socket does not wake: run it aside so a failure fails the test instead of hanging the
    # suite (the fixture's server stop then ends that thread).
    worker = threading.Thread(target=banner, daemon=True)
    worker.start()
    worker.join(40)
    assert got, "no answer to the WSS handshake in 40 s"
    first = got[0]
    assert isinstance(first, bytes), repr(first)
    assert first[:12] == RFB_BANNER


@pytest.mark.server
def test_a_real_server_throttles_the_forwarded_client_with_429(
    https_server: tuple[str, str, Path], pki: Pki
) -> None:
    """Over HTTPS, wrong passwords forwarded for one client by the trusted proxy get 401s, then
    429 with Retry-After; the audit log names the forwarded client; another client gets 429
    for that name but 401 for another."""
    url, _token, root = https_server
    wrong = {"username": "ghost", "password": "not it"}
    context = ssl.create_default_context(cafile=str(pki.ca))
    with httpx.Client(verify=context, timeout=30) as https:
        forwarded = {"X-Forwarded-For": "198.51.100.9"}
        answers = [https.post(f"{url}/v1/login", json=wrong, headers=forwarded) for _ in range(4)]
        elsewhere = {"X-Forwarded-For": "198.51.100.10"}
        same_name = https.post(f"{url}/v1/login", json=wrong, headers=elsewhere)
        other_name = https.post(f"{url}/v1/login", json=wrong | {"username": "casper"},
                                headers=elsewhere)  # fmt: skip
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    assert answers[3].headers["retry-after"] == "1"
    assert answers[3].json()["error"]["code"] == "too_many_attempts"
    assert same_name.status_code == 429  # the name is throttled whoever tries it
    assert other_name.status_code == 401  # that client's address is not
    denied = [r["client"] for r in AuditLog(root / "audit" / "api.jsonl").records()
              if r.get("user") == "ghost" and r.get("outcome") == "denied"]  # fmt: skip
    assert denied == ["198.51.100.9"] * 3


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ("cert only", "TLS needs both --tls-cert and --tls-key"),
        ("missing cert", "cannot read --tls-cert"),
        ("key is a directory", "cannot read --tls-key"),
        ("mismatched key", "the key does not match the certificate"),
        ("not PEM", "not a PEM certificate"),
        ("bad proxy", "--trusted-proxy: not an address or network: 'proxy.example'"),
    ],
)
def test_bad_edge_options_are_one_line_errors(
    option: str, says: str, pki: Pki, tmp_path: Path
) -> None:
    """Each bad TLS or proxy option stops ``genos serve`` at once with one line and exit 2."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    args = {
        "cert only": ["--tls-cert", str(pki.cert)],
        "missing cert": ["--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(pki.key)],
        "key is a directory": ["--tls-cert", str(pki.cert), "--tls-key", str(tmp_path)],
        "mismatched key": ["--tls-cert", str(pki.cert), "--tls-key", str(pki.stray_key)],
        "not PEM": ["--tls-cert", str(junk), "--tls-key", str(junk)],
        "bad proxy": ["--trusted-proxy", "proxy.example"],
    }[option]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOS_")}
    env["GENOS_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [str(BIN / "genos"), "serve", "--driver", "fake", "--port", str(free_port()), *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert says in done.stderr


@pytest.mark.anyio
async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(api_app: Api) -> None:
    """Through a trusted proxy, the right-most untrusted X-Forwarded-For entry is the client that
    audit and throttling see; from anyone else the header is ignored."""
    app = create_app(api_app.service, web_dir=api_app.root / "no-web",
                     trusted_proxies=["10.1.0.0/16"])  # fmt: skip
    wrong = {"username": "admin", "password": "not the password"}
    spoofed = {"X-Forwarded-For": "203.0.113.66, 198.51.100.7, 10.1.9.9"}
    for peer in ("10.1.2.3", "192.0.2.99"):
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://genos.test") as client:
            answer = await client.post("/v1/login", json=wrong, headers=spoofed)
            assert answer.status_code == 401
    audit = AuditLog(api_app.service.root / "audit" / "api.jsonl")
    denied = [r["client"] for r in audit.records() if r.get("outcome") == "denied"]
    assert denied == ["198.51.100.7", "192.0.2.99"]
    signins = api_app.service.signins
    assert await signins.failures("client:198.51.100.7") == 1
    assert await signins.failures("client:10.1.2.3") == 0
    assert await signins.failures("client:203.0.113.66") == 0
