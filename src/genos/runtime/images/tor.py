"""Firefox ESR set up as GenOS's "Tor Browser": every request through the Tor gateway.

Debian's main archive has no Tor Browser, so an environment that asks for it
(or runs in network mode ``tor`` with Firefox ESR) gets Firefox ESR with
locked preferences: SOCKS5 to the Tor daemon on the environment's gateway,
DNS resolved by Tor, and the known leaks (WebRTC, prefetch, speculative
connections, geolocation, IPv6, DNS over HTTPS) turned off. Firefox reads
``general.config.filename`` from its ``defaults/pref`` directory and then
applies ``lockPref`` lines from that file, which the user cannot change.
"""

from __future__ import annotations

import json

from genos.runtime.images.steps import FileSpec, Step
from genos.spec import EnvironmentSpec, NetworkMode

# The Tor daemon on the environment's side of its network namespace
# (genos.sandbox's tor mode listens there).
TOR_SOCKS_HOST = "10.152.152.1"
TOR_SOCKS_PORT = 9050

FIREFOX_DIR = "/usr/lib/firefox-esr"
AUTOCONFIG_PATH = f"{FIREFOX_DIR}/defaults/pref/genos-autoconfig.js"
LOCKED_PREFS_PATH = f"{FIREFOX_DIR}/genos.cfg"
TOR_BROWSER_NAMES = {"tor browser", "tor-browser", "torbrowser"}

LOCKED_PREFS: dict[str, bool | int | str] = {
    # Every connection through Tor's SOCKS5 port, names resolved by Tor.
    "network.proxy.type": 1,
    "network.proxy.socks": TOR_SOCKS_HOST,
    "network.proxy.socks_port": TOR_SOCKS_PORT,
    "network.proxy.socks_version": 5,
    "network.proxy.socks_remote_dns": True,
    "network.proxy.no_proxies_on": "",
    "network.proxy.allow_hijacking_localhost": True,
    "network.proxy.failover_direct": False,
    "network.proxy.share_proxy_settings": False,
    "network.proxy.http": "",
    "network.proxy.ssl": "",
    "network.trr.mode": 5,
    # Leaks around the proxy.
    "media.peerconnection.enabled": False,
    "media.peerconnection.ice.default_address_only": True,
    "media.peerconnection.ice.no_host": True,
    "media.peerconnection.ice.proxy_only_if_behind_proxy": True,
    "media.navigator.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.dns.disablePrefetchFromHTTPS": True,
    "network.dns.disableIPv6": True,
    "network.prefetch-next": False,
    "network.predictor.enabled": False,
    "network.http.speculative-parallel-limit": 0,
    "browser.urlbar.speculativeConnect.enabled": False,
    "browser.places.speculativeConnect.enabled": False,
    "geo.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "browser.send_pings": False,
    "beacon.enabled": False,
    "webgl.disabled": True,
    # Fingerprinting and phoning home.
    "privacy.resistFingerprinting": True,
    "privacy.firstparty.isolate": True,
    "toolkit.telemetry.enabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "app.normandy.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
}

AUTOCONFIG = """\
// GenOS: load the locked preferences in genos.cfg.
pref("general.config.filename", "genos.cfg");
pref("general.config.obscure_value", 0);
"""


def locked_prefs_file() -> str:
    """``genos.cfg``: one ``lockPref`` line per entry of :data:`LOCKED_PREFS`."""
    # Firefox skips the first line of an autoconfig file.
    lines = ["// GenOS: Firefox ESR through the Tor gateway; these cannot be changed."]
    lines += [f"lockPref({json.dumps(k)}, {json.dumps(v)});" for k, v in LOCKED_PREFS.items()]
    return "\n".join(lines) + "\n"


def tor_firefox_step() -> Step:
    """The named, versioned step that writes the two files."""
    return Step(
        "firefox-esr-tor",
        1,
        files=(
            FileSpec(AUTOCONFIG_PATH, AUTOCONFIG),
            FileSpec(LOCKED_PREFS_PATH, locked_prefs_file()),
        ),
    )


def wants_tor_firefox(spec: EnvironmentSpec) -> bool:
    """Whether ``spec``'s Firefox ESR must be locked to the Tor gateway.

    Args:
        spec: the environment.

    Returns:
        True when Firefox ESR is among its packages and it has the Tor Browser
        app or network mode ``tor``.
    """
    if "firefox-esr" not in spec.packages:
        return False
    named = any(app.name.strip().lower() in TOR_BROWSER_NAMES for app in spec.apps)
    return named or spec.network.mode is NetworkMode.TOR


def tor_steps(spec: EnvironmentSpec) -> list[Step]:
    """The apps layer's Tor steps for ``spec`` (none or one)."""
    return [tor_firefox_step()] if wants_tor_firefox(spec) else []
