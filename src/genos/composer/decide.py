"""Stage 5a: turn extracted wishes into spec sections, each with its reason.

Every function returns the section's values and appends a :class:`Decision`
(field, value, rationale) to ``why``; a wish that contradicts another becomes
a :class:`Violation`, never a silent choice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from genos.composer.entities import Entities
from genos.composer.knowledge import HostLimits
from genos.composer.lexicon import NET_NONE
from genos.composer.resolve import Resolved
from genos.composer.result import Question, Violation
from genos.spec import Decision, NetworkMode, Tier

_STRENGTH = [Tier.CONTAINER, Tier.GVISOR, Tier.MICROVM, Tier.VM]
_LINUX_LIKE = {"ubuntu", "fedora", "arch", "centos", "opensuse", "kali", "alpine", "mint"}


class Decider:
    """Decides each spec section from one request's entities."""

    def __init__(self, ent: Entities, answers: Mapping[str, str]) -> None:
        self.ent = ent
        self.answers = answers
        self.why: list[Decision] = []
        self.questions: list[Question] = []
        self.violations: list[Violation] = []

    def note(self, field: str, value: object, rationale: str) -> None:
        """Record why ``field`` got ``value``."""
        self.why.append(Decision(field=field, value=str(value), rationale=rationale))

    def refuse(self, field: str, reason: str) -> None:
        """Record a constraint the request breaks."""
        self.violations.append(Violation(field, reason))

    def base(self) -> dict[str, str]:
        """The base section: Debian and its release, or the owner's own image."""
        ent = self.ent
        if ent.user_image is not None:
            return self._user_image(ent.user_image)
        release = self._foreign(ent.release or "bookworm")
        if "unsupported_release" in ent.evidence and ent.release is None:
            self.questions.append(
                Question(
                    "base.release",
                    f"'{ent.evidence['unsupported_release']}' is not supported; "
                    "GenOS builds Debian 12 (bookworm) and 13 (trixie).",
                    ("bookworm", "trixie"),
                    "bookworm",
                )
            )
        said = ent.evidence.get("release")
        self.note(
            "base.release",
            release,
            f"You asked for '{said}'."
            if said
            else "Debian 12 (bookworm), the current stable release, is the default.",
        )
        return {"distribution": "debian", "release": release}

    def _foreign(self, release: str) -> str:
        """Refuse an OS GenOS has no image of; ask about a Linux it could replace."""
        ent = self.ent
        foreign = [o for o in ent.foreign_os if not (o == "mint" and ent.distribution)]
        for name in foreign:
            if name not in _LINUX_LIKE:
                self.refuse(
                    "base.distribution",
                    f"'{ent.evidence.get(f'os:{name}', name)}': {_label(name)} is not "
                    f"available: no {_label(name)} image source is configured; GenOS builds "
                    "Debian (your own disk image can boot in a VM: `genos images add`)",
                )
        if not foreign or self.violations or ent.distribution is not None:
            return release
        answer = self.answers.get("base.distribution")
        if answer in {"bookworm", "trixie"}:
            return answer
        self.questions.append(
            Question(
                "base.distribution",
                f"'{ent.evidence.get(f'os:{foreign[0]}', foreign[0])}': "
                f"{_label(foreign[0])} is not an image source here; "
                "GenOS builds Debian. Use Debian instead?",
                ("bookworm", "trixie"),
                "bookworm",
            )
        )
        return release

    def _user_image(self, name: str) -> dict[str, str]:
        # The composer sees no host state: whether `name` is registered is
        # checked where the environment is provisioned (the VM driver).
        self.note(
            "base.image",
            name,
            f"You asked for your own image ('{self.ent.evidence['user_image']}'): it boots "
            "as it is, with nothing of GenOS installed into it. It must be registered on "
            f"the host with `genos images add {name} FILE`; that is checked when it starts.",
        )
        return {"distribution": "debian", "release": "bookworm", "image": name}

    def network(self, res: Resolved) -> dict[str, Any]:
        """The network section: none, internet, tor or an allowlist, with its reason."""
        ent, said = self.ent, dict(self.ent.network)
        if res.forced_mode:
            said.setdefault(res.forced_mode[0], res.forced_mode[1])
        if ent.net.no_tor and "tor" in said:
            self.refuse(
                "network.mode",
                f"'{ent.net.no_tor}' rules Tor out, but '{said['tor']}' needs network mode tor",
            )
        if "none" in said and "allowlist" in said and not _says_offline(said["none"]):
            # "no access except example.com": the exception is what is allowed.
            del said["none"]
        if "none" in said:
            return self._no_network(said, res)
        if "tor" in said and "allowlist" in said:
            self.refuse(
                "network.mode",
                "Tor and an address allowlist cannot both hold: Tor hides where traffic goes",
            )
        if "tor" in said:
            self.note(
                "network.mode",
                "tor",
                f"'{said['tor']}': all traffic goes through a Tor "
                "daemon outside the environment; nothing else, DNS included, gets out.",
            )
            return {"mode": NetworkMode.TOR}
        if "allowlist" in said:
            self.note("network.mode", "allowlist", f"Only {said['allowlist']} is reachable.")
            return {
                "mode": NetworkMode.ALLOWLIST,
                "domains": ent.domains,
                "allow": [{"cidr": c, "ports": p} for c, p in ent.allow],
            }
        if "internet" in said or ent.browse_web or res.needs_network:
            return self._internet(said, res)
        return self._unasked()

    def _no_network(self, said: dict[str, str], res: Resolved) -> dict[str, Any]:
        ent = self.ent
        others = [f"{m} ('{e}')" for m, e in said.items() if m != "none"]
        if ent.browse_web:
            others.append(f"browsing the web ('{ent.browse_web}')")
        if others:
            self.refuse(
                "network.mode",
                f"'{said['none']}' means no network, but the request "
                f"also asks for {' and '.join(others)}",
            )
        needs = (
            f" ({', '.join(res.needs_network)} will have no network.)" if res.needs_network else ""
        )
        self.note("network.mode", "none", f"You asked for '{said['none']}': loopback only.{needs}")
        return {"mode": NetworkMode.NONE}

    def _internet(self, said: dict[str, str], res: Resolved) -> dict[str, Any]:
        reason = (
            f"You asked for '{said['internet']}'."
            if "internet" in said
            else f"'{self.ent.browse_web}' needs the network."
            if self.ent.browse_web
            else f"{', '.join(res.needs_network)} needs the network."
        )
        self.note(
            "network.mode",
            "internet",
            f"{reason} Outbound only, through NAT; no inbound, no host or private addresses.",
        )
        return {"mode": NetworkMode.INTERNET}

    def _unasked(self) -> dict[str, Any]:
        hedge = self.ent.net.hedge
        if hedge:
            answer = self.answers.get("network.mode")
            if answer == "internet":
                self.note("network.mode", "internet", f"You chose internet for '{hedge}'.")
                return {"mode": NetworkMode.INTERNET}
            if answer != "none":
                self.questions.append(
                    Question(
                        "network.mode",
                        f"You were unsure about '{hedge}'. Should the environment reach the "
                        "internet (outbound only) or have no network?",
                        ("none", "internet"),
                        "none",
                    )
                )
        self.note(
            "network.mode",
            "none",
            "Nothing asked for needs the network, so it has none "
            "(least privilege); ask for 'internet access' to allow it.",
        )
        return {"mode": NetworkMode.NONE}

    def tier(self, protocol: str, needs: tuple[str, str] | None = None) -> Tier:
        """The isolation tier: the weakest that every wish and app allows."""
        ent = self.ent
        if ent.user_image is not None:
            return self._user_image_tier(ent.user_image)
        explicit = Tier(ent.tier) if ent.tier else None
        tier = explicit or Tier.CONTAINER
        reason = (
            f"You asked for '{ent.evidence.get('tier', tier.value)}'."
            if explicit
            else ("Containers start fastest; nothing asked for a stronger wall.")
        )
        if ent.tier_hint and _STRENGTH.index(tier) < _STRENGTH.index(Tier.MICROVM):
            tier = Tier.MICROVM
            reason = (
                f"'{ent.tier_hint}': untrusted content runs behind a microVM's own kernel, "
                "a stronger wall than a container."
            )
        if needs and _STRENGTH.index(tier) < _STRENGTH.index(Tier(needs[0])):
            tier = Tier(needs[0])
            reason = f"{needs[1]} needs a kernel of its own, so this runs as a {tier.value}."
        if protocol == "spice" and tier in (Tier.CONTAINER, Tier.GVISOR):
            tier = Tier.VM
            reason = "SPICE is served by QEMU, so this runs as a full VM."
        self.note("tier", tier.value, reason)
        return tier

    def _user_image_tier(self, name: str) -> Tier:
        if self.ent.tier not in (None, Tier.VM.value):
            self.refuse(
                "tier",
                f"your own image '{name}' boots only in a full VM, not a {self.ent.tier}: "
                "containers, gVisor and microVMs run only systems GenOS builds",
            )
        self.note(
            "tier",
            Tier.VM.value,
            f"Your image '{name}' brings its own operating system and kernel, so it boots "
            "in a full VM (a q35 machine with devices any OS can drive); containers, gVisor "
            "and microVMs run only systems GenOS builds.",
        )
        return Tier.VM

    def installs_nothing(self, res: Resolved) -> None:
        """Refuse apps next to a user image: nothing can be installed into it."""
        name = self.ent.user_image
        wanted = [app.name for app in res.apps] + [q.field for q in res.questions]
        if name is not None and wanted:
            self.refuse(
                "apps",
                f"nothing can be installed into your own image '{name}' (asked: "
                f"{', '.join(wanted)}): GenOS cannot add software to an operating system "
                "it did not build; install it inside the VM",
            )

    def resources(self, host: HostLimits) -> dict[str, Any]:
        """CPUs, memory and disk asked for, refused beyond what the host can give."""
        ent, out = self.ent, {}
        if ent.cpus is not None:
            out["cpus"] = ent.cpus
            extra = (
                (
                    f" This host has {host.cpus}; the environment gets at most that much CPU "
                    "time here."
                )
                if ent.cpus > host.cpus
                else ""
            )
            self.note("resources.cpus", ent.cpus, f"You asked for '{ent.evidence['cpus']}'.{extra}")
        for key, limit, label in (
            ("memory", host.memory_mb, "memory"),
            ("disk", host.disk_mb, "disk"),
        ):
            value = getattr(ent, f"{key}_mb")
            if value is None:
                continue
            if value > limit:
                self.refuse(
                    f"resources.{key}_mb",
                    f"'{ent.evidence[key]}' of {label} is more "
                    f"than this host can ever give ({_gib(limit)} at most)",
                )
            out[f"{key}_mb"] = min(value, limit)
            self.note(f"resources.{key}_mb", value, f"You asked for '{ent.evidence[key]}'.")
        return out

    def lifetime(self) -> dict[str, Any]:
        """TTL and idle timeout asked for."""
        ent, out = self.ent, {}
        if ent.ttl_seconds is not None:
            out["ttl_seconds"] = ent.ttl_seconds
            self.note(
                "lifetime.ttl_seconds",
                ent.ttl_seconds,
                f"'{ent.evidence['ttl']}': terminated after that.",
            )
        if ent.idle_seconds is not None:
            out["idle_timeout_seconds"] = ent.idle_seconds
            self.note(
                "lifetime.idle_timeout_seconds",
                ent.idle_seconds,
                f"'{ent.evidence['idle']}': suspended when idle that long.",
            )
        return out

    def persistence(self) -> dict[str, Any]:
        """Ephemeral, or a (possibly encrypted) volume for the home directory."""
        ent = self.ent
        if ent.persist and ent.ephemeral:
            self.refuse(
                "persistence.mode",
                f"'{ent.ephemeral}' and '{ent.persist}' contradict "
                "each other: keep files or keep nothing",
            )
        if not ent.persist:
            self.note(
                "persistence.mode",
                "ephemeral",
                "Nothing is kept after the environment "
                "ends" + (f" ('{ent.ephemeral}')." if ent.ephemeral else "."),
            )
            return {"mode": "ephemeral"}
        volume = ent.volume or "home"
        self.note(
            "persistence.mode",
            "volume",
            f"'{ent.persist}': your home lives on volume "
            f"'{volume}'" + (", encrypted at rest." if ent.encrypted else "."),
        )
        return {"mode": "volume", "volume": volume, "encrypted": ent.encrypted}

    def security(self) -> dict[str, Any]:
        """Clipboard, file transfer and recording; host access refused with its words."""
        ent, out = self.ent, dict[str, Any]()
        for field_name, reason in ent.refusals.violations:
            self.refuse(field_name, reason)
        for field_name, value, rationale in ent.refusals.notes:
            self.note(field_name, value, rationale)
        untrusted = ent.tier_hint is not None
        out["clipboard"] = ent.clipboard or ("none" if untrusted else "to_env")
        out["file_transfer"] = ent.file_transfer or "to_env"
        out["recording"] = ent.recording
        self.note(
            "security.clipboard",
            out["clipboard"],
            "As you asked."
            if ent.clipboard
            else "Untrusted content: no clipboard either way."
            if untrusted
            else "Paste into the environment only (safe default).",
        )
        return out

    def protocol(self) -> str:
        """The display protocol; a device of the user's own computer asks for SPICE."""
        ent = self.ent
        device = ent.refusals.device
        if ent.protocol or device is None:
            return ent.protocol or "vnc"
        answer = self.answers.get("display.protocol")
        if answer in ("spice", "vnc"):
            return answer
        self.questions.append(
            Question(
                "display.protocol",
                f"'{device}': GenOS passes no device of its host into an environment, but a "
                "SPICE viewer can redirect a USB device of your own computer into a VM. "
                "Use a VM over SPICE (spice), or go on without it (vnc)?",
                ("spice", "vnc"),
                "spice",
            )
        )
        return "vnc"


def _label(os_name: str) -> str:
    return {"macos": "macOS", "freebsd": "BSD", "chromeos": "ChromeOS"}.get(
        os_name, os_name.capitalize()
    )


def _says_offline(words: str) -> bool:
    return any(re.search(p, words) for p in NET_NONE)


def _gib(mb: int) -> str:
    return f"{mb / 1024:.1f} GiB"
