"""The driver's one timer (tcpstack/io/driver.py), with explicit time: a deadline that moves
later or goes away leaves the armed timer alone, an earlier one re-arms it, and a timer that
fires before the deadline of the moment waits again instead of telling the stack."""

from __future__ import annotations

from typing import Any

import pytest

from tcpstack.io import driver


class Handle:
    def __init__(self, when: float) -> None:
        self.when = when
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """The parts of an event loop the driver's timer uses, on a clock the test sets."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.armed: list[Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any) -> Handle:
        handle = Handle(when)
        self.armed.append(handle)
        return handle

    def call_later(self, delay: float, callback: Any) -> Handle:
        return self.call_at(self.now + delay, callback)

    def live(self) -> list[float]:
        return [h.when for h in self.armed if not h.cancelled]


class Stack:
    def __init__(self) -> None:
        self.deadline: float | None = None
        self.timer_calls: list[float] = []
        self.host = None

    def handle_timer(self, now: float) -> None:
        self.timer_calls.append(now)
        self.deadline = None

    def frames_to_write(self, now: float) -> list[bytes]:
        return []

    def dispatch_events(self) -> None:
        pass

    def has_pending_output(self) -> bool:
        return False

    def get_timer(self) -> float | None:
        return self.deadline


def _driver(now: float = 10.0) -> tuple[driver.AsyncioDriver, Loop, Stack]:
    loop, stack = Loop(now), Stack()
    d = driver.AsyncioDriver(stack, object(), loop)  # type: ignore[arg-type]
    d._running = True  # as after start(), without a file descriptor to watch
    return d, loop, stack


def test_a_later_deadline_keeps_the_armed_timer() -> None:
    d, loop, stack = _driver()
    stack.deadline = 10.2
    d.transmit()
    assert loop.live() == [10.2]
    for later in (10.3, 10.5, 10.2, 11.0):  # every ACK pushes the retransmission timer on
        stack.deadline = later
        d.transmit()
    assert len(loop.armed) == 1 and loop.live() == [10.2] and d._timer_at == 11.0
    stack.deadline = None  # nothing to wait for: the armed timer stays, and will find nothing
    d.transmit()
    assert len(loop.armed) == 1 and loop.live() == [10.2] and d._timer_at is None


def test_an_earlier_deadline_rearms() -> None:
    d, loop, stack = _driver()
    stack.deadline = 10.5
    d.transmit()
    stack.deadline = 10.1
    d.transmit()
    assert loop.live() == [10.1] and [h.cancelled for h in loop.armed] == [True, False]


def test_a_fire_before_the_moved_deadline_waits_again() -> None:
    d, loop, stack = _driver()
    stack.deadline = 10.2
    d.transmit()
    stack.deadline = 10.5
    d.transmit()
    loop.now = 10.2
    d._on_timer()  # the timer armed for 10.2: the deadline is now 10.5
    assert stack.timer_calls == [] and loop.live() == [10.2, pytest.approx(10.5)]
    loop.now = 10.5
    d._on_timer()
    assert stack.timer_calls == [10.5] and d._timer is None and d._timer_at is None


def test_a_fire_after_the_deadline_went_away_does_nothing() -> None:
    d, loop, stack = _driver()
    stack.deadline = 10.2
    d.transmit()
    stack.deadline = None
    d.transmit()
    loop.now = 10.2
    d._on_timer()
    assert stack.timer_calls == [] and len(loop.armed) == 1 and d._timer is None
    stack.deadline = 10.7  # a new deadline arms a new timer
    d.transmit()
    assert loop.live() == [10.2, 10.7]


def test_not_running_arms_nothing() -> None:
    d, loop, stack = _driver()
    d._running = False
    stack.deadline = 10.2
    d.transmit()
    assert loop.armed == [] and d._timer_at == 10.2
