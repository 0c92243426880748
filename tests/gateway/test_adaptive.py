"""The adaptive controller, driven by a fake clock: slow links step down, fast ones up."""

from __future__ import annotations

from genos.gateway.adaptive import LADDER, AdaptiveController, Tuning


class FakeClock:
    """Monotonic seconds that only move when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frame(
    ctl: AdaptiveController, clock: FakeClock, nbytes: int, transfer: float, back: float
) -> bool:
    """One frame: request, update over ``transfer`` s, next request ``back`` s later."""
    ctl.request_forwarded()
    clock.now += 0.002
    ctl.update_started()
    clock.now += transfer
    ctl.update_finished(nbytes)
    clock.now += back
    return ctl.client_requested()


def test_starts_at_the_middle_of_the_ladder() -> None:
    """Before any sample the controller uses quality 6, compression 4, 20 fps."""
    levels = AdaptiveController(FakeClock()).levels()
    assert (levels.quality, levels.compression, levels.max_fps) == (6, 4, 20.0)


def test_slow_link_lowers_quality_and_frame_rate() -> None:
    """300 ms round trips and 1 Mbit/s walk the ladder to the bottom."""
    clock = FakeClock()
    ctl = AdaptiveController(clock)
    changes = sum(frame(ctl, clock, 125_000, 0.7, 0.3) for _ in range(20))
    levels = ctl.levels()
    assert (levels.quality, levels.compression, levels.max_fps) == (0, 9, 4.0)
    assert changes >= 3
    rtt = ctl.stats().rtt_ms
    assert rtt is not None
    assert rtt > 250


def test_fast_link_raises_quality() -> None:
    """5 ms round trips at 100 Mbit/s walk the ladder to the top."""
    clock = FakeClock()
    ctl = AdaptiveController(clock)
    for _ in range(200):
        frame(ctl, clock, 125_000, 0.005, 0.005)
        clock.now += 0.03
    levels = ctl.levels()
    assert (levels.quality, levels.compression, levels.max_fps) == (8, 1, 30.0)  # the top rung


def test_changes_at_most_once_per_interval() -> None:
    """However many slow samples arrive in one second, the level moves one step."""
    clock = FakeClock()
    ctl = AdaptiveController(clock, Tuning(adjust_every=1.0))
    clock.now += 1.0
    for _ in range(10):
        frame(ctl, clock, 1000, 0.0, 0.3)
        clock.now -= 0.3  # squeeze all ten into the same instant's window
    assert ctl.level == 5


def test_very_long_rtt_steps_down_twice() -> None:
    """A round trip over twice the high mark drops two levels at once."""
    clock = FakeClock()
    ctl = AdaptiveController(clock)
    clock.now += 1.0
    frame(ctl, clock, 1000, 0.0, 0.8)
    frame(ctl, clock, 1000, 0.0, 0.8)
    assert ctl.level == 4


def test_small_updates_do_not_count_as_throughput() -> None:
    """Tiny updates measure latency only: a near link with an idle screen still rises."""
    clock = FakeClock()
    ctl = AdaptiveController(clock)
    for _ in range(40):
        frame(ctl, clock, 200, 0.001, 0.01)
        clock.now += 0.2
    assert ctl.throughput is None
    assert ctl.level == len(LADDER) - 1


def test_stats_report_fps_and_kbps_over_the_window() -> None:
    """Ten 10 kB frames within the 2 s window read as 5 fps and 400 kbit/s."""
    clock = FakeClock()
    ctl = AdaptiveController(clock)
    for _ in range(10):
        frame(ctl, clock, 10_000, 0.05, 0.05)
    stats = ctl.stats()
    assert stats.fps == 5.0
    assert stats.kbps == 400.0
    assert stats.env_latency_ms is not None
    assert round(stats.env_latency_ms) == 2


def test_min_interval_follows_the_frame_rate_cap() -> None:
    """The pacing interval is the inverse of the level's frame-rate cap."""
    ctl = AdaptiveController(FakeClock(), Tuning(start_level=0))
    assert ctl.min_interval() == 0.25


def test_a_step_is_judged_on_fresh_samples() -> None:
    """After a step the old smoothed figures are dropped: no second step before new samples."""
    clock = FakeClock()
    ctl = AdaptiveController(clock, Tuning(adjust_every=0.0, min_samples=1))
    assert frame(ctl, clock, 125_000, 0.7, 0.3)  # slow: one step down
    assert ctl.level == 5
    assert (ctl.rtt, ctl.throughput) == (None, None)
    clock.now += 1.0
    ctl.client_requested()  # a request with no update before it carries no sample
    assert ctl.level == 5
    assert frame(ctl, clock, 125_000, 0.7, 0.3)  # a fresh slow sample: the next step
    assert ctl.level == 4
