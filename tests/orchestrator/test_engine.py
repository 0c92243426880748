"""The engine's lifecycle: good and bad paths, idempotent requests, waiting, events."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from genos import logs
from genos.errors import (
    ClosedError,
    ExternalError,
    NotFoundError,
    StateError,
    WaitTimeoutError,
)
from genos.orchestrator import Engine, Event, FakeClock, Registry, State, User
from tests.orchestrator.conftest import MakeEngine
from tests.orchestrator.doubles import HookedDriver, broken, make_spec
from tests.orchestrator.helpers import steps, story

pytestmark = pytest.mark.anyio
WAIT = 10.0  # seconds; waits return as soon as the state is reached


def verbs(driver: HookedDriver, env_id: str) -> list[str]:
    """The driver verbs called for one environment, in order."""
    return [verb for verb, target in driver.calls if target == env_id and verb != "inspect"]


async def test_good_path_states_and_events(
    engine: Engine, registry: Registry, driver: HookedDriver, alice: User
) -> None:
    """requested -> provisioning -> running -> suspended -> running -> terminated, step by step."""
    driver.gates["create"] = asyncio.Event()
    env = await engine.request(alice.id, make_spec(), request_id="r1")
    assert (env.state, env.host, env.request_id) == (State.PROVISIONING, "test-host", "r1")
    driver.gates["create"].set()
    running = await engine.wait(env.id, State.RUNNING, timeout=WAIT)
    assert running.started == running.created
    assert (await engine.suspend(env.id, actor=alice.id)).state is State.SUSPENDED
    assert (await engine.resume(env.id, actor=alice.id)).state is State.RUNNING
    assert (await engine.terminate(env.id, actor=alice.id)).state is State.TERMINATED
    assert await steps(registry, env.id) == [
        ("requested", "provisioning"),
        ("provisioning", "running"),
        ("running", "suspended"),
        ("suspended", "running"),
        ("running", "terminated"),
    ]
    assert await story(registry, env.id) == [
        ("state", "requested", "requested"),
        ("state", "provisioning", "provisioning: admitted"),
        ("progress", "provisioning", "creating sandbox"),
        ("progress", "provisioning", "image: layer 1/1 built"),
        ("progress", "provisioning", "sandbox ready"),
        ("progress", "provisioning", "display ready"),
        ("state", "running", "running: provisioned"),
        ("state", "suspended", "suspended: suspend requested"),
        ("state", "running", "running: resume requested"),
        ("state", "terminated", "terminated: terminate requested"),
    ]
    assert verbs(driver, env.id) == ["create", "start", "suspend", "resume", "destroy"]
    assert driver.envs == {}
    assert [t.actor for t in await registry.transitions(env.id)][2:] == [alice.id] * 3


async def test_create_failure_fails_with_reason_and_leaves_nothing(
    engine: Engine, registry: Registry, driver: HookedDriver, alice: User
) -> None:
    """A driver create error moves provisioning -> failed with its message; the host is clean."""
    driver.failures["create"] = broken("runc exploded")
    env = await engine.request(alice.id, make_spec())
    failed = await engine.wait(env.id, State.FAILED, timeout=WAIT)
    await driver.called("destroy")
    assert failed.failure_reason == "runc exploded"
    assert await steps(registry, env.id) == [
        ("requested", "provisioning"),
        ("provisioning", "failed"),
    ]
    assert await story(registry, env.id) == [
        ("state", "requested", "requested"),
        ("state", "provisioning", "provisioning: admitted"),
        ("progress", "provisioning", "creating sandbox"),
        ("state", "failed", "failed: runc exploded"),
    ]
    assert verbs(driver, env.id) == ["create", "destroy"]
    assert driver.envs == {}


async def test_start_failure_destroys_what_create_made(
    engine: Engine, driver: HookedDriver, alice: User
) -> None:
    """A start error after a successful create still leaves nothing on the host."""
    driver.failures["start"] = RuntimeError("Xvnc did not answer")
    env = await engine.request(alice.id, make_spec())
    failed = await engine.wait(env.id, State.FAILED, timeout=WAIT)
    await driver.called("destroy")
    assert failed.failure_reason == "driver fake: start failed: RuntimeError: Xvnc did not answer"
    assert verbs(driver, env.id) == ["create", "start", "destroy"]
    assert driver.envs == {}


async def test_twenty_concurrent_requests_with_one_id_make_one_environment(
    engine: Engine, registry: Registry, driver: HookedDriver, alice: User
) -> None:
    """Retries racing each other with the same request id get the same environment."""
    spec = make_spec()
    envs = await asyncio.gather(
        *(engine.request(alice.id, spec, request_id="retry-me") for _ in range(20))
    )
    assert len({env.id for env in envs}) == 1
    await engine.wait(envs[0].id, State.RUNNING, timeout=WAIT)
    assert [e.id for e in await engine.list(alice.id)] == [envs[0].id]
    assert [verb for verb, _ in driver.calls].count("create") == 1


async def test_wait_on_a_failed_environment_is_a_state_error(
    engine: Engine, driver: HookedDriver, alice: User
) -> None:
    """Waiting for running on an environment that failed raises at once."""
    driver.failures["create"] = broken()
    env = await engine.request(alice.id, make_spec())
    await engine.wait(env.id, State.FAILED, timeout=WAIT)
    with pytest.raises(StateError) as caught:
        await engine.wait(env.id, [State.RUNNING, State.SUSPENDED], timeout=WAIT)
    assert (caught.value.current, caught.value.required) == ("failed", ("running", "suspended"))


async def test_wait_times_out(engine: Engine, driver: HookedDriver, alice: User) -> None:
    """A wait that outlives its timeout raises WaitTimeoutError."""
    driver.gates["create"] = asyncio.Event()
    env = await engine.request(alice.id, make_spec())
    with pytest.raises(WaitTimeoutError) as caught:
        await engine.wait(env.id, State.RUNNING, timeout=0.05)
    assert caught.value.code == "timeout"
    driver.gates["create"].set()


async def test_verbs_in_the_wrong_state_raise(
    engine: Engine, driver: HookedDriver, alice: User
) -> None:
    """Suspend needs running, resume needs suspended, terminate needs a non-final state."""
    driver.gates["create"] = asyncio.Event()
    env = await engine.request(alice.id, make_spec())
    with pytest.raises(StateError) as caught:
        await engine.suspend(env.id)
    assert (caught.value.current, caught.value.required) == ("provisioning", ("running",))
    driver.gates["create"].set()
    await engine.wait(env.id, State.RUNNING, timeout=WAIT)
    with pytest.raises(StateError):
        await engine.resume(env.id)
    await engine.terminate(env.id)
    with pytest.raises(StateError) as caught:
        await engine.terminate(env.id)
    assert caught.value.current == "terminated"


async def test_failed_suspend_returns_to_running(
    engine: Engine, registry: Registry, driver: HookedDriver, alice: User
) -> None:
    """A driver suspend error is raised and the environment is recorded running again."""
    env = await engine.request(alice.id, make_spec())
    await engine.wait(env.id, State.RUNNING, timeout=WAIT)
    driver.failures["suspend"] = broken("freezer stuck")
    with pytest.raises(ExternalError):
        await engine.suspend(env.id)
    assert (await engine.get(env.id)).state is State.RUNNING
    assert (await story(registry, env.id))[-1] == (
        "state",
        "running",
        "running: suspend failed: freezer stuck",
    )


async def test_terminate_during_provisioning_cancels_it(
    engine: Engine, registry: Registry, driver: HookedDriver, alice: User
) -> None:
    """Terminating while create is in progress cancels provisioning and leaves nothing."""
    driver.gates["create"] = asyncio.Event()
    env = await engine.request(alice.id, make_spec())
    await driver.called("create")
    done = await engine.terminate(env.id, actor=alice.id)
    assert done.state is State.TERMINATED
    assert await steps(registry, env.id) == [
        ("requested", "provisioning"),
        ("provisioning", "terminated"),
    ]
    assert verbs(driver, env.id) == ["create", "destroy"]
    assert driver.envs == {}


async def test_events_stream_replays_then_follows_live(
    engine: Engine, driver: HookedDriver, alice: User
) -> None:
    """A reader sees the history, then each new event, and the stream ends at a final state."""
    driver.gates["create"] = asyncio.Event()
    env = await engine.request(alice.id, make_spec())
    seen: list[Event] = []

    async def read() -> None:
        async with contextlib.aclosing(engine.events(env.id)) as events:
            async for event in events:
                seen.append(event)

    reader = asyncio.create_task(read())
    driver.gates["create"].set()
    await engine.wait(env.id, State.RUNNING, timeout=WAIT)
    await engine.terminate(env.id)
    await asyncio.wait_for(reader, WAIT)
    assert [e.seq for e in seen] == list(range(1, 9))
    assert [e.message for e in seen][-2:] == [
        "running: provisioned",
        "terminated: terminate requested",
    ]


async def test_events_after_a_seq_without_following(engine: Engine, alice: User) -> None:
    """A reader that has events up to seq 5 gets only the later ones."""
    env = await engine.request(alice.id, make_spec())
    await engine.wait(env.id, State.RUNNING, timeout=WAIT)
    got = [e async for e in engine.events(env.id, after_seq=5, follow=False)]
    assert [(e.seq, e.message) for e in got] == [(6, "display ready"), (7, "running: provisioned")]


async def test_events_of_unknown_environment(engine: Engine) -> None:
    """Streaming an unknown environment raises NotFoundError."""
    with pytest.raises(NotFoundError):
        [e async for e in engine.events("0000000000")]


async def test_unknown_owner_is_refused(engine: Engine) -> None:
    """A request for a user that does not exist raises NotFoundError."""
    with pytest.raises(NotFoundError) as caught:
        await engine.request("ghost", make_spec())
    assert caught.value.kind == "user"


async def test_each_environment_logs_on_its_own_logger(
    engine: Engine, alice: User, caplog: pytest.LogCaptureFixture
) -> None:
    """Lifecycle log lines go to genos.orchestrator.<env_id>."""
    caplog.set_level(logging.INFO, logger="genos.orchestrator")
    env = await engine.request(alice.id, make_spec())
    await engine.wait(env.id, State.RUNNING, timeout=WAIT)
    mine = [r.getMessage() for r in caplog.records if r.name == f"genos.orchestrator.{env.id}"]
    assert mine[0] == f"requested by {alice.id}"
    assert "provisioning -> running by system: provisioned" in mine


def _loggers_of(env_id: str) -> list[str]:
    return [n for n in logging.Logger.manager.loggerDict if n.endswith("." + env_id)]


async def test_an_ended_environment_s_loggers_are_forgotten(
    engine: Engine, driver: HookedDriver, alice: User
) -> None:
    """Once terminated (its destroy done) or failed, no logger named after it is kept (the
    logging module would keep one per module per environment for good)."""
    env = await engine.request(alice.id, make_spec())
    await engine.wait(env.id, State.RUNNING, timeout=WAIT)
    assert _loggers_of(env.id) == [f"genos.orchestrator.{env.id}"]
    await engine.terminate(env.id, actor=alice.id)
    assert _loggers_of(env.id) == []
    driver.failures["create"] = broken("runc exploded")
    failed = await engine.request(alice.id, make_spec())
    await engine.wait(failed.id, State.FAILED, timeout=WAIT)
    await driver.called("destroy")
    await asyncio.sleep(0)  # the destroy's own bookkeeping after the driver call
    assert _loggers_of(failed.id) == []


async def test_a_logger_made_after_an_environment_ended_goes_at_the_next_sweeps(
    make_engine: MakeEngine, clock: FakeClock, alice: User
) -> None:
    """A line logged for an environment after its end makes a fresh logger: the maintenance
    loop's sweep (each reconcile period) forgets it, and so does the sweep after (then the
    id is let go too); a live environment's loggers stay."""
    looping = await make_engine(maintenance=True, tick_interval=30.0, reconcile_interval=60.0)
    env = await looping.request(alice.id, make_spec())
    await looping.wait(env.id, State.RUNNING, timeout=WAIT)
    await looping.terminate(env.id, actor=alice.id)
    logging.getLogger(f"genos.gateway.{env.id}").info("viewer left")
    for _period in (1, 2):  # 30 s: a tick; 60 s: the sweep
        await asyncio.wait_for(clock.sleeping(), WAIT)
        clock.advance(30)
    await _until_gone(f"genos.gateway.{env.id}")
    engine = await make_engine()  # sweeps only when told
    ended, live = (
        await engine.request(alice.id, make_spec()),
        await engine.request(alice.id, make_spec()),
    )
    await engine.wait(ended.id, State.RUNNING, timeout=WAIT)
    await engine.wait(live.id, State.RUNNING, timeout=WAIT)
    await engine.terminate(ended.id, actor=alice.id)
    late = f"genos.gateway.{ended.id}"
    logging.getLogger(f"genos.gateway.{live.id}").info("viewer came")
    for sweep in (1, 2, 3):
        logging.getLogger(late).info("viewer left")
        engine._life.forget_late()
        assert _loggers_of(ended.id) == ([] if sweep < 3 else [late])
    assert sorted(_loggers_of(live.id)) == [f"genos.gateway.{live.id}",
                                            f"genos.orchestrator.{live.id}"]  # fmt: skip
    logs.forget(ended.id)


async def _until_gone(name: str) -> None:
    async with asyncio.timeout(WAIT):
        while True:
            if name not in logging.Logger.manager.loggerDict:
                return
            await asyncio.sleep(0.01)


async def test_a_closed_engine_refuses_requests(make_engine: MakeEngine, alice: User) -> None:
    """request after aclose raises ClosedError."""
    engine = await make_engine()
    await engine.aclose()
    with pytest.raises(ClosedError):
        await engine.request(alice.id, make_spec())
