"""``genos up`` never hangs: queue position, events, timeout, Ctrl-C, against a real server.

The server is ``genos serve --driver fake`` with room for exactly one xterm
desktop (512 MB; such a desktop requests 320), so a second request waits in the queue.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from tests.api.test_server import BIN, Server, as_json, genos, start_server, stop

pytestmark = pytest.mark.server
DESKTOP = "a desktop with xterm"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``genos serve --driver fake`` with room for one xterm desktop."""
    root = tmp_path_factory.mktemp("small") / "data"
    process, url = start_server(root, "--driver", "fake", "--cpus", "1", "--memory-mb", "512")
    token = (root / "api" / "admin.token").read_text().strip()
    try:
        yield Server(url, root, token, process)
    finally:
        stop(process)


def api(server: Server, method: str, path: str, body: Any = None) -> Any:
    """One API call as the admin; the JSON answer."""
    headers = {"Authorization": f"Bearer {server.token}"}
    response = httpx.request(method, f"{server.url}{path}", json=body, headers=headers, timeout=30)
    assert response.is_success, response.text
    return response.json()


@pytest.fixture
def clean(small: Server) -> Iterator[Server]:
    """The small server; every environment the test leaves is ended after it."""
    try:
        yield small
    finally:
        for env in api(small, "GET", "/v1/environments?limit=1000")["items"]:
            if env["state"] not in {"terminated", "failed"}:
                api(small, "DELETE", f"/v1/environments/{env['id']}")


@pytest.fixture
def full(clean: Server) -> str:
    """The small server with its one desktop running (the id)."""
    blocker = api(clean, "POST", "/v1/environments", {"prompt": DESKTOP, "wait": True})
    assert blocker["state"] == "running", blocker
    env_id: str = blocker["id"]
    return env_id


class Lines:
    """The lines a process writes to one of its pipes, read on a thread (reads time out)."""

    def __init__(self, pipe: IO[str] | None) -> None:
        assert pipe is not None
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe: IO[str]) -> None:
        try:
            for line in pipe:
                self._lines.put(line.rstrip("\n"))
        except (ValueError, OSError):
            pass  # the test closed the pipe: nothing more to read
        finally:
            self._lines.put(None)

    def until(self, text: str, timeout: float = 30.0) -> str:
        """The first line from now on that contains ``text``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} in {timeout}s; saw {self.seen}")

    def rest(self, timeout: float = 30.0) -> list[str]:
        """Every line until the pipe closes."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            line = self._lines.get(timeout=left)
            if line is None:
                return self.seen
            self.seen.append(line)
        raise AssertionError(f"the pipe stayed open {timeout}s; saw {self.seen}")


@contextlib.contextmanager
def launched(server: Server, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``genos up`` running in the background, its pipes open; killed if still running after.

    It gets Ctrl-C as a person's terminal gives it: a test run that is itself a
    background job of a non-interactive shell ignores SIGINT, and a child
    would inherit that (a handler, unlike SIG_IGN, does not survive exec).
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    proc = subprocess.Popen(
        [str(BIN / "genos"), "up", *args], env=server.env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    with proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def state_of(server: Server, env_id: str) -> str:
    state: str = api(server, "GET", f"/v1/environments/{env_id}")["state"]
    return state


def test_up_events_show_queue_moves_then_the_environment(small: Server, full: str) -> None:
    """--json --events: server events and queue moves as JSON lines, the environment last."""
    with launched(small, DESKTOP, "--json", "--events") as second:
        second_out = Lines(second.stdout)
        second_out.until('"type":"queue"')
        with launched(small, DESKTOP, "--json", "--events") as third:
            third_out = Lines(third.stdout)
            third_out.until('"position":2')
            api(small, "DELETE", f"/v1/environments/{full}")  # the second starts, the third moves
            second_lines = [json.loads(line) for line in second_out.rest()]
            assert second.wait(timeout=30) == 0
            third_out.until('"position":1')
            api(small, "DELETE", f"/v1/environments/{second_lines[-1]['id']}")
            third_lines = [json.loads(line) for line in third_out.rest()]
            assert third.wait(timeout=30) == 0

    env = third_lines[-1]
    assert env["state"] == "running"
    assert env["login_url"].startswith(f"{env['url']}?login=")
    events = third_lines[:-1]
    moves = [e for e in events if e["type"] == "queue"]
    assert moves == [
        {"type": "queue", "env_id": env["id"], "position": 2},
        {"type": "queue", "env_id": env["id"], "position": 1},
    ]
    states = [e["state"] for e in events if e["type"] == "state"]
    assert states == ["requested", "queued", "provisioning", "running"]
    assert [e["seq"] for e in events if "seq" in e] == list(range(1, len(events) - 1))
    assert events.index(moves[0]) > events.index(next(e for e in events if e["state"] == "queued"))
    assert [e for e in second_lines[:-1] if e["type"] == "queue"] == [
        {"type": "queue", "env_id": second_lines[-1]["id"], "position": 1}
    ]


def test_up_timeout_while_queued_cancels_and_exits_1(small: Server, full: str) -> None:
    """At --timeout a queued request is cancelled, with one line on stderr and exit 1."""
    started = time.monotonic()
    result = genos(small, "up", DESKTOP, "--timeout", "2")
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    *progress, last = result.stderr.splitlines()
    env_id = progress[0].split(":")[0]
    assert progress == [
        f"{env_id}: requested",
        f"{env_id}: queued: waiting for capacity (0.05 cpus, 320 MB)",
        f"{env_id}: waiting in the queue, position 1",
    ]
    assert last == (
        f"genos: timed out after 2s: {env_id} was queued at position 1; cancelled it"
        " (--no-wait leaves it waiting)"
    )
    assert 2 <= took < 12
    assert state_of(small, env_id) == "terminated"


def test_up_on_a_terminal_shows_the_queue_on_its_progress_bar(small: Server, full: str) -> None:
    """On a terminal, up's progress bar says where it waits; the message stays after it."""
    master, slave = pty.openpty()
    env = small.env(COLUMNS="160", TERM="xterm")
    with subprocess.Popen(
        [str(BIN / "genos"), "up", DESKTOP, "--timeout", "3"], env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
    ) as proc:  # fmt: skip
        os.close(slave)
        screen = b""
        with contextlib.suppress(OSError):  # EIO once the process closed its end
            while chunk := os.read(master, 4096):
                screen += chunk
        os.close(master)
        assert proc.wait(timeout=30) == 1
    text = screen.decode()
    env_id = text.split("genos: timed out after 3s: ")[1].split()[0]
    assert f"{env_id}: waiting in the queue, position 1" in text
    assert text.rstrip().endswith(
        "was queued at position 1; cancelled it (--no-wait leaves it waiting)"
    )


def test_up_json_timeout_prints_the_cancelled_environment(small: Server, full: str) -> None:
    """--json at --timeout prints the cancelled environment's object and exits 1."""
    result = genos(small, "up", DESKTOP, "--json", "--timeout", "1.5")
    assert result.returncode == 1
    env = json.loads(result.stdout)
    assert env["state"] == "terminated"
    assert result.stderr == (
        f"genos: timed out after 1.5s: {env['id']} was queued at position 1; cancelled it"
        " (--no-wait leaves it waiting)\n"
    )


def test_no_wait_keeps_the_place_in_the_queue(small: Server, full: str) -> None:
    """--no-wait answers at once with the queued request and leaves it waiting."""
    env = as_json(genos(small, "up", DESKTOP, "--no-wait", "--json"))
    assert env["state"] == "queued"
    assert env["queue_position"] == 1
    assert state_of(small, env["id"]) == "queued"


@pytest.mark.parametrize(
    ("sig", "code", "why"),
    [
        (signal.SIGINT, 130, "interrupted"),
        (signal.SIGTERM, 143, "stopped by SIGTERM"),
        (signal.SIGHUP, 129, "stopped by SIGHUP"),
    ],
)
def test_a_signal_while_queued_cancels_in_one_line(
    small: Server, full: str, sig: signal.Signals, code: int, why: str
) -> None:
    """Ctrl-C (or SIGTERM, SIGHUP) while queued: the request is cancelled, no traceback."""
    with launched(small, DESKTOP) as proc:
        err = Lines(proc.stderr)
        env_id = err.until("waiting in the queue, position 1").split(":")[0]
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == code
        lines = err.rest()
    assert lines[-1] == f"genos: {why}: {env_id} was queued at position 1; cancelled it"
    assert not any("Traceback" in line for line in lines)
    assert state_of(small, env_id) == "terminated"


def test_a_request_that_can_never_fit_fails_at_once(small: Server, tmp_path: Path) -> None:
    """More than the whole host is refused before anything waits: one line, exit 2."""
    spec = tmp_path / "big.yaml"
    spec.write_text(
        "apiVersion: genos/v1\nkind: Environment\n"
        "resources: {memory_mb: 4096, request: {memory_mb: 4096}}\n"
    )
    started = time.monotonic()
    result = genos(small, "up", "-f", str(spec), "--json", "--events")
    assert time.monotonic() - started < 10
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "genos: needs 0.02 cpus and 4096 MB reserved; this host offers at most 4 cpus"
        " and 512 MB to environments\n"
    )


def test_up_stops_at_timeout_when_the_server_never_answers(small: Server) -> None:
    """A server that accepts but never answers cannot hold up past --timeout."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()  # never accepted: the kernel completes connections, nobody answers
        url = f"http://127.0.0.1:{mute.getsockname()[1]}"
        started = time.monotonic()
        result = genos(small, "up", DESKTOP, "--timeout", "1.5", GENOS_URL=url)
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    assert result.stderr == f"genos: cannot reach the GenOS server at {url}: no answer in 1.5s\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--events"], "genos: --events goes with --json\n"),
        (["--timeout", "0"], "genos: --timeout must be positive, got 0\n"),
    ],
)
def test_up_option_mistakes_are_one_line(small: Server, args: list[str], message: str) -> None:
    """Options that do not go together are refused before any request: exit 2."""
    result = genos(small, "up", DESKTOP, *args)
    assert result.returncode == 2
    assert result.stderr == message


# Run the CLI as `genos` does, and write the modules it loaded to a file at exit.
PROBE = (
    "import atexit, sys\n"
    "out = sys.argv.pop(1)\n"
    "atexit.register(lambda: open(out, 'w').write(' '.join(sorted(sys.modules))))\n"
    "from genos.cli import main\n"
    "main()\n"
)
HEAVY = ("httpx", "rich", "yaml", "sqlalchemy", "fastapi", "genos.spec", "genos.composer")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["ls", "--json"],
        ["ls"],
        ["up", DESKTOP],
        ["up", DESKTOP, "--json"],
        ["up", DESKTOP, "--json", "--events"],
        ["show", "0123456789"],
    ],
)
def test_commands_import_only_what_they_use(clean: Server, tmp_path: Path, args: list[str]) -> None:
    """--help, ls and up load no HTTP library, no Rich, no YAML, no server or composer code."""
    modules = tmp_path / "modules"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(modules), *args], env=clean.env(),
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert "Traceback" not in result.stderr
    assert result.returncode == (1 if args[0] == "show" else 0), result.stderr
    loaded = set(modules.read_text().split())
    assert {m for m in loaded if m in HEAVY or m.startswith(tuple(f"{h}." for h in HEAVY))} == set()
    if args[0] == "--help":
        assert "http.client" not in loaded


def test_client_reopens_a_connection_the_server_closed(small: Server) -> None:
    """A kept-alive connection the server closed while idle is reopened, not an error."""
    from genos.client import Client  # noqa: PLC0415

    with Client(small.url, small.token) as client:
        first = client.call("GET", "/v1/me")
        assert client._conn is not None
        assert client._conn.sock is not None
        sock = client._conn.sock
        sock.shutdown(socket.SHUT_WR)  # the server reads EOF and closes its side
        assert sock.recv(1, socket.MSG_PEEK) == b""  # closed by the server (bounded by 30 s)
        assert client.call("GET", "/v1/me") == first
