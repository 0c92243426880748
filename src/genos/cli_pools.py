"""``genos pool``: warm pools of started environments (admin).

``set`` keeps N environments of a spec ready, from words (composed by the
server, as ``genos up`` does) or a spec file; a later ``genos up`` of the same
request takes one at once. ``ls`` shows each pool with how many are ready,
``rm`` removes one (its unclaimed environments end).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from genos.cli_console import LazyConsole

pool_app = typer.Typer(
    help="Warm pools: environments started before anyone asks.", no_args_is_help=True
)
out = LazyConsole()
err = LazyConsole(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _line(pool: dict[str, Any]) -> str:
    words = f'  "{pool["prompt"]}"' if pool.get("prompt") else ""
    return (f"{pool['id']}  {pool['ready']}/{pool['size']} ready, {pool['starting']} starting  "
            f"{pool['summary']}{words}")  # fmt: skip


@pool_app.command("set")
def set_pool(
    prompt: Annotated[
        str | None, typer.Argument(help="What its environments are, in words.")
    ] = None,
    size: Annotated[
        int, typer.Option("--size", "-n", help="How many to keep ready.", min=0, max=1000)
    ] = 1,
    file: Annotated[Path | None, typer.Option("-f", "--file", help="A spec file.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Keep SIZE started environments of a spec ready (creates the pool or resizes it)."""
    from genos.cli_envs import _composer_answer, _spec_body  # noqa: PLC0415
    from genos.client import Client  # noqa: PLC0415

    body = _spec_body(prompt, file) | {"size": size}
    with Client() as client:
        answer = client.call("PUT", "/v1/pools", body)
    if "outcome" in answer:
        _composer_answer(answer, as_json)
    if as_json:
        print(json.dumps(answer, indent=2))
    else:
        out.print(_line(answer))


@pool_app.command("ls")
def list_pools(as_json: JsonOpt = False) -> None:
    """Every pool, with how many of its environments are ready."""
    from genos.client import Client  # noqa: PLC0415

    with Client() as client:
        pools = client.call("GET", "/v1/pools")
    if as_json:
        print(json.dumps(pools, indent=2))
        return
    if not pools:
        err.print("no pools")
    for pool in pools:
        out.print(_line(pool))
    sys.stdout.flush()


@pool_app.command("rm")
def remove_pool(
    pool_id: Annotated[str, typer.Argument(help="The pool's id (from `genos pool ls`).")],
    as_json: JsonOpt = False,
) -> None:
    """Remove a pool; its environments nobody has claimed end."""
    from genos.client import Client  # noqa: PLC0415

    with Client() as client:
        pool = client.call("DELETE", f"/v1/pools/{pool_id}")
    if as_json:
        print(json.dumps(pool, indent=2))
    else:
        out.print(f"removed {pool['id']} ({pool['summary']})")
