"""The set-up installs every host command the code, the tests and the benchmarks run.

A command that happens to be on one machine (installed by hand, or pulled in
by something else) makes CI green there and red on a fresh machine. Each
command found in the source (``tests/hostcommands.py``) must come from a
package ``scripts/packages.txt`` lists, a package those depend on, the
virtualenv or the web client's npm packages, or the base system (Essential,
or priority required/important: what every Debian install has).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from tests.hostcommands import Use, python_uses, shell_uses

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
SEARCH_PATH = os.pathsep.join(
    [str(VENV_BIN), os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"]
)
# Commands GenOS only probes for, working (or saying why not) without them.
PROBED_ONLY = {
    "criu": "only named in suspend-to-disk's capability message; GenOS does not checkpoint",
    "genos-no-such-tool": "the missing-tool test's point is that it does not exist",
}
# Commands the set-up provides another way than scripts/packages.txt.
SET_UP_OTHERWISE = {
    "node": "setup.sh installs Debian's nodejs and npm unless a node with npm is present",
    "nodejs": "as node",
    "npm": "as node",
}
BASE_PRIORITIES = {"required", "important"}

pytestmark = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian host")


def listed_packages() -> set[str]:
    """The packages ``scripts/packages.txt`` names."""
    text = (ROOT / "scripts" / "packages.txt").read_text()
    return {word for line in text.splitlines() for word in line.split("#", 1)[0].split()}


def _installed() -> dict[str, tuple[str, bool, list[list[str]]]]:
    """Installed package -> (priority, essential, dependency alternatives)."""
    fields = ("Package", "Status", "Priority", "Essential", "Pre-Depends}, ${Depends", "Provides")
    fmt = "\t".join(f"${{{f}}}" for f in fields) + "\n"
    out = subprocess.run(["dpkg-query", "-W", "-f", fmt], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    packages: dict[str, tuple[str, bool, list[list[str]]]] = {}
    providers: dict[str, list[str]] = defaultdict(list)
    for line in out.splitlines():
        name, status, priority, essential, depends, provides = line.split("\t")
        if not status.endswith(" installed"):
            continue
        alternatives = [[alt.split()[0].split(":")[0] for alt in dep.split("|") if alt.strip()]
                        for dep in depends.split(",") if dep.strip()]  # fmt: skip
        packages[name] = (priority, essential == "yes", alternatives)
        for virtual in provides.split(","):
            if virtual.strip():
                providers[virtual.split()[0]].append(name)
    for virtual, real in providers.items():
        packages.setdefault(virtual, ("virtual", False, [real]))
    return packages


def allowed_packages() -> set[str]:
    """The listed packages, what they depend on (installed alternatives), and the base system."""
    installed = _installed()
    allowed = {n for n, (prio, essential, _) in installed.items()
               if essential or prio in BASE_PRIORITIES}  # fmt: skip
    todo = [p for p in listed_packages() if p in installed]
    while todo:
        name = todo.pop()
        if name in allowed and name not in listed_packages():
            continue
        allowed.add(name)
        for alternatives in installed[name][2]:
            todo += [alt for alt in alternatives if alt in installed and alt not in allowed]
    return allowed


def owner(path: str) -> str | None:
    """The package that installed ``path`` (trying the /usr-merged twins too)."""
    real = os.path.realpath(path)
    candidates = {path, real}
    for name in list(candidates):
        if name.startswith("/usr/"):
            candidates.add(name[len("/usr") :])
        else:
            candidates.add("/usr" + name)
    for candidate in sorted(candidates):
        done = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True,
                              check=False)  # fmt: skip
        if done.returncode == 0:
            return done.stdout.split(":", 1)[0].split(",")[0].strip()
    return None


def all_uses() -> list[Use]:
    """Every command use in src/, tests/, bench/ and the shell scripts."""
    scripts = [
        *sorted((ROOT / "scripts").glob("*.sh")),
        ROOT / "web" / "build.sh",
        ROOT / ".ci" / "run",
    ]
    return python_uses([ROOT / "src", ROOT / "tests", ROOT / "bench"]) + shell_uses(
        [s for s in scripts if s.exists()]
    )


def problems(uses: list[Use], allowed: set[str]) -> list[str]:
    """One line per command the set-up does not provide, naming where it is run."""
    found = []
    for command in sorted({use.command for use in uses}):
        if command in PROBED_ONLY or command in SET_UP_OTHERWISE:
            continue
        where = [u for u in uses if u.command == command]
        sure = any(u.sure for u in where)
        place = f"{where[0].path.relative_to(ROOT)}:{where[0].line}"
        path = shutil.which(command, path=SEARCH_PATH)
        if path is None:
            if sure:
                found.append(f"{command} (run at {place}) is not installed")
            continue
        if Path(path).is_relative_to(VENV_BIN) or "node_modules" in path:
            continue  # the set-up's pip and npm installs
        package = owner(path)
        if package is None:
            found.append(f"{command} ({path}, run at {place}) belongs to no Debian package")
        elif package not in allowed:
            found.append(f"{command} (run at {place}) comes from {package}, "
                         "which scripts/packages.txt does not install")  # fmt: skip
    return found


def test_every_host_command_comes_from_a_package_the_set_up_installs() -> None:
    """Each command the code, tests and benchmarks run is provided by the set-up or the base."""
    uses = all_uses()
    assert {"qemu-system-x86_64", "nft", "ip", "xsetroot", "nsenter"} <= {u.command for u in uses}
    assert problems(uses, allowed_packages()) == []


def test_a_command_from_an_unlisted_package_is_named() -> None:
    """A command from a package outside the list is reported with its package and its caller."""
    use = Use("xsetroot", ROOT / "bench" / "_stream_host.py", 149, sure=True)
    if shutil.which("xsetroot") is None:
        assert problems([use], set()) == [
            "xsetroot (run at bench/_stream_host.py:149) is not installed"
        ]
    else:
        assert problems([use], set()) == [
            "xsetroot (run at bench/_stream_host.py:149) comes from x11-xserver-utils, "
            "which scripts/packages.txt does not install"
        ]


def test_the_collector_finds_commands_however_the_code_names_them(tmp_path: Path) -> None:
    """Literal argvs, argv variables, constants, which() and loops over tool names are all seen."""
    (tmp_path / "m.py").write_text(
        "import shutil, subprocess\n"
        'TOOL = "alpha"\n'
        'subprocess.run([TOOL, "-x"])\n'
        'argv = ["beta", "-y"]\n'
        "subprocess.run(argv)\n"
        'for tool in ("gamma", "delta"):\n'
        "    shutil.which(tool)\n"
        'enter = ["nsenter", "--net", "--"] if True else ["unshare", "--net", "--"]\n'
        "words = ['not', 'commands']\n"
    )
    found = {(u.command, u.sure) for u in python_uses([tmp_path])}
    assert found == {("alpha", True), ("alpha", False), ("beta", True), ("beta", False),
                     ("gamma", True),
                     ("delta", True), ("nsenter", False), ("unshare", False)}  # fmt: skip
