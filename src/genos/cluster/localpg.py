"""A throwaway PostgreSQL 15 server on loopback, for tests and ``genos cluster up``.

``initdb`` into a directory of ours (as the ``postgres`` user when running
as root: the server refuses to run as root), listening on 127.0.0.1 at a
given port and on a unix socket inside that directory, authentication
``trust`` on loopback only. :func:`start` leaves it running (its pid file is
the server's own); :func:`stop` ends it; :func:`server` does both around a
block.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from genos.errors import CapabilityError, ExternalError

PG_BIN = Path(os.environ.get("GENOS_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def start(root: Path, port: int) -> str:
    """Make and start a cluster in ``root`` listening on 127.0.0.1:``port``.

    Returns:
        Its SQLAlchemy base URL (no database name).

    Raises:
        CapabilityError: PostgreSQL 15 is not installed.
        ExternalError: initdb or the server failed (its log in ``detail``).
    """
    if not (PG_BIN / "initdb").exists():
        raise CapabilityError(f"PostgreSQL is not installed in {PG_BIN} (apt install postgresql)")
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for parent in root.parents:
            if parent.stat().st_mode & 0o001 == 0:
                raise CapabilityError(f"PostgreSQL runs as postgres and cannot pass {parent}: "
                                      "choose a directory whose parents are o+x")  # fmt: skip
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    init = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync"]  # fmt: skip
    launch = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
              "-o", options, "-w", "start"]  # fmt: skip
    for argv, what in ((init, "initdb"), (launch, "pg_ctl start")):
        done = subprocess.run(_as_server_user(argv), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
            raise ExternalError(f"PostgreSQL {what} failed", detail=(done.stderr + log)[-2000:])
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}"


def stop(root: Path) -> None:
    """Stop the cluster in ``root`` (nothing if it does not run) and remove its files."""
    data = root / "data"
    if (data / "postmaster.pid").exists():
        argv = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
        subprocess.run(_as_server_user(argv), check=False, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def server(root: Path, port: int) -> Iterator[str]:
    """A running cluster for the block; yields its base URL."""
    try:
        yield start(root, port)
    finally:
        stop(root)
