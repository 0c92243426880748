"""Which processes still run: zombies have exited, and a reused pid is not the same process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

from genos.runtime import processes


def test_a_zombie_has_exited_and_a_live_process_has_not() -> None:
    """A child killed but not yet reaped (state Z) no longer counts as running; before, it did."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        taken = processes.snapshot([child.pid])
        assert processes.still_running(taken) == [child.pid]
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while processes.state(child.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.005)
        assert processes.state(child.pid) == "Z"  # not reaped: its entry is still there
        assert processes.still_running(taken) == []
        assert asyncio.run(processes.wait_exited(taken, 0.1)) == []
    finally:
        child.kill()
        child.wait()
    assert processes.state(child.pid) is None


def test_a_pid_with_another_start_time_is_another_process() -> None:
    """A snapshot's pid whose start time differs (the pid was reused) is not waited for."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        (started,) = processes.snapshot([child.pid]).values()
        assert processes.running(child.pid, started)
        assert not processes.running(child.pid, started + 1)
        began = time.monotonic()
        left = asyncio.run(processes.wait_exited({child.pid: started}, 0.2))
        assert left == [child.pid]
        assert time.monotonic() - began >= 0.2
    finally:
        child.kill()
        child.wait()
