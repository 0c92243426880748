"""The systemd units in deploy/systemd start commands that exist, with options they take."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


def _exec_start(unit: Path) -> list[str]:
    text = unit.read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=").split()


@pytest.mark.parametrize(("unit", "command"), [
    ("genos-serve.service", ["serve"]),
    ("genos-node.service", ["node", "run"]),
])  # fmt: skip
def test_a_unit_runs_genos_with_options_the_command_takes(unit: str, command: list[str]) -> None:
    """Every option in the unit's ExecStart is one the command's --help lists, every value
    comes from its EnvironmentFile, and the unit installs into multi-user.target."""
    argv = _exec_start(UNITS / unit)
    assert argv[0] == "/opt/genos/.venv/bin/genos"
    assert argv[1 : 1 + len(command)] == command
    helped = subprocess.run(
        [sys.executable, "-m", "genos", *command, "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    offered = set(re.findall(r"--[a-z][a-z-]+", helped))
    options = [a for a in argv if a.startswith("--")]
    assert options
    assert [o for o in options if o not in offered] == []
    text = (UNITS / unit).read_text()
    variables = set(re.findall(r"\$\{(GENOS_[A-Z_]+)\}", text))
    documented = set(re.findall(r"^#\s+(GENOS_[A-Z_]+)=", text, re.MULTILINE))
    assert variables <= documented
    assert "WantedBy=multi-user.target" in text


def test_cluster_cert_issues_a_member_certificate_and_refuses_bad_input(tmp_path: Path) -> None:
    """`genos cluster cert` makes the CA once and a certificate that names the member's role
    and hosts; an unknown role or a name with a slash is exit 2 with one line, no file."""
    from cryptography import x509  # noqa: PLC0415

    from genos.cluster.pki import role_of  # noqa: PLC0415

    def cert(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "genos", "cluster", "cert", *args,
                               "--pki", str(tmp_path)],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    made = cert("n1", "--role", "node", "--host", "10.0.0.11", "--host", "n1.example")
    assert made.returncode == 0, made.stderr
    pem = (tmp_path / "n1.pem").read_bytes()
    loaded = x509.load_pem_x509_certificate(pem)
    assert role_of(loaded.public_bytes(serialization.Encoding.DER)) == "node"
    names = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.11"]
    assert names.get_values_for_type(x509.DNSName) == ["n1.example"]
    assert (tmp_path / "n1.key").stat().st_mode & 0o777 == 0o600
    ca = (tmp_path / "ca.pem").read_bytes()
    assert cert("cp1", "--role", "control-plane", "--host", "10.0.0.1").returncode == 0
    assert (tmp_path / "ca.pem").read_bytes() == ca  # one CA for the cluster
    for bad in (["n/1", "--role", "node", "--host", "x"], ["n2", "--role", "boss", "--host", "x"]):
        refused = cert(*bad)
        assert refused.returncode == 2
        assert len(refused.stderr.strip().splitlines()) == 1
        assert refused.stderr.startswith("genos: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ca.key", "ca.pem", "cp1.key", "cp1.pem", "gateway.key", "n1.key", "n1.pem"]  # fmt: skip
    key = tmp_path / "gateway.key"
    assert (key.stat().st_mode & 0o777, len(key.read_bytes())) == (0o600, 32)
    before = key.read_bytes()
    assert cert("cp2", "--role", "control-plane", "--host", "10.0.0.2").returncode == 0
    assert key.read_bytes() == before  # one key for every replica
