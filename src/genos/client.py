"""A small synchronous client of the GenOS HTTP API (what the CLI talks through).

Configuration by environment, all optional: ``GENOS_URL`` (default
``http://127.0.0.1:8731``), ``GENOS_TOKEN`` (default: the admin token that
``genos serve`` keeps in ``<GENOS_DATA_DIR>/api/admin.token``, readable by
root only). Every failure is a :class:`~genos.errors.GenOSError`: the
server's own ``{"error": {"code", "message"}}`` becomes a
:class:`~genos.errors.RemoteError` (an input one for 400/413/422).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx

from genos.errors import ExternalError, InputError, RemoteError, RemoteInputError
from genos.paths import data_dir

DEFAULT_URL = "http://127.0.0.1:8731"
INPUT_STATUSES = frozenset({400, 413, 422})


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


class Client:
    """Calls the API with a bearer token.

    Args:
        url: the server (default :func:`server_url`).
        token: the API token (default :func:`local_token`).
        timeout: seconds per request (event streams have no read timeout).
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0):
        self.url = url or server_url()
        self.token = token or local_token()
        headers = {"Authorization": f"Bearer {self.token}", "User-Agent": "genos-cli"}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        """One call; the decoded JSON answer (None for 204).

        Raises:
            RemoteError: the server answered with an error.
            ExternalError: the server could not be reached.
        """
        query = {k: v for k, v in params.items() if v is not None}
        try:
            response = self._http.request(method, path, json=body, params=query)
        except httpx.HTTPError as exc:
            raise ExternalError(f"cannot reach the GenOS server at {self.url}: {exc}") from exc
        return decode(response)

    def events(
        self, env_id: str, after: int = 0, *, follow: bool = True
    ) -> Iterator[dict[str, Any]]:
        """An environment's events (server-sent): the history, then live ones until it ends."""
        path = f"/v1/environments/{env_id}/events"
        timeout = httpx.Timeout(10.0, read=None)
        try:
            with self._http.stream(
                "GET", path, params={"after": after, "follow": follow}, timeout=timeout
            ) as resp:
                if resp.status_code != 200:
                    resp.read()
                    decode(resp)
                yield from parse_sse(resp.iter_lines())
        except httpx.HTTPError as exc:
            raise ExternalError(f"the event stream from {self.url} broke: {exc}") from exc


def decode(response: httpx.Response) -> Any:
    """The JSON of a successful answer, else the matching :class:`RemoteError`."""
    if response.status_code == 204:
        return None
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.is_success:
        return data
    error = data.get("error") if isinstance(data, dict) else None
    code = str(error.get("code", "error")) if isinstance(error, dict) else "error"
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    message = message or f"HTTP {response.status_code}"
    kind = RemoteInputError if response.status_code in INPUT_STATUSES else RemoteError
    raise kind(response.status_code, code, message)


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
