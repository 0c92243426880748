"""Which host commands GenOS, its tests and its benchmarks run, read from their source.

The set-up (``scripts/setup.sh``) must install a package for each of them, or
the base system must have it: a command that happens to be on the developer's
machine makes CI green there and red on a fresh one. This module finds the
commands by reading the code, without running it, at two levels of certainty:

- **sure**: the first element of a list handed to ``subprocess.run``,
  ``Popen``, ``create_subprocess_exec`` or one of our own runners (directly,
  or through a name bound to such a list or to a string constant such as
  ``QEMU``); the string given to ``shutil.which`` (also each string of a
  literal tuple a ``for`` loop feeds to it); every name in a ``*TOOLS``
  tuple. These must be installed.
- **likely**: the first string of any other list or tuple literal that
  looks like an argv (a later element is an option), and the word after
  ``--`` or ``exec`` in any list (``["nsenter", ..., "--"]``,
  ``["ip", "netns", "exec", ns, "tc", ...]``), and the first word of each
  command in the shell scripts. Many are not commands at all, so these are
  checked only when they resolve to a program on ``PATH``.

Commands run inside an environment (``driver.exec``, guest scripts) come
from the environment's image, not the host, and are not collected.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RUNNERS = {"run", "Popen", "check_output", "check_call", "call", "run_tool", "_run",
           "_communicate", "launch"}  # fmt: skip
_WORD = re.compile(r"^[A-Za-z][\w.+-]*$")
_SHELL_KEYWORDS = {"if", "then", "else", "elif", "fi", "for", "while", "do", "done", "case",
                   "esac", "in", "function", "return", "local", "export", "set", "cd", "echo",
                   "exit", "shift", "trap", "read", "test", "true", "false", "wait", "kill",
                   "printf", "command", "exec", "source", "until", "break", "continue",
                   "declare", "eval", "unset"}  # fmt: skip


@dataclass(frozen=True)
class Use:
    """One place that runs a host command."""

    command: str
    path: Path
    line: int
    sure: bool


def _callee(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def _string(node: ast.expr, strings: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return strings.get(node.id)
    return None


class _Module:
    """What one module binds: string constants, argv lists, loop tuples."""

    def __init__(self, tree: ast.Module, constants: dict[str, str]) -> None:
        self.strings = dict(constants)
        self.lists: dict[str, list[str]] = {}
        self.loops: dict[str, list[str]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        self._bind(target.id, node.value)
            elif (isinstance(node, ast.For) and isinstance(node.target, ast.Name)
                  and isinstance(node.iter, ast.Tuple | ast.List)):  # fmt: skip
                self.loops[node.target.id] = self.words(node.iter)

    def _bind(self, name: str, value: ast.expr) -> None:
        word = _string(value, {})
        if word is not None:
            self.strings.setdefault(name, word)
        for branch in (value.body, value.orelse) if isinstance(value, ast.IfExp) else (value,):
            first = self.argv0(branch)
            if first:
                self.lists.setdefault(name, []).append(first)

    def words(self, node: ast.Tuple | ast.List) -> list[str]:
        return [w for e in node.elts if (w := _string(e, self.strings)) is not None]

    def argv0(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.List | ast.Tuple) and node.elts:
            first = node.elts[0]
            return None if isinstance(first, ast.Starred) else _string(first, self.strings)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.argv0(node.left)
        return None

    def argv0s(self, node: ast.expr) -> list[str]:
        if isinstance(node, ast.Name):
            return self.lists.get(node.id, [])
        first = self.argv0(node)
        return [first] if first else []


def _sure(node: ast.Call, module: _Module) -> list[str]:
    name = _callee(node)
    arg = node.args[0]
    if name == "which":
        word = _string(arg, module.strings)
        if word:
            return [word]
        return module.loops.get(arg.id, []) if isinstance(arg, ast.Name) else []
    if name == "create_subprocess_exec":
        word = _string(arg, module.strings)
        return [word] if word else module.argv0s(arg.value) if isinstance(arg, ast.Starred) else []
    if name in RUNNERS:
        return module.argv0s(arg)
    return []


def _likely(node: ast.List | ast.Tuple, module: _Module) -> list[str]:
    words = [_string(e, module.strings) for e in node.elts]
    options = any(w and w.startswith("-") for w in words[1:])  # argv-like, not a word list
    found = [words[0]] if options and words[0] else []
    for before, after in itertools.pairwise(words):
        if before in ("--", "exec") and after:
            found.append(after)
    return found


def _command(word: str) -> str | None:
    name = word.rsplit("/", 1)[-1] if word.startswith("/usr/") or word.startswith("/bin/") else word
    return name if _WORD.match(name) else None


def _uses_in(path: Path, constants: dict[str, str]) -> Iterator[Use]:
    tree = ast.parse(path.read_text(), str(path))
    module = _Module(tree, constants)
    for node in ast.walk(tree):
        found: list[tuple[str, bool]] = []
        if isinstance(node, ast.Call) and node.args:
            found = [(w, True) for w in _sure(node, module)]
        elif isinstance(node, ast.List | ast.Tuple) and len(node.elts) >= 2:
            found = [(w, False) for w in _likely(node, module)]
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if (isinstance(target, ast.Name) and target.id.endswith("TOOLS")
                    and isinstance(node.value, ast.Tuple | ast.List)):  # fmt: skip
                found = [(w, True) for w in module.words(node.value)]
        for word, sure in found:
            name = _command(word)
            if name:
                yield Use(name, path, getattr(node, "lineno", 0), sure)


def _constants(files: list[Path]) -> dict[str, str]:
    """Upper-case module-level string constants of every file (``QEMU = "qemu-..."``)."""
    found: dict[str, str] = {}
    for path in files:
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
                if isinstance(target, ast.Name) and target.id.isupper():
                    word = _string(value, {})
                    if word is not None:
                        found.setdefault(target.id, word)
    return found


def python_uses(roots: list[Path]) -> list[Use]:
    """Every host command the Python files under ``roots`` run, with where."""
    files = sorted(f for root in roots for f in root.rglob("*.py"))
    constants = _constants(files)
    return [use for path in files for use in _uses_in(path, constants)]


def shell_uses(scripts: list[Path]) -> list[Use]:
    """The first word of each command in shell scripts (all ``likely``)."""
    found = []
    for path in scripts:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split(" #", 1)[0].strip()
            if code.startswith("#"):
                continue
            for part in re.split(r"&&|\|\||[;|(`]|\$\(", code):
                words = [w for w in part.split() if "=" not in w or w.startswith("-")]
                if words and words[0] not in _SHELL_KEYWORDS and (name := _command(words[0])):
                    found.append(Use(name, path, number, False))
    return found
