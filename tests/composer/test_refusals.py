"""What GenOS will not do: refused or asked about, naming the words that asked."""

from __future__ import annotations

import pytest

from genos.composer import Clarification, Composed, Rejection, compose
from genos.composer.knowledge import HostLimits, Knowledge
from genos.composer.language import read
from genos.composer.normalise import normalise
from genos.composer.refusals import check

pytestmark = pytest.mark.network  # composes against Debian's cached index


def refused(text: str) -> list[tuple[str, str]]:
    norm = normalise(text)
    return check(norm.text, read(norm.text)).violations


@pytest.mark.parametrize(
    ("text", "words", "why"),
    [
        ("mount my home folder into the environment", "mount my home folder", "no directory"),
        ("give the vm access to /srv/data on the host", "access to /srv/data", "no directory"),
        ("bind mount /var/www into a container", "bind mount /var/www", "no directory"),
        ("pass my gpu through to the vm", "pass my gpu", "devices of the host"),
        ("attach /dev/ttyUSB0 to flash my arduino", "/dev/ttyusb0", "devices of the host"),
        ("run it in privileged mode", "privileged", "host mounts, privileged mode"),
        ("expose the docker socket", "docker socket", "host mounts, privileged mode"),
    ],
)
def test_host_access_is_refused_naming_it(text: str, words: str, why: str) -> None:
    """Host directories, host devices and host privileges are refused, quoting the request."""
    [(field, reason)] = refused(text)
    assert field == "security"
    assert reason.startswith(f"'{words}'")
    assert why in reason


def test_negated_host_access_asks_for_nothing() -> None:
    """'no privileged mode needed' and 'don't mount anything' are no requests for the host."""
    assert refused("firefox, no privileged mode needed, don't mount my home folder") == []


def test_files_from_my_laptop_compose_with_a_note(kb: Knowledge, host: HostLimits) -> None:
    """Working on files of one's computer is no mount: the rationale says how files get in."""
    result = compose("open files from my laptop in libreoffice", knowledge=kb, host=host)
    assert isinstance(result, Composed)
    notes = [
        d.rationale for d in result.spec.provenance.decisions if d.field.startswith("security.")
    ]
    assert "'files from my laptop': nothing of your computer is mounted" in " ".join(notes)


def test_a_device_of_ones_own_asks_about_spice(kb: Knowledge, host: HostLimits) -> None:
    """'my usb stick' asks whether to use a VM over SPICE; answering spice gives one."""
    asked = compose("use my usb stick with gimp", knowledge=kb, host=host)
    assert isinstance(asked, Clarification)
    assert [(q.field, q.options) for q in asked.questions] == [
        ("display.protocol", ("spice", "vnc"))
    ]
    assert "'my usb stick'" in asked.questions[0].question
    answered = compose(
        "use my usb stick with gimp", answers={"display.protocol": "spice"}, knowledge=kb, host=host
    )
    assert isinstance(answered, Composed)
    assert (answered.spec.display.protocol.value, answered.spec.tier.value) == ("spice", "vm")


def test_a_rejection_names_what_was_asked(kb: Knowledge, host: HostLimits) -> None:
    """The refusal of a host directory quotes it and says how files do get in."""
    result = compose("firefox with my ~/Downloads directory shared in", knowledge=kb, host=host)
    assert isinstance(result, Rejection)
    [violation] = result.violations
    assert violation.field == "security"
    assert "~/downloads" in violation.reason
    assert "upload files through the viewer" in violation.reason
