"""EnvironmentSpec: the one type that crosses every border (``apiVersion: genos/v1``).

The composer produces it, the orchestrator stores it, a driver receives the
parts it needs. Defaults are the safe ones: no inbound network, clipboard only
into the environment, no file download, no recording, one CPU, ephemeral.

What the spec cannot say is as important as what it can: there is no field for
host mounts, privileged mode, capabilities, devices or host networking, and
every model forbids unknown fields, so no text and no client can ask for them.
"""

from __future__ import annotations

import ipaddress
import json
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    computed_field,
    field_validator,
    model_validator,
)

from genos.errors import SpecError

API_VERSION: Literal["genos/v1"] = "genos/v1"
SUPPORTED_RELEASES = {"debian": ("bookworm", "trixie")}
RELEASE_NUMBERS = {"bookworm": "12", "trixie": "13"}

# Debian Policy 5.6.7: lower case letters, digits, + - . ; at least two chars,
# starting with an alphanumeric.
PackageName = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9+.-]{1,62}$", max_length=63)
]
# RFC 1123 label: what environment and volume names may be.
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
Domain = Annotated[
    str,
    StringConstraints(
        pattern=r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$", max_length=253
    ),
]
Text = Annotated[str, StringConstraints(max_length=4096)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Tier(StrEnum):
    """How strong the wall around the environment is, weakest first."""

    CONTAINER = "container"
    GVISOR = "gvisor"
    MICROVM = "microvm"
    VM = "vm"


class NetworkMode(StrEnum):
    NONE = "none"
    INTERNET = "internet"
    TOR = "tor"
    ALLOWLIST = "allowlist"


class Protocol(StrEnum):
    VNC = "vnc"
    SPICE = "spice"
    RDP = "rdp"


class WindowManager(StrEnum):
    OPENBOX = "openbox"
    ICEWM = "icewm"
    FLUXBOX = "fluxbox"
    XFCE = "xfce"


class Direction(StrEnum):
    """Which way data may cross between the user's device and the environment."""

    NONE = "none"
    TO_ENV = "to_env"
    FROM_ENV = "from_env"
    BOTH = "both"


class PersistenceMode(StrEnum):
    EPHEMERAL = "ephemeral"
    VOLUME = "volume"


class Base(_Model):
    """What the environment boots: Debian built by GenOS, or the owner's own disk image."""

    distribution: Literal["debian"] = "debian"
    release: Literal["bookworm", "trixie"] = "bookworm"
    image: Name | None = Field(
        default=None,
        description=(
            "A disk image registered with `genos images add` (qcow2 or ISO). The environment "
            "boots it instead of Debian: tier vm only, no apps or extra packages."
        ),
    )


class App(_Model):
    """An app the user asked for and the Debian packages it resolves to."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    packages: list[PackageName] = Field(min_length=1, max_length=32)
    source: Literal["catalog", "index", "user"] = "user"
    command: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        default=None, description="What the session starts for this app, if anything."
    )


class Resolution(_Model):
    width: int = Field(default=1280, ge=320, le=7680)
    height: int = Field(default=800, ge=240, le=4320)

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


class Display(_Model):
    protocol: Protocol = Protocol.VNC
    resolution: Resolution = Resolution()
    window_manager: WindowManager = WindowManager.OPENBOX
    headless: bool = Field(
        default=False,
        description="No window manager or desktop apps; the display shows a terminal.",
    )
    resize: bool = Field(
        default=True,
        description=(
            "Viewers with control may resize the remote screen to their window "
            "(RFB SetDesktopSize), up to max_resolution."
        ),
    )
    max_resolution: Resolution = Field(
        default=Resolution(width=3840, height=2160),
        description="The largest screen a viewer may ask for; larger requests are refused.",
    )

    @model_validator(mode="after")
    def _resolution_within_max(self) -> Display:
        most, start = self.max_resolution, self.resolution
        if start.width > most.width or start.height > most.height:
            raise ValueError(f"resolution {start} is larger than max_resolution {most}")
        return self


class AllowRule(_Model):
    """Outbound traffic allowed in ``allowlist`` mode: a network and its ports."""

    cidr: str
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=list, max_length=64)
    protocol: Literal["tcp", "udp"] = "tcp"

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_network(value, strict=False))
        except ValueError as exc:
            raise ValueError(f"not a CIDR: {value!r}") from exc


class Network(_Model):
    """Outbound network the environment may use. Inbound is never allowed."""

    mode: NetworkMode = NetworkMode.NONE
    allow: list[AllowRule] = Field(default_factory=list, max_length=256)
    domains: list[Domain] = Field(default_factory=list, max_length=256)
    links: list[Name] = Field(
        default_factory=list,
        max_length=32,
        description="Environments this one may talk to; each must name this one too.",
    )

    @model_validator(mode="after")
    def _allow_only_in_allowlist(self) -> Network:
        if self.mode is not NetworkMode.ALLOWLIST and (self.allow or self.domains):
            raise ValueError("allow rules and domains need mode 'allowlist'")
        if self.mode is NetworkMode.ALLOWLIST and not (self.allow or self.domains):
            raise ValueError("mode 'allowlist' needs at least one allow rule or domain")
        return self


class ResourceRequest(_Model):
    """What the environment is expected to need; its host reserves this, not the limits."""

    cpus: float | None = Field(default=None, ge=0.01, le=256)
    memory_mb: int | None = Field(default=None, ge=16, le=4 * 1024 * 1024)


class Resources(_Model):
    """The environment's limits (its cgroup ceiling), and optionally its request."""

    cpus: float = Field(default=1.0, ge=0.25, le=256)
    memory_mb: int = Field(default=2048, ge=256, le=4 * 1024 * 1024)
    disk_mb: int = Field(default=8192, ge=512, le=16 * 1024 * 1024)
    pids: int = Field(default=1024, ge=64, le=65536, description="Process/thread limit.")
    request: ResourceRequest | None = Field(
        default=None,
        description=(
            "What the host reserves for the environment (default: measured per tier and "
            "kind of environment; the operator's settings). At most the limits above."
        ),
    )

    @model_validator(mode="after")
    def _request_within_limits(self) -> Resources:
        wanted = self.request
        if wanted is not None and wanted.cpus is not None and wanted.cpus > self.cpus:
            raise ValueError(f"request.cpus {wanted.cpus:g} is more than the limit {self.cpus:g}")
        if (
            wanted is not None
            and wanted.memory_mb is not None
            and wanted.memory_mb > self.memory_mb
        ):
            raise ValueError(
                f"request.memory_mb {wanted.memory_mb} is more than the limit {self.memory_mb}"
            )
        return self


class Lifetime(_Model):
    ttl_seconds: int = Field(default=4 * 3600, ge=60, le=30 * 24 * 3600)
    idle_timeout_seconds: int | None = Field(default=3600, ge=60, le=7 * 24 * 3600)
    on_idle: Literal["suspend", "terminate"] = "suspend"
    on_host_loss: Literal["fail", "replace"] = Field(
        default="fail",
        description=(
            "When the host of a cluster it runs on is lost: stay 'lost' (fail), or have a "
            "replacement made from the same spec on another host (replace)."
        ),
    )


class Persistence(_Model):
    mode: PersistenceMode = PersistenceMode.EPHEMERAL
    volume: Name | None = None
    encrypted: bool = False

    @model_validator(mode="after")
    def _volume_iff_mode(self) -> Persistence:
        if self.mode is PersistenceMode.VOLUME and self.volume is None:
            raise ValueError("mode 'volume' needs a volume name")
        if self.mode is PersistenceMode.EPHEMERAL and (self.volume or self.encrypted):
            raise ValueError("an ephemeral environment has no volume")
        return self


class Security(_Model):
    clipboard: Direction = Direction.TO_ENV
    file_transfer: Direction = Direction.TO_ENV
    recording: bool = False
    microphone: bool = False  # a viewer's microphone may feed the environment's sound input


class Decision(_Model):
    """Why the composer set one field the way it did."""

    field: Annotated[str, StringConstraints(max_length=80)]
    value: Text
    rationale: Text


class Provenance(_Model):
    prompt: Text = ""
    composer: Annotated[str, StringConstraints(max_length=80)] = "manual"
    decisions: list[Decision] = Field(default_factory=list, max_length=128)


class EnvironmentSpec(_Model):
    """A whole environment, as the user may ask for it (``apiVersion: genos/v1``)."""

    apiVersion: Literal["genos/v1"] = API_VERSION  # noqa: N815 - the wire name
    kind: Literal["Environment"] = "Environment"
    name: Name | None = None
    base: Base = Base()
    tier: Tier = Tier.CONTAINER
    apps: list[App] = Field(default_factory=list, max_length=64)
    extra_packages: list[PackageName] = Field(default_factory=list, max_length=256)
    display: Display = Display()
    network: Network = Network()
    resources: Resources = Resources()
    lifetime: Lifetime = Lifetime()
    persistence: Persistence = Persistence()
    security: Security = Security()
    provenance: Provenance = Provenance()

    @model_validator(mode="before")
    @classmethod
    def _drop_derived(cls, data: Any) -> Any:
        # `packages` is derived; a round-tripped spec may carry it, and then it
        # must agree with the apps and extra packages it came from.
        if isinstance(data, dict) and "packages" in data:
            data = dict(data)
            given = data.pop("packages")
            expected = _flatten(data.get("apps") or [], data.get("extra_packages") or [])
            if expected is not None and given != expected:
                raise ValueError("packages must equal the apps' packages plus extra_packages")
        return data

    @model_validator(mode="after")
    def _rdp_needs_xrdp_tier(self) -> EnvironmentSpec:
        # xrdp runs beside the session's Xvnc and reaches it over the env's own
        # loopback: a VM's display is QEMU's own, and under gVisor that
        # loopback connection does not come up.
        if self.display.protocol is Protocol.RDP and self.tier is not Tier.CONTAINER:
            raise ValueError(
                f"display.protocol 'rdp' is served in the container tier only, not {self.tier}"
            )
        return self

    @model_validator(mode="after")
    def _user_image_boots_alone(self) -> EnvironmentSpec:
        # An image GenOS did not build has no package manager GenOS knows and
        # no kernel a container could share: it boots whole, in a full VM.
        name = self.base.image
        if name is not None and self.tier is not Tier.VM:
            raise ValueError(
                f"base.image {name!r} boots only in tier 'vm' (its own OS and kernel), "
                f"not {self.tier.value!r}"
            )
        if name is not None and (self.apps or self.extra_packages):
            raise ValueError(
                f"base.image {name!r} takes no apps or extra_packages: GenOS cannot install "
                "anything into an operating system it did not build"
            )
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def packages(self) -> list[str]:
        """Every Debian package the environment gets, sorted, without repeats."""
        names = {p for app in self.apps for p in app.packages} | set(self.extra_packages)
        return sorted(names)


def _flatten(apps: list[Any], extra: list[Any]) -> list[str] | None:
    names: set[str] = set()
    for app in apps:
        pkgs = app.get("packages") if isinstance(app, dict) else getattr(app, "packages", None)
        if not isinstance(pkgs, list):
            return None
        names.update(str(p) for p in pkgs)
    names.update(str(p) for p in extra)
    return sorted(names)


def parse_spec(data: Any) -> EnvironmentSpec:
    """Validate a mapping (from JSON or YAML) as an EnvironmentSpec.

    Args:
        data: the decoded document.

    Returns:
        The validated spec.

    Raises:
        SpecError: with one ``(field, reason)`` per problem.
    """
    try:
        return EnvironmentSpec.model_validate(data)
    except ValidationError as exc:
        problems = [(_loc(err["loc"]), err["msg"]) for err in exc.errors()]
        first = f"{problems[0][0]}: {problems[0][1]}" if problems else str(exc)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SpecError(f"invalid spec: {first}{more}", problems) from None


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "spec"


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of ``genos/v1`` (serialization form, with ``packages``)."""
    schema = EnvironmentSpec.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "genos/v1/EnvironmentSpec"
    return schema


def dump(spec: EnvironmentSpec) -> dict[str, Any]:
    """The spec as plain JSON data (enums as strings, derived ``packages`` included)."""
    data: dict[str, Any] = json.loads(spec.model_dump_json())
    return data


_RELEASE_ALIASES = {
    **{name: name for name in RELEASE_NUMBERS},
    **{num: name for name, num in RELEASE_NUMBERS.items()},
}


def release_from(word: str) -> str | None:
    """Map ``12``, ``bookworm``, ``13`` or ``trixie`` to the release codename."""
    return _RELEASE_ALIASES.get(re.sub(r"\.0$", "", word.strip().lower()))
