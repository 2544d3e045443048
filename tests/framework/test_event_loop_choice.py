"""The event loop ``tcpstack up`` runs on: uvloop's when installed, unless TCPSTACK_UVLOOP=0."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from tcpstack.io import driver

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


@pytest.mark.parametrize("value", ["0", "off", "no", "false", " OFF "])
def test_the_variable_turns_uvloop_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(driver.UVLOOP_ENV, value)
    assert driver.loop_factory() is None and driver.event_loop_name() == "asyncio"

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert driver.run(which()).startswith("asyncio")


def test_uvloop_is_used_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(driver.UVLOOP_ENV, raising=False)
    if not HAVE_UVLOOP:
        assert driver.event_loop_name() == "asyncio"
        return

    import uvloop

    async def which() -> bool:
        return isinstance(asyncio.get_running_loop(), uvloop.Loop)

    assert driver.event_loop_name() == "uvloop"
    assert driver.run(which())


def test_without_uvloop_installed_asyncio_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(driver.UVLOOP_ENV, raising=False)

    def missing(name: str) -> object:
        raise ImportError(name)

    monkeypatch.setattr(driver.importlib, "import_module", missing)
    assert driver.loop_factory() is None and driver.event_loop_name() == "asyncio"


def test_the_loops_clock_has_microseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack times RTTs with loop.time(): uvloop's own is libuv's milliseconds, read once per
    iteration; the loop we make reads time.monotonic() (as asyncio's does)."""
    monkeypatch.delenv(driver.UVLOOP_ENV, raising=False)
    import time

    async def clock() -> tuple[float, float, float]:
        loop = asyncio.get_running_loop()
        a = loop.time()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.0002:  # 200 µs, not a millisecond
            pass
        fut = loop.create_future()
        loop.call_at(loop.time() + 0.005, fut.set_result, None)  # timers still fire
        b = loop.time()
        await fut
        return a, b, time.monotonic()

    a, b, after = driver.run(clock())
    assert 0.0002 <= b - a < 0.001 and after >= b + 0.004


class _Loop:
    def __init__(self, now: float) -> None:
        self.now = now
        self.later: list[float] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: object) -> object:
        self.later.append(delay)
        return object()

    def call_at(self, when: float, callback: object) -> object:
        return object()


class _Stack:
    def __init__(self) -> None:
        self.timer_calls: list[float] = []
        self.host = None

    def handle_timer(self, now: float) -> None:
        self.timer_calls.append(now)

    def frames_to_send(self, now: float) -> list[bytes]:
        return []

    def frames_to_write(self, now: float) -> list[bytes]:  # the driver's vectored-write path
        return []

    def dispatch_events(self) -> None:
        pass

    def has_pending_output(self) -> bool:
        return False

    def get_timer(self) -> float | None:
        return None


def test_a_timer_that_fires_early_waits_instead_of_moving_time_on() -> None:
    """uvloop's timers can fire before their deadline (libuv's millisecond clock, read once per
    iteration): the stack is not told the deadline passed until it has."""
    loop, stack = _Loop(10.0), _Stack()
    d = driver.AsyncioDriver(stack, object(), loop)  # type: ignore[arg-type]
    d._timer_at = 10.003
    d._on_timer()
    assert stack.timer_calls == [] and loop.later == [pytest.approx(0.003)]
    loop.now = 10.003
    d._on_timer()
    assert stack.timer_calls == [10.003]
