"""The ``genos`` command.

Every failure ends as one line on stderr and an exit code: 0 done, 1 failure
outside the user's control, 2 bad input, 3 the composer asks back, 4 the
composer refuses.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from genos import __version__
from genos.cli_cluster import cluster_app
from genos.cli_console import LazyConsole
from genos.cli_envs import register as register_env_commands
from genos.cli_images import images_app
from genos.cli_node import node_app
from genos.cli_pools import pool_app
from genos.cli_record import register as register_record
from genos.errors import GenOSError, InputError, PromptError
from genos.paths import data_dir

if TYPE_CHECKING:
    from genos.composer import Clarification, Composed, Rejection

# The composer, the spec models, the image store, YAML and Rich load only in
# the commands that use them: `genos --help`, `up`, `ls` and friends start in a
# fraction of the time. Help is click's plain text (rich_markup_mode=None):
# drawing it with Rich cost more than everything else `genos --help` does.

app = typer.Typer(
    help="GenOS: describe a computer in a sentence, get a sandboxed Linux desktop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
spec_app = typer.Typer(
    help="The environment spec (genos/v1).", no_args_is_help=True, rich_markup_mode=None
)
catalog_app = typer.Typer(
    help="The composer's knowledge base.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(spec_app, name="spec")
audit_app = typer.Typer(
    help="The hash-chained audit logs.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(catalog_app, name="catalog")
app.add_typer(audit_app, name="audit")
app.add_typer(images_app, name="images")
app.add_typer(pool_app, name="pool")
app.add_typer(node_app, name="node")
app.add_typer(cluster_app, name="cluster")
out = LazyConsole()
register_env_commands(app)
register_record(app)


def _read_prompt(text: str | None) -> str:
    from genos.composer.normalise import MAX_CHARS, decode  # noqa: PLC0415

    if text is not None and text != "-":
        return text
    if sys.stdin is None or sys.stdin.isatty():
        raise PromptError("no prompt: pass it as an argument or on standard input")
    raw = sys.stdin.buffer.read(MAX_CHARS * 4 + 1)
    if len(raw) > MAX_CHARS * 4:
        raise PromptError(f"prompt is too long (limit {MAX_CHARS} characters)")
    return decode(raw)


def _answers(pairs: list[str]) -> dict[str, str]:
    answers = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep or not field.strip() or not value.strip():
            raise InputError(f"--answer wants FIELD=OPTION, got {pair!r}")
        answers[field.strip()] = value.strip()
    return answers


@app.command("compose")
def compose_cmd(
    text: Annotated[
        str | None, typer.Argument(help="The request; '-' or none reads stdin.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the stable JSON shape.")] = False,
    as_yaml: Annotated[bool, typer.Option("--yaml", help="Print only the spec, as YAML.")] = False,
    answer: Annotated[
        list[str] | None, typer.Option("--answer", "-a", help="Answer a question: FIELD=OPTION.")
    ] = None,
    backend: Annotated[
        str, typer.Option(help="rules (default), or model: the GENOS_MODEL_URL endpoint.")
    ] = "rules",
) -> None:
    """Turn a request in plain words into an environment spec (or ask back, or refuse)."""
    from genos.composer import EXIT_CODES, Composed, Rejection, compose, to_json  # noqa: PLC0415
    from genos.composer.model import ModelConfig, compose_with_model  # noqa: PLC0415
    from genos.spec import dump  # noqa: PLC0415

    prompt = _read_prompt(text)
    if backend == "model":
        config = ModelConfig.from_env()
        if config is None:
            raise InputError("--backend model needs GENOS_MODEL_URL (an OpenAI-compatible /v1 URL)")
        result = compose_with_model(prompt, config)
    elif backend == "rules":
        result = compose(prompt, answers=_answers(answer or []))
    else:
        raise InputError(f"unknown backend {backend!r}; choose rules or model")
    if as_json:
        print(json.dumps(to_json(result), indent=2))
    elif as_yaml and not isinstance(result, Rejection):
        import yaml  # noqa: PLC0415

        spec = result.spec if isinstance(result, Composed) else result.draft
        print(yaml.safe_dump(dump(spec), sort_keys=False), end="")
    else:
        _show(result)
    raise typer.Exit(EXIT_CODES[result.outcome])


def _show(result: Composed | Clarification | Rejection) -> None:
    from genos.composer import Clarification, Composed, Rejection  # noqa: PLC0415

    if isinstance(result, Rejection):
        out.print("[bold red]Cannot build this:[/]")
        for v in result.violations:
            out.print(f"  [red]✗[/] {v.field}: {v.reason}")
        return
    spec = result.spec if isinstance(result, Composed) else result.draft
    title = "Environment" if isinstance(result, Composed) else "Draft (answer to finish)"
    out.print(
        f"[bold]{title}[/]: Debian {spec.base.release}, {spec.tier.value}, "
        f"network {spec.network.mode.value}, {spec.display.protocol.value} "
        f"{spec.display.resolution}"
    )
    out.print(
        f"  resources: {spec.resources.cpus:g} CPU, {spec.resources.memory_mb} MB, "
        f"lifetime {spec.lifetime.ttl_seconds // 60} min, {spec.persistence.mode.value}"
    )
    for app_ in spec.apps:
        out.print(f"  app: {app_.name} [dim]({', '.join(app_.packages)})[/]")
    for d in spec.provenance.decisions:
        out.print(f"  [dim]why {d.field} = {d.value}: {d.rationale}[/]")
    if isinstance(result, Clarification):
        for q in result.questions:
            out.print(f"[yellow]?[/] {q.field}: {q.question}")
            out.print(f"    options: {', '.join(q.options)}  (--answer {q.field}=OPTION)")


@spec_app.command("schema")
def spec_schema() -> None:
    """Print the JSON Schema of EnvironmentSpec (genos/v1)."""
    from genos.spec import json_schema  # noqa: PLC0415

    print(json.dumps(json_schema(), indent=2))


@spec_app.command("validate")
def spec_validate(path: Annotated[Path, typer.Argument(help="A spec in YAML or JSON.")]) -> None:
    """Check a spec file; print it normalised, or the first problem."""
    import yaml  # noqa: PLC0415

    from genos.spec import dump, parse_spec  # noqa: PLC0415

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not YAML or JSON: {str(exc).splitlines()[0]}") from exc
    print(json.dumps(dump(parse_spec(data)), indent=2))


@catalog_app.command("update")
def catalog_update(
    release: Annotated[
        list[str] | None, typer.Option(help="bookworm, trixie (default: both).")
    ] = None,
    if_older_than: Annotated[
        str | None, typer.Option(help="Skip releases cached more recently, e.g. 7d, 12h.")
    ] = None,
) -> None:
    """Fetch Debian's package index of each release from the archive and cache it."""
    from genos.composer import debindex  # noqa: PLC0415
    from genos.spec import SUPPORTED_RELEASES  # noqa: PLC0415

    releases = release or list(SUPPORTED_RELEASES["debian"])
    unknown = [r for r in releases if r not in SUPPORTED_RELEASES["debian"]]
    if unknown:
        raise InputError(f"unknown release {unknown[0]!r}; choose bookworm or trixie")
    max_age = _duration(if_older_than) if if_older_than else None
    for rel in releases:
        age = debindex.age_seconds(rel)
        if max_age is not None and age is not None and age < max_age:
            out.print(f"{rel}: cached {age / 3600:.1f} h ago, kept")
            continue
        with out.status(f"fetching Debian {rel}'s package index"):
            index = debindex.update(rel)
        out.print(f"{rel}: {len(index)} packages cached")


def _duration(text: str) -> int:
    found = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not found:
        raise InputError(f"not a duration: {text!r} (use e.g. 30m, 12h, 7d)")
    return int(found.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[found.group(2)]


@catalog_app.command("search")
def catalog_search(
    word: str,
    release: Annotated[str, typer.Option(help="bookworm or trixie.")] = "bookworm",
) -> None:
    """Look a name up in the catalog and in Debian's index, with close names."""
    from genos.composer import debindex  # noqa: PLC0415
    from genos.composer.knowledge import default_knowledge  # noqa: PLC0415 - loads the catalog

    kb = default_knowledge()
    matches, _ = kb.matcher.scan(tuple(word.lower().split()))
    for m in matches:
        if m.kind == "app":
            a = kb.catalog.apps[m.id]
            out.print(f"catalog: {a.name} -> {', '.join(a.packages_for(release)) or a.unavailable}")
        else:
            out.print(f"catalog: '{m.id}' -> {', '.join(kb.catalog.categories[m.id].options)}")
    index = debindex.load(release)
    name = word.strip().lower()
    if index.has(name):
        out.print(f"debian {release}: {name} {index.packages[name][0]} - {index.summary(name)}")
    else:
        out.print(f"debian {release}: no package {name!r}; close: {', '.join(index.suggest(name))}")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check every audit log's hash chain; exit 1 at the first broken record."""
    from genos.audit import AuditLog  # noqa: PLC0415

    logs = sorted((data_dir() / "audit").glob("*.jsonl"))
    broken = False
    for path in logs:
        verdict = AuditLog(path).verify()
        if verdict.ok:
            out.print(f"{path.name}: {verdict.records} records, chain intact")
        else:
            broken = True
            print(
                f"genos: {path.name}: record {verdict.bad_seq}: {verdict.reason}", file=sys.stderr
            )
    if not logs:
        out.print("no audit logs yet")
    raise typer.Exit(1 if broken else 0)


@app.command("mcp")
def mcp_cmd() -> None:
    """Speak the Model Context Protocol on stdin/stdout (for agents; GENOS_URL, GENOS_TOKEN)."""
    from genos.client import Client  # noqa: PLC0415
    from genos.mcpserver import serve_stdio  # noqa: PLC0415 - the MCP SDK only for this command

    with Client(timeout=60) as client:
        serve_stdio(client)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        print(__version__)
        raise typer.Exit(0)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: run the CLI, turning every GenOS error into one line and an exit code."""
    try:
        code = app(args=argv, standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except GenOSError as exc:
        print(f"genos: {exc.message}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, InputError) else 1)
    except KeyboardInterrupt:
        print("genos: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: unknown option, missing argument
        print(f"genos: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
