"""The composer and the owner's own disk images: a named image means a full VM booting it."""

from __future__ import annotations

import pytest

from genos.composer import Composed, Rejection, compose
from genos.composer.knowledge import HostLimits, Knowledge
from genos.spec import NetworkMode, Tier


def decision(result: Composed, field: str) -> str:
    """The rationale the spec gives for ``field``."""
    return next(d.rationale for d in result.spec.provenance.decisions if d.field == field)


@pytest.mark.parametrize(
    ("prompt", "name"),
    [
        ("boot my image win-test", "win-test"),
        ("run my disk image foo", "foo"),
        ("Boot my Windows 11 image win11 with 4GB of RAM", "win11"),
        ("start the iso called rescue-2h", "rescue-2h"),
        ("launch my qcow2 'lab-1'", "lab-1"),
    ],
)
def test_a_named_user_image_boots_in_a_vm(
    prompt: str, name: str, kb: Knowledge, host: HostLimits
) -> None:
    """A request naming the owner's image gets tier vm with base.image set, no apps, no
    network, and rationales saying which image and why a full VM."""
    result = compose(prompt, knowledge=kb, host=host)
    assert isinstance(result, Composed), result
    spec = result.spec
    assert (spec.base.image, spec.tier, spec.packages) == (name, Tier.VM, [])
    assert spec.network.mode is NetworkMode.NONE
    assert f"genos images add {name} FILE" in decision(result, "base.image")
    assert decision(result, "tier").startswith(
        f"Your image '{name}' brings its own operating system and kernel, so it boots in a full VM"
    )


def test_memory_and_lifetime_still_apply(kb: Knowledge, host: HostLimits) -> None:
    """Resources and lifetime are read as for any request; the OS word is the image's."""
    result = compose("boot my windows image win11 with 4gb of ram for 2 hours", knowledge=kb,
                     host=host)  # fmt: skip
    assert isinstance(result, Composed), result
    assert (result.spec.resources.memory_mb, result.spec.lifetime.ttl_seconds) == (4096, 7200)


@pytest.mark.parametrize(
    ("prompt", "field", "words"),
    [
        ("boot my image foo in a container", "tier", "boots only in a full VM, not a container"),
        ("boot my iso rescue with firefox", "apps", "nothing can be installed into your own image"),
        ("boot my image win-test with a pdf reader", "apps", "it did not build"),
    ],
)
def test_user_image_refusals(
    prompt: str, field: str, words: str, kb: Knowledge, host: HostLimits
) -> None:
    """A user image in a weaker tier, or with apps to install into it, is refused, once."""
    result = compose(prompt, knowledge=kb, host=host)
    assert isinstance(result, Rejection), result
    assert [(v.field, words in v.reason) for v in result.violations] == [(field, True)]


@pytest.mark.parametrize(
    "prompt", ["open my image editor", "a photo editor for my image files", "Windows 11"]
)
def test_other_image_words_are_not_a_user_image(
    prompt: str, kb: Knowledge, host: HostLimits
) -> None:
    """'my image editor', 'my image files' and a bare OS name name no user image."""
    result = compose(prompt, knowledge=kb, host=host)
    spec = result.spec if isinstance(result, Composed) else None
    assert spec is None or spec.base.image is None
    if prompt == "Windows 11":
        assert isinstance(result, Rejection)
