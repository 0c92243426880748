"""Firefox ESR that starts ready to use: enterprise policies and a GenOS start page.

Firefox reads ``distribution/policies.json`` beside its binary: no first-run,
welcome, what's-new or privacy-notice pages, no default-browser question, no
telemetry or studies, and a local start page as the home page (it needs no
network, so it works in every network mode). The Tor settings
(:mod:`genos.runtime.images.tor`) are separate locked preferences and apply
as before.
"""

from __future__ import annotations

import json

from genos.runtime.images.steps import FileSpec, Step
from genos.spec import EnvironmentSpec

POLICIES_PATH = "/usr/lib/firefox-esr/distribution/policies.json"
START_PAGE_PATH = "/usr/share/genos/start.html"
START_PAGE_TITLE = "GenOS"
HOMEPAGE = f"file://{START_PAGE_PATH}"

POLICIES: dict[str, object] = {
    "policies": {
        "DisableTelemetry": True,
        "DisableFirefoxStudies": True,
        "DisablePocket": True,
        "DisableFeedbackCommands": True,
        "DisableProfileImport": True,
        "DisableAppUpdate": True,
        "DontCheckDefaultBrowser": True,
        "NoDefaultBookmarks": True,
        "OverrideFirstRunPage": "",
        "OverridePostUpdatePage": "",
        "Homepage": {"URL": HOMEPAGE, "StartPage": "homepage"},
        "UserMessaging": {
            "WhatsNew": False,
            "ExtensionRecommendations": False,
            "FeatureRecommendations": False,
            "UrlbarInterventions": False,
            "SkipOnboarding": True,
            "MoreFromMozilla": False,
        },
        "FirefoxHome": {
            "TopSites": False,
            "SponsoredTopSites": False,
            "Highlights": False,
            "Pocket": False,
            "SponsoredPocket": False,
            "Snippets": False,
        },
        "Preferences": {
            "browser.aboutwelcome.enabled": {"Value": False, "Status": "locked"},
            "datareporting.policy.dataSubmissionPolicyBypassNotification": {
                "Value": True,
                "Status": "locked",
            },
        },
    }
}

START_PAGE = f"""\
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{START_PAGE_TITLE}</title>
<style>
body {{ background: #1d2b3a; color: #e8eef5; font: 18px/1.5 sans-serif;
       display: grid; place-items: center; height: 90vh; margin: 0; }}
h1 {{ font-size: 64px; margin: 0; letter-spacing: 4px; }}
</style></head>
<body><main><h1>GenOS</h1>
<p>Type an address above. Files you download land in ~/Downloads.</p></main></body>
</html>
"""


def firefox_step() -> Step:
    """The named, versioned step that writes the policies and the start page."""
    return Step(
        "firefox-esr-policies",
        1,
        files=(
            FileSpec(POLICIES_PATH, json.dumps(POLICIES, indent=2) + "\n"),
            FileSpec(START_PAGE_PATH, START_PAGE),
        ),
    )


def firefox_steps(spec: EnvironmentSpec) -> list[Step]:
    """The apps layer's Firefox steps for ``spec`` (none, or one when it has Firefox ESR)."""
    return [firefox_step()] if "firefox-esr" in spec.packages else []
