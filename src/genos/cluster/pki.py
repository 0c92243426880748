"""The cluster's own certificate authority and its members' certificates (mutual TLS).

Every channel between the parts of a cluster is TLS with certificates on
both ends, issued by one CA the operator's cluster owns: etcd members among
themselves (peer) and towards their clients, control-plane replicas and
nodes towards etcd (client), and the display relay between a control plane
(client) and a node (server). A certificate's common name says who it is
and its ``OU`` what it is (``etcd``, ``control-plane``, ``node``), so a
node's relay can accept only control planes.

Keys are ECDSA P-256, written ``0600``; certificates last a year, the CA ten.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from genos.errors import InputError

CA_DAYS = 3650
LEAF_DAYS = 365
ROLES = ("etcd", "control-plane", "node")


@dataclass(frozen=True)
class Identity:
    """A member's certificate, its key, and the CA that vouches for it (paths)."""

    cert: Path
    key: Path
    ca: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _name(common: str, role: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "GenOS cluster"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        x509.NameAttribute(NameOID.COMMON_NAME, common),
    ])  # fmt: skip


def ensure_ca(directory: Path) -> tuple[Path, Path]:
    """The CA of ``directory`` (``ca.pem``, ``ca.key``), made if it is not there.

    Returns:
        The certificate's and the key's paths.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = _name("GenOS cluster CA", "ca")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def issue(directory: Path, name: str, role: str, hosts: list[str]) -> Identity:
    """A certificate for ``name`` acting as ``role``, good as TLS server and client.

    Args:
        directory: the cluster's PKI directory (the CA is made if missing).
        name: the member's name (its common name; files ``<name>.pem``/``.key``).
        role: ``etcd``, ``control-plane`` or ``node``.
        hosts: the addresses and DNS names it serves on (subject alternative names).

    Returns:
        The member's identity files.

    Raises:
        InputError: an unknown role or a name that is not a plain label.
    """
    if role not in ROLES:
        raise InputError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise InputError(f"bad certificate name {name[:40]!r}")
    ca_cert_path, ca_key_path = ensure_ca(directory)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise InputError(f"{ca_key_path} is not the cluster's EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name, role))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Identity(cert_path, key_path, ca_cert_path)


def _alt_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def role_of(cert_der: bytes) -> str:
    """The role (``OU``) a peer's certificate states ('' if none)."""
    cert = x509.load_der_x509_certificate(cert_der)
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return str(units[0].value) if units else ""
