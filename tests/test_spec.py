"""EnvironmentSpec: safe defaults, what it refuses, and its published schema."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from genos.errors import SpecError
from genos.spec import EnvironmentSpec, dump, json_schema, parse_spec, release_from


def test_defaults_are_the_safe_ones() -> None:
    """An empty spec is Debian bookworm in a container with no network, paste-in only, no
    microphone."""
    data = dump(EnvironmentSpec())
    assert data["apiVersion"] == "genos/v1"
    assert data["base"] == {"distribution": "debian", "release": "bookworm", "image": None}
    assert data["tier"] == "container"
    assert data["network"] == {"mode": "none", "allow": [], "domains": [], "links": []}
    assert data["security"] == {
        "clipboard": "to_env",
        "file_transfer": "to_env",
        "recording": False,
        "microphone": False,
    }
    assert data["persistence"] == {"mode": "ephemeral", "volume": None, "encrypted": False}
    assert data["packages"] == []


@pytest.mark.parametrize(
    "field",
    ["privileged", "capabilities", "mounts", "host_network", "devices", "hostPID", "volumes"],
)
def test_cannot_express_host_access(field: str) -> None:
    """No field grants host access; unknown top-level fields are refused."""
    with pytest.raises(SpecError, match=f"{field}: Extra inputs are not permitted"):
        parse_spec({field: True})


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"network": {"mode": "internet", "allow": [{"cidr": "10.0.0.0/8"}]}}, "network"),
        ({"network": {"mode": "allowlist"}}, "network"),
        (
            {"network": {"mode": "allowlist", "allow": [{"cidr": "not-an-ip"}]}},
            "network.allow.0.cidr",
        ),
        ({"resources": {"cpus": 0}}, "resources.cpus"),
        ({"resources": {"memory_mb": 10}}, "resources.memory_mb"),
        ({"extra_packages": ["Bad Name;rm -rf /"]}, "extra_packages.0"),
        ({"persistence": {"mode": "volume"}}, "persistence"),
        ({"base": {"distribution": "windows"}}, "base.distribution"),
        ({"base": {"release": "sid"}}, "base.release"),
        ({"tier": "host"}, "tier"),
        ({"network": {"mode": "host"}}, "network.mode"),
        ({"apiVersion": "genos/v0"}, "apiVersion"),
    ],
)
def test_refuses_invalid_values(patch: dict[str, Any], field: str) -> None:
    """Each invalid value is a SpecError naming the field it is in."""
    with pytest.raises(SpecError) as caught:
        parse_spec(patch)
    assert caught.value.problems[0][0] == field


def test_packages_are_derived_and_checked_on_input() -> None:
    """`packages` is the sorted union of app packages and extras; a wrong copy is refused."""
    data = {
        "apps": [{"name": "Tor Browser", "packages": ["tor", "firefox-esr"]}],
        "extra_packages": ["curl", "tor"],
    }
    spec = parse_spec(data)
    assert spec.packages == ["curl", "firefox-esr", "tor"]
    assert parse_spec(dump(spec)) == spec
    with pytest.raises(SpecError, match="packages must equal"):
        parse_spec({**data, "packages": ["curl"]})


def test_round_trip_validates_against_published_schema() -> None:
    """A full spec dumps to JSON that the published JSON Schema accepts."""
    spec = parse_spec(
        {
            "name": "lab-1",
            "tier": "container",
            "apps": [
                {"name": "GIMP", "packages": ["gimp"], "source": "catalog", "command": "gimp"}
            ],
            "network": {
                "mode": "allowlist",
                "allow": [{"cidr": "192.0.2.10", "ports": [443]}],
                "domains": ["example.org"],
            },
            "persistence": {"mode": "volume", "volume": "home", "encrypted": True},
            "display": {"protocol": "rdp", "resolution": {"width": 1920, "height": 1080}},
        }
    )
    data = dump(spec)
    jsonschema.Draft202012Validator(json_schema()).validate(data)
    assert data["network"]["allow"] == [
        {"cidr": "192.0.2.10/32", "ports": [443], "protocol": "tcp"}
    ]


def test_user_image_boots_alone_in_a_vm() -> None:
    """base.image is a name, kept through a dump and accepted by the published schema."""
    spec = parse_spec({"tier": "vm", "base": {"image": "win-test"}})
    data = dump(spec)
    assert data["base"] == {"distribution": "debian", "release": "bookworm", "image": "win-test"}
    jsonschema.Draft202012Validator(json_schema()).validate(data)
    assert parse_spec(data) == spec
    assert (
        "genos images add" in json_schema()["$defs"]["Base"]["properties"]["image"]["description"]
    )


@pytest.mark.parametrize(
    ("patch", "field", "message"),
    [
        (
            {"tier": "container"},
            "spec",
            "boots only in tier 'vm' (its own OS and kernel), not 'container'",
        ),
        ({"tier": "microvm"}, "spec", "not 'microvm'"),
        (
            {"apps": [{"name": "GIMP", "packages": ["gimp"]}]},
            "spec",
            "takes no apps or extra_packages",
        ),
        ({"extra_packages": ["curl"]}, "spec", "cannot install anything into an operating system"),
        ({"base": {"image": "Win Test"}}, "base.image", "String should match pattern"),
        ({"base": {"image": "../etc/shadow"}}, "base.image", "String should match pattern"),
    ],
)
def test_user_image_refusals(patch: dict[str, Any], field: str, message: str) -> None:
    """A user image outside tier vm, with anything to install, or with a bad name is refused."""
    data: dict[str, Any] = {"tier": "vm", "base": {"image": "win-test"}, **patch}
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    assert caught.value.problems[0][0] == field
    assert message in caught.value.problems[0][1]


def test_schema_rejects_unknown_fields() -> None:
    """The published schema itself forbids fields the spec cannot express."""
    bad = {**dump(EnvironmentSpec()), "privileged": True}
    with pytest.raises(jsonschema.ValidationError, match="privileged"):
        jsonschema.Draft202012Validator(json_schema()).validate(bad)


@pytest.mark.parametrize(
    ("word", "release"),
    [
        ("12", "bookworm"),
        ("bookworm", "bookworm"),
        ("13", "trixie"),
        ("13.0", "trixie"),
        ("Trixie", "trixie"),
        ("11", None),
        ("sid", None),
    ],
)
def test_release_from(word: str, release: str | None) -> None:
    """Release numbers and codenames map to the supported codenames only."""
    assert release_from(word) == release


def test_rdp_is_served_in_the_container_tier_only() -> None:
    """xrdp reaches the session's display over the env's loopback: no VM, no gVisor."""
    assert parse_spec({"display": {"protocol": "rdp"}}).tier.value == "container"
    for tier in ("gvisor", "microvm", "vm"):
        with pytest.raises(SpecError, match="container tier only"):
            parse_spec({"tier": tier, "display": {"protocol": "rdp"}})
