"""A small synchronous client of the GenOS HTTP API (what the CLI talks through).

Configuration by environment, all optional: ``GENOS_URL`` (default
``http://127.0.0.1:8731``), ``GENOS_TOKEN`` (default: the admin token that
``genos serve`` keeps in ``<GENOS_DATA_DIR>/api/admin.token``, readable by
root only), ``GENOS_CA`` (a PEM file of CA certificates trusted for an
``https://`` server besides the system's, e.g. a private CA). Every failure
is a :class:`~genos.errors.GenOSError`: the server's own ``{"error": {"code",
"message"}}`` becomes a :class:`~genos.errors.RemoteError` (an input one for
400/413/422).

It speaks HTTP/1.1 through the standard library's :mod:`http.client`, over
one kept-alive connection for calls plus one per open event stream: a CLI
command that makes two or three calls should not spend more time importing
an HTTP stack than talking to the server. It goes to ``GENOS_URL`` directly
(``HTTP_PROXY`` and friends are not used).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlencode, urlsplit

from genos.errors import ExternalError, InputError, RemoteError, RemoteInputError
from genos.paths import data_dir

if TYPE_CHECKING:
    import ssl
    from http.client import HTTPConnection, HTTPResponse

DEFAULT_URL = "http://127.0.0.1:8731"
INPUT_STATUSES = frozenset({400, 413, 422})
# The server sends an SSE comment at least every 15 s (``genos.api.routes_envs.KEEPALIVE``),
# so a stream silent for this long is broken, not quiet.
STREAM_SILENCE = 45.0
# The server answers a recording within its length and a minute
# (``genos.api.routes_record.ANSWER_GRACE``); then each read has this long.
RECORD_GRACE = 90.0


def server_url() -> str:
    """``GENOS_URL`` or the default, without a trailing slash."""
    url = os.environ.get("GENOS_URL", "").strip() or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        raise InputError(f"GENOS_URL must start with http:// or https://, got {url!r}")
    return url.rstrip("/")


def local_token() -> str:
    """``GENOS_TOKEN``, else the admin token file in the data directory.

    Raises:
        InputError: neither is there (or the file is unreadable).
    """
    token = os.environ.get("GENOS_TOKEN", "").strip()
    if token:
        return token
    path = data_dir() / "api" / "admin.token"
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"no API token: set GENOS_TOKEN (or run as root beside genos serve; {path} unreadable)"
        ) from exc


def tls_context() -> ssl.SSLContext:
    """What HTTPS and WSS connections verify the server against: the system's CAs and ``GENOS_CA``.

    Raises:
        InputError: ``GENOS_CA`` is set but unreadable or holds no certificate.
    """
    import ssl  # noqa: PLC0415 - only for https://

    context = ssl.create_default_context()
    ca = os.environ.get("GENOS_CA", "").strip()
    if ca:
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise InputError(f"GENOS_CA: cannot use {ca} as CA certificates: {reason}") from exc
    return context


class Client:
    """Calls the API with a bearer token; safe to share between threads.

    Args:
        url: the server (default :func:`server_url`).
        token: the API token (default :func:`local_token`).
        timeout: seconds to connect and, per read, to wait for the server.

    Raises:
        InputError: the URL is not a valid http(s) URL, or there is no token.
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0):
        self.url = url or server_url()
        self.token = token or local_token()
        self.timeout = timeout
        parts = urlsplit(self.url)
        try:
            self._port = parts.port
        except ValueError as exc:
            raise InputError(f"not a valid server URL: {self.url!r}") from exc
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise InputError(f"not a valid server URL: {self.url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._prefix = parts.path.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {self.token}",
            "User-Agent": "genos-cli",
            "Accept": "application/json",
        }
        self._tls: ssl.SSLContext | None = None
        self._lock = threading.Lock()  # one call at a time on the kept-alive connection
        self._conn: HTTPConnection | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the kept-alive connection (open event streams close on their own)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def call(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None,
        **params: Any,
    ) -> Any:  # fmt: skip
        """One call; the decoded JSON answer (None for 204).

        Args:
            method: the HTTP method.
            path: the path under the server URL, e.g. ``/v1/environments``.
            body: sent as JSON when not None.
            timeout: seconds for this call (default: the client's).
            **params: the query; None values are left out, lists repeat the key.

        Raises:
            RemoteError: the server answered with an error.
            ExternalError: the server could not be reached or did not answer in time.
        """
        status, data, _headers = self.fetch(method, path, body, timeout=timeout, **params)
        return decode(status, data)

    def fetch(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None,
        **params: Any,
    ) -> tuple[int, bytes, dict[str, str]]:  # fmt: skip
        """One call, undecoded: status, body bytes and headers (lower-case names).

        Raises:
            ExternalError: the server could not be reached or did not answer in time.
        """
        target = self._target(path, params)
        headers = dict(self._headers)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        limit = self.timeout if timeout is None else timeout
        with self._lock:
            conn = self._kept_alive(limit)
            try:
                conn.request(method, target, body=payload, headers=headers)
                response = conn.getresponse()
                status, data = response.status, response.read()
                answer = {k.lower(): v for k, v in response.getheaders()}
            except _transport_errors() as exc:
                conn.close()
                raise ExternalError(
                    f"cannot reach the GenOS server at {self.url}: {_reason(exc, limit)}"
                ) from exc
            except BaseException:  # Ctrl-C mid-call: the connection is mid-exchange
                conn.close()
                raise
        return status, data, answer

    def events(
        self, env_id: str, after: int = 0, *, follow: bool = True, timeout: float | None = None
    ) -> EventStream:
        """Open an environment's event stream (server-sent): the history, then live ones.

        Args:
            env_id: the environment.
            after: the last seq already seen (0 for everything).
            follow: keep the stream open for live events until the environment ends.
            timeout: seconds to wait for the server to answer (default: the client's);
                once open, a stream silent for :data:`STREAM_SILENCE` seconds is broken.

        Returns:
            The open stream; iterate it for events, close it when done.

        Raises:
            RemoteError: the server refused (no such environment, not yours).
            ExternalError: the server could not be reached.
        """
        query = {"after": after, "follow": follow}
        target = self._target(f"/v1/environments/{env_id}/events", query)
        limit = self.timeout if timeout is None else timeout
        conn = self._connection(limit)
        try:
            conn.request("GET", target, headers=self._headers | {"Accept": "text/event-stream"})
            response = conn.getresponse()
            if response.status != 200:
                decode(response.status, response.read())
            if conn.sock is not None:
                conn.sock.settimeout(STREAM_SILENCE)
        except _transport_errors() as exc:
            conn.close()
            raise ExternalError(
                f"cannot reach the GenOS server at {self.url}: {_reason(exc, limit)}"
            ) from exc
        except BaseException:  # refused (RemoteError), or Ctrl-C while opening
            conn.close()
            raise
        return EventStream(self.url, conn, response)

    def record(self, env_id: str, seconds: int, sink: BinaryIO) -> int:
        """Record ``seconds`` of an environment's screen and sound; the MP4 goes to ``sink``.

        The server answers once the recording is done, so this takes ``seconds`` and
        a little more. Returns the bytes written.

        Raises:
            RemoteError: the server refused (spec, state, another recording, ...).
            ExternalError: the server could not be reached, or the file broke off
                (what ``sink`` holds then is not a whole file).
        """
        path = f"{self._prefix}/v1/environments/{env_id}/record"
        headers = self._headers | {"Accept": "video/mp4", "Content-Type": "application/json"}
        wait = seconds + RECORD_GRACE
        conn = self._connection(wait)
        written, failure = 0, f"cannot reach the GenOS server at {self.url}"
        try:
            conn.request("POST", path, body=json.dumps({"seconds": seconds}), headers=headers)
            response = conn.getresponse()
            if response.status != 200:
                decode(response.status, response.read())
            failure = f"the recording from {self.url} broke off"
            while chunk := response.read(1 << 16):
                sink.write(chunk)
                written += len(chunk)
        except _transport_errors(ValueError) as exc:
            raise ExternalError(f"{failure}: {_reason(exc, wait)}") from exc
        finally:
            conn.close()
        return written

    def _target(self, path: str, params: dict[str, Any]) -> str:
        query = {k: _query_value(v) for k, v in params.items() if v is not None}
        encoded = urlencode(query, doseq=True)
        return f"{self._prefix}{path}{'?' if encoded else ''}{encoded}"

    def _connection(self, timeout: float) -> HTTPConnection:
        # Loaded at the first connection: commands that never call (--help) never pay for it.
        from http.client import HTTPConnection, HTTPSConnection  # noqa: PLC0415

        if not self._https:
            return HTTPConnection(self._host, self._port, timeout=timeout)
        return HTTPSConnection(self._host, self._port, timeout=timeout, context=self.tls)

    @property
    def tls(self) -> ssl.SSLContext:
        """The TLS context for this server (:func:`tls_context`, made once)."""
        if self._tls is None:
            self._tls = tls_context()
        return self._tls

    def _kept_alive(self, timeout: float) -> HTTPConnection:
        """The shared connection with ``timeout``, reopened if the server closed it while idle."""
        if self._conn is None:
            self._conn = self._connection(timeout)
        elif self._conn.sock is not None and _readable(self._conn.sock):
            self._conn.close()  # an idle connection has nothing to read unless it was closed
        self._conn.timeout = timeout  # for the next connect
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        return self._conn


class EventStream:
    """An open stream of an environment's events.

    Iterate it for the events (dicts, as ``GET /v1/environments/{id}/events``
    sends them); it ends when the server ends the stream. :meth:`close` may
    be called from any thread: a reader blocked on the stream then ends
    quietly.
    """

    def __init__(self, url: str, conn: HTTPConnection, response: HTTPResponse) -> None:
        self._url = url
        self._conn = conn
        self._response = response
        self._closed = False

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            yield from parse_sse(self._lines())
        except _transport_errors(ValueError) as exc:
            if not self._closed:
                raise ExternalError(
                    f"the event stream from {self._url} broke: {_reason(exc, STREAM_SILENCE)}"
                ) from exc
        finally:
            self._conn.close()

    def close(self) -> None:
        """End the stream; a thread blocked reading it wakes up and stops."""
        self._closed = True
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed by the server or the reader
                sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()

    def _lines(self) -> Iterator[str]:
        while not self._closed:
            line = self._response.readline()
            if not line:
                return
            yield line.decode("utf-8").rstrip("\r\n")


def decode(status: int, body: bytes) -> Any:
    """The JSON of a successful answer, else the matching :class:`RemoteError`.

    Args:
        status: the HTTP status.
        body: the answer's bytes.

    Raises:
        RemoteInputError: a 400, 413 or 422 (the input was refused).
        RemoteError: any other status outside 2xx.
    """
    if status == 204:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if 200 <= status < 300:
        return data
    error = data.get("error") if isinstance(data, dict) else None
    code = str(error.get("code", "error")) if isinstance(error, dict) else "error"
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    message = message or f"HTTP {status}"
    kind = RemoteInputError if status in INPUT_STATUSES else RemoteError
    raise kind(status, code, message)


def parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Events from ``text/event-stream`` lines (``data:`` JSON per event; comments skipped)."""
    data: list[str] = []
    for line in lines:
        if line.startswith(":"):
            continue
        if line == "":
            if data:
                yield json.loads("\n".join(data))
                data = []
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))


def _transport_errors(*more: type[Exception]) -> tuple[type[Exception], ...]:
    """What a failed exchange raises, and ``more`` (evaluated only while matching one)."""
    from http.client import HTTPException  # noqa: PLC0415

    return (OSError, HTTPException, *more)


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return [_query_value(v) for v in value]
    return value


def _readable(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _reason(exc: Exception, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer in {timeout:g}s"
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return f"{exc} (a private CA? set GENOS_CA to its PEM file)"
    return str(exc) or type(exc).__name__
