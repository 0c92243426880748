"""The in-memory FakeDriver keeps the real drivers' contract."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from genos.errors import CapabilityError, ClosedError, ExternalError, InputError, StateError
from genos.node.local import DemoDriver
from genos.runtime.driver import Driver, EnvState
from genos.runtime.fake import FakeDriver
from genos.spec import EnvironmentSpec
from genos.testing import EXPECTED_STATES, ConformanceError, check_driver, read_banner

SPEC = EnvironmentSpec(name="fake-test")
ENV = "0123456789"


def test_fake_passes_the_conformance_suite(tmp_path: Path) -> None:
    """check_driver sees created, running, suspended, running, created from the fake."""
    states = asyncio.run(check_driver(lambda: FakeDriver(tmp_path), SPEC))
    assert states == EXPECTED_STATES


def test_fake_is_a_driver() -> None:
    """FakeDriver satisfies the runtime-checkable Driver protocol."""
    assert isinstance(FakeDriver(), Driver)


def test_history_pins_the_exact_state_sequence(tmp_path: Path) -> None:
    """A good path and a refused call leave exactly the expected history."""

    async def scenario() -> list[EnvState]:
        driver = FakeDriver(tmp_path)
        await driver.create(ENV, SPEC)
        await driver.start(ENV)
        with pytest.raises(StateError):
            await driver.resume(ENV)
        await driver.suspend(ENV)
        await driver.resume(ENV)
        history = driver.history(ENV)
        await driver.aclose()
        return history

    assert asyncio.run(scenario()) == [
        EnvState.CREATED,
        EnvState.RUNNING,
        EnvState.SUSPENDED,
        EnvState.RUNNING,
    ]


def test_wrong_state_error_names_current_and_required(tmp_path: Path) -> None:
    """Starting twice raises StateError with current 'running' and required 'created'."""

    async def scenario() -> StateError:
        driver = FakeDriver(tmp_path)
        await driver.create(ENV, SPEC)
        await driver.start(ENV)
        try:
            await driver.start(ENV)
        except StateError as exc:
            return exc
        finally:
            await driver.aclose()
        raise AssertionError("no StateError")

    exc = asyncio.run(scenario())
    assert (exc.current, exc.required, exc.action) == ("running", ("created",), "start")


def test_display_serves_the_rfb_banner(tmp_path: Path) -> None:
    """After start, the fake's display socket answers 'RFB 003.008\\n'."""

    async def scenario() -> bytes:
        driver = FakeDriver(tmp_path)
        await driver.create(ENV, SPEC)
        await driver.start(ENV)
        banner = await read_banner(driver.display(ENV))
        await driver.aclose()
        return banner

    assert asyncio.run(scenario()) == b"RFB 003.008\n"


@pytest.mark.parametrize("end", ["destroy", "aclose"])
@pytest.mark.parametrize(
    "viewer",
    [
        (FakeDriver, "video", b"10 80\n", 4),  # the video stream never ends by itself
        (DemoDriver, "display", b"", 12),  # the demo's RFB display waits for our version
    ],
    ids=["fake-video", "demo-display"],
)
def test_ending_the_display_hangs_up_on_connected_viewers(
    tmp_path: Path, end: str, viewer: tuple[type[FakeDriver], str, bytes, int]
) -> None:
    """destroy and aclose end every connection their servers still serve (3.11's
    Server.close leaves them open): a connected viewer reads EOF and no handler is left."""
    make, protocol, ask, first = viewer

    async def scenario() -> tuple[int, int]:
        driver = make(tmp_path)
        try:
            await driver.create(ENV, SPEC)
            await driver.start(ENV)
            env = driver.envs[ENV]
            where = driver.display(ENV) if protocol == "display" else driver.endpoint(ENV, protocol)
            reader, writer = await asyncio.open_unix_connection(where)
            writer.write(ask)
            await reader.readexactly(first)  # the server is serving us
            serving = len(env.connections)
            async with asyncio.timeout(5):  # the server would wait on for ever unless ended
                await (driver.destroy(ENV) if end == "destroy" else driver.aclose())
                await reader.read()  # to EOF: the server hung up
            writer.close()
            await writer.wait_closed()
        finally:
            await driver.aclose()
        return serving, len(env.connections)

    assert asyncio.run(scenario()) == (1, 0)


def test_checkpoint_is_refused_unless_enabled(tmp_path: Path) -> None:
    """suspend(to_disk=True) raises CapabilityError by default and works with checkpoint=True."""

    async def scenario(checkpoint: bool) -> EnvState:
        driver = FakeDriver(tmp_path / str(checkpoint), checkpoint=checkpoint)
        await driver.create(ENV, SPEC)
        await driver.start(ENV)
        try:
            await driver.suspend(ENV, to_disk=True)
        finally:
            state = (await driver.inspect(ENV)).state
            await driver.aclose()
        return state

    with pytest.raises(CapabilityError):
        asyncio.run(scenario(False))
    assert asyncio.run(scenario(True)) is EnvState.SUSPENDED


def test_hook_injects_failures(tmp_path: Path) -> None:
    """A hook that raises on 'start' makes start fail and leaves the env created."""

    def hook(env_id: str, verb: str) -> None:
        if verb == "start":
            raise ExternalError(f"injected failure for {env_id}")

    async def scenario() -> EnvState:
        driver = FakeDriver(tmp_path, hook=hook)
        await driver.create(ENV, SPEC)
        with pytest.raises(ExternalError):
            await driver.start(ENV)
        state = (await driver.inspect(ENV)).state
        await driver.aclose()
        return state

    assert asyncio.run(scenario()) is EnvState.CREATED


def test_closed_driver_refuses_calls(tmp_path: Path) -> None:
    """Any verb after aclose raises ClosedError."""

    async def scenario() -> None:
        driver = FakeDriver(tmp_path)
        await driver.aclose()
        await driver.create(ENV, SPEC)

    with pytest.raises(ClosedError):
        asyncio.run(scenario())


def test_bad_env_id_is_input_error(tmp_path: Path) -> None:
    """An id that is not 10 lower-case alphanumerics is refused as InputError."""
    with pytest.raises(InputError):
        asyncio.run(FakeDriver(tmp_path).create("../etc", SPEC))


def test_conformance_suite_catches_a_broken_driver(tmp_path: Path) -> None:
    """check_driver fails a driver whose display never answers after start."""

    class Silent(FakeDriver):
        async def start(self, env_id: str, *, timeout: float = 30.0) -> None:
            self.envs[env_id].state = EnvState.RUNNING

    with pytest.raises(ConformanceError, match="display socket"):
        asyncio.run(check_driver(lambda: Silent(tmp_path), SPEC))
