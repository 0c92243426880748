"""Property tests of negation: a negated network is never granted, a negated app never installed.

The first two tests run every catalog app against every way of saying "no
network" the tests know; hypothesis then varies the wording around them
(position, case, punctuation, filler) and pairs apps at random.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genos.composer import Clarification, Composed, Rejection, Result, compose
from genos.composer.catalog import CatalogApp, load
from genos.composer.knowledge import HostLimits, Knowledge

pytestmark = pytest.mark.network  # resolves names against Debian's cached index

CATALOG = load()
APPS = sorted(CATALOG.apps.values(), key=lambda a: a.id)
NO_NETWORK = (
    "no internet",
    "no network access",
    "without internet",
    "without any network",
    "it should not have internet",
    "it must never go online",
    "don't let it reach the internet",
    "do not connect it to the network",
    "internet: no",
    "network disabled",
    "networking off",
    "internet not needed",
    "offline",
    "air-gapped",
    "cut off from the net",
    "keep it off the internet",
    "no wifi",
    "make sure it cannot phone home",
    "not connected to anything",
    "neither internet nor clipboard",
)
JOINS = ("{a} but {n}", "{a}, {n}", "{n}: {a}", "{n}. {a} please", "{a} and {n}", "{a}; {n}")
NEGATED_APP = (
    "{a} but not {b}",
    "{a}, no {b}",
    "{a} without {b}",
    "{a} instead of {b}",
    "not {b}, {a} please",
    "{a}. I don't want {b}",
    "{a} and {b}? no {b}",
    "anything but {b}; {a}",
)
SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def said(app: CatalogApp) -> str:
    """How a person names ``app``: its first alias, else its name."""
    return app.aliases[0] if app.aliases else app.name.lower()


def network_mode(result: Result) -> str | None:
    """The network mode a result would grant (None for a rejection: nothing is granted)."""
    if isinstance(result, Rejection):
        return None
    spec = result.spec if isinstance(result, Composed) else result.draft
    return spec.network.mode.value


def packages(result: Result) -> set[str]:
    """The packages a result would install (none for a rejection)."""
    if isinstance(result, Composed):
        return set(result.spec.packages)
    if isinstance(result, Clarification):
        return set(result.draft.packages)
    return set()


@pytest.mark.parametrize("phrase", NO_NETWORK)
def test_no_catalog_app_gets_a_negated_network(
    phrase: str, kb: Knowledge, host: HostLimits
) -> None:
    """For every catalog app A, 'A but <no network>' grants no network (or is refused)."""
    granted = {}
    for app in APPS:
        mode = network_mode(compose(f"{said(app)} but {phrase}", knowledge=kb, host=host))
        if mode not in (None, "none"):
            granted[app.id] = mode
    assert granted == {}


@pytest.mark.parametrize("template", NEGATED_APP)
def test_no_negated_catalog_app_is_installed(
    template: str, kb: Knowledge, host: HostLimits
) -> None:
    """For every catalog app B next to another app A, a negated B is never installed."""
    installed = {}
    anchor = CATALOG.apps["vim"]
    for app in APPS:
        own = set(app.packages_for("bookworm"))
        if not own or app.id == anchor.id:
            continue
        prompt = template.format(a=said(anchor), b=said(app))
        got = packages(compose(prompt, knowledge=kb, host=host))
        if own <= got:
            installed[app.id] = prompt
    assert installed == {}


WORDINGS = st.fixed_dictionaries(
    {
        "app": st.sampled_from(APPS),
        "phrase": st.sampled_from(NO_NETWORK),
        "join": st.sampled_from(JOINS),
        "shout": st.booleans(),
        "filler": st.sampled_from(("", "please ", "hi, ", "i need ", "give me a desktop with ")),
    }
)


@SETTINGS
@given(wording=WORDINGS)
def test_negated_network_in_any_position_is_never_granted(
    wording: dict[str, Any], kb: Knowledge, host: HostLimits
) -> None:
    """Wherever the negated network stands and however it is cased, no network is granted."""
    text = wording["filler"] + wording["join"].format(a=said(wording["app"]), n=wording["phrase"])
    result = compose(text.upper() if wording["shout"] else text, knowledge=kb, host=host)
    assert network_mode(result) in (None, "none")


@SETTINGS
@given(
    pair=st.lists(st.sampled_from(APPS), min_size=2, max_size=2, unique_by=lambda a: a.id),
    template=st.sampled_from(NEGATED_APP),
)
def test_negated_app_of_any_pair_is_never_installed(
    pair: list[CatalogApp], template: str, kb: Knowledge, host: HostLimits
) -> None:
    """Whatever two catalog apps are named, the negated one's packages are not all installed
    unless the kept one needs them too."""
    kept, negated = pair
    own = set(negated.packages_for("bookworm"))
    shared = own & set(kept.packages_for("bookworm"))
    result = compose(template.format(a=said(kept), b=said(negated)), knowledge=kb, host=host)
    assert own - shared == set() or not (own - shared) <= packages(result)
