"""Conformance checks every runtime driver passes (like trio's ``check_one_way_stream``).

``await check_driver(factory, spec)`` drives one environment through the whole
lifecycle and every wrong call, and returns the states it saw, so a driver's
own test can pin the exact sequence::

    states = await check_driver(lambda: OCIDriver(store), spec)
    assert states == EXPECTED_STATES
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path

from genos.errors import CapabilityError, NotFoundError, StateError
from genos.ids import new_env_id
from genos.runtime.driver import Driver, EnvState
from genos.spec import EnvironmentSpec

RFB_BANNER = b"RFB 003.008\n"

DriverFactory = Callable[[], Driver | Awaitable[Driver]]

EXPECTED_STATES = [
    EnvState.CREATED,
    EnvState.RUNNING,
    EnvState.SUSPENDED,
    EnvState.RUNNING,
    EnvState.CREATED,
]
"""What :func:`check_driver` sees: the main environment, then one never started."""


class ConformanceError(AssertionError):
    """A driver broke the contract of :class:`~genos.runtime.driver.Driver`."""


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise ConformanceError(what)


async def _expect_state_error(
    call: Awaitable[object], current: EnvState, required: str, what: str
) -> None:
    try:
        await call
    except StateError as exc:
        _expect(exc.current == current.value, f"{what}: current {exc.current!r} != {current}")
        _expect(exc.required == (required,), f"{what}: required {exc.required} != {required!r}")
        return
    raise ConformanceError(f"{what}: no StateError")


async def _expect_not_found(call: Awaitable[object], what: str) -> None:
    try:
        await call
    except NotFoundError:
        return
    raise ConformanceError(f"{what}: no NotFoundError")


async def read_banner(path: Path, timeout: float = 5.0) -> bytes:
    """The first 12 bytes a display socket sends (the RFB ProtocolVersion).

    Args:
        path: the unix socket.
        timeout: seconds.

    Returns:
        What arrived (fewer bytes if the server hung up early).
    """
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        return await asyncio.wait_for(reader.readexactly(len(RFB_BANNER)), timeout)
    except asyncio.IncompleteReadError as exc:
        return exc.partial
    finally:
        writer.close()
        await writer.wait_closed()


async def _state(driver: Driver, env_id: str, seen: list[EnvState]) -> EnvState:
    state = (await driver.inspect(env_id)).state
    seen.append(state)
    return state


async def _check_wrong_calls_when_created(
    driver: Driver, env_id: str, spec: EnvironmentSpec
) -> None:
    await _expect_state_error(
        driver.create(env_id, spec), EnvState.CREATED, "absent", "create twice"
    )
    await _expect_state_error(
        driver.suspend(env_id), EnvState.CREATED, "running", "suspend before start"
    )
    await _expect_state_error(
        driver.resume(env_id), EnvState.CREATED, "suspended", "resume before start"
    )


async def _check_running(driver: Driver, env_id: str, seen: list[EnvState]) -> None:
    _expect(await _state(driver, env_id, seen) is EnvState.RUNNING, "not running after start")
    sock = driver.display(env_id)
    _expect(sock.exists(), f"display socket {sock} missing after start")
    banner = await read_banner(sock)
    _expect(banner == RFB_BANNER, f"display answered {banner!r}, not the RFB banner")
    usage = (await driver.inspect(env_id)).usage
    _expect(usage is not None, "no usage for a running environment")
    _expect(driver.usage(env_id) is not None, "usage() has nothing for a running environment")
    await _expect_state_error(driver.start(env_id), EnvState.RUNNING, "created", "start twice")
    await _expect_state_error(
        driver.resume(env_id), EnvState.RUNNING, "suspended", "resume while running"
    )


async def _check_suspend(driver: Driver, env_id: str, seen: list[EnvState]) -> None:
    try:
        await driver.suspend(env_id, to_disk=True)
    except CapabilityError:
        _expect(
            (await driver.inspect(env_id)).state is EnvState.RUNNING,
            "a refused suspend-to-disk changed the state",
        )
    else:
        await driver.resume(env_id)
    await driver.suspend(env_id)
    _expect(await _state(driver, env_id, seen) is EnvState.SUSPENDED, "not suspended")
    await _expect_state_error(
        driver.suspend(env_id), EnvState.SUSPENDED, "running", "suspend twice"
    )
    await _expect_state_error(
        driver.start(env_id), EnvState.SUSPENDED, "created", "start while suspended"
    )
    await driver.resume(env_id)
    _expect(await _state(driver, env_id, seen) is EnvState.RUNNING, "not running after resume")


async def _check_destroyed(driver: Driver, env_id: str) -> None:
    await driver.destroy(env_id)
    await driver.destroy(env_id)  # idempotent
    await _expect_not_found(driver.inspect(env_id), "inspect after destroy")
    await _expect_not_found(driver.start(env_id), "start after destroy")
    _expect(env_id not in await driver.list_ids(), "destroyed id still listed")


async def check_driver(factory: DriverFactory, spec: EnvironmentSpec) -> list[EnvState]:
    """Run the conformance suite against a fresh driver from ``factory``.

    Args:
        factory: makes the driver (plain or awaitable result).
        spec: the environment to run (its image must be available to the driver).

    Returns:
        The states seen, in order (see :data:`EXPECTED_STATES`).

    Raises:
        ConformanceError: the driver broke the contract (the message says how).
    """
    made = factory()
    driver: Driver = await made if inspect.isawaitable(made) else made
    _expect(isinstance(driver, Driver), f"{driver!r} does not implement Driver")
    seen: list[EnvState] = []
    env_id, unstarted = new_env_id(), new_env_id()
    try:
        await _expect_not_found(driver.inspect(env_id), "inspect before create")
        await driver.destroy(env_id)  # destroying nothing is fine
        await driver.create(env_id, spec)
        _expect(await _state(driver, env_id, seen) is EnvState.CREATED, "not created")
        _expect(env_id in await driver.list_ids(), "created id not listed")
        await _check_wrong_calls_when_created(driver, env_id, spec)
        await driver.start(env_id)
        await _check_running(driver, env_id, seen)
        await _check_suspend(driver, env_id, seen)
        await driver.suspend(env_id)
        await _check_destroyed(driver, env_id)  # destroy works on a suspended env
        await driver.create(unstarted, spec)
        await _state(driver, unstarted, seen)
        await _check_destroyed(driver, unstarted)
    finally:
        for leftover in (env_id, unstarted):
            await driver.destroy(leftover)
        await driver.aclose()
    return seen
