"""The asyncio driver: read the link until it would block, feed the stack, write what it
returns, and keep exactly one re-armed timer (aioquic's ``transmit()`` pattern).

It owns no protocol logic. Time is ``loop.time()``, passed into the sans-IO stack.

The event loop is uvloop's when uvloop is installed (``pip install 'tcpstack[fast]'``) and the
environment variable ``TCPSTACK_UVLOOP`` is not ``0``: :func:`run` is what the command line runs
its coroutines with (``asyncio.run`` otherwise). :func:`event_loop_name` says which is in use.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

import structlog

from framework.stack import Stack
from tcpstack.io.link import Link, ReadIntoLink

logger = structlog.get_logger("tcpstack.driver")

#: Frames read per readable callback before yielding to other callbacks.
READ_BATCH = 64

#: ``TCPSTACK_UVLOOP=0`` (or ``off``, ``no``, ``false``) keeps asyncio's own event loop even
#: when uvloop is installed.
UVLOOP_ENV = "TCPSTACK_UVLOOP"

T = TypeVar("T")


def uvloop_wanted() -> bool:
    """Whether the environment lets :func:`run` use uvloop (it does unless told not to)."""
    return os.environ.get(UVLOOP_ENV, "1").strip().lower() not in ("0", "off", "no", "false")


_precise_loop: Any = None


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """A uvloop event loop class when uvloop is installed and wanted; ``None``: asyncio's loop.

    uvloop's ``loop.time()`` is libuv's clock: milliseconds, read once per loop iteration. The
    stack times RTTs, RACK's reordering window and timestamps with the ``now`` it is given, and
    on a local TUN device round trips take tens of microseconds, so the loop we make tells
    ``time.monotonic()`` (the clock asyncio's own loop and libuv both read) instead: timers
    still fire through libuv, to the millisecond."""
    global _precise_loop
    if not uvloop_wanted():
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    if _precise_loop is None:

        class PreciseUvLoop(uvloop.Loop):  # type: ignore[misc,name-defined]
            def time(self) -> float:
                return time.monotonic()

        _precise_loop = PreciseUvLoop
    factory: Callable[[], asyncio.AbstractEventLoop] = _precise_loop
    return factory


def event_loop_name() -> str:
    """``"uvloop"`` or ``"asyncio"``: the loop :func:`run` would use."""
    return "uvloop" if loop_factory() is not None else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop's event loop where :func:`loop_factory` gives one."""
    factory = loop_factory()
    if factory is None:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


class AsyncioDriver:
    """Runs one :class:`Stack` over one :class:`Link` on an asyncio event loop."""

    def __init__(self, stack: Stack, link: Link, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.stack = stack
        self.link = link
        self.loop = loop or asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None  # the stack's deadline
        self._armed_at = 0.0  # when the armed timer fires (valid while _timer is not None)
        self._transmit_scheduled = False
        self._running = False
        # Links that read into a lent buffer get one, reused for every frame (a frame is handled
        # completely before the next read; what the stack keeps of one, it copies).
        self._readinto: ReadIntoLink | None = None
        self._rx_view = memoryview(b"")
        if callable(getattr(link, "readinto", None)) and isinstance(getattr(link, "read_size", None), int):
            self._readinto = cast(ReadIntoLink, link)
            self._rx_view = memoryview(bytearray(self._readinto.read_size))

    def start(self) -> None:
        """Start reading the link. Frames queued before this are sent at once."""
        offset = time.time() - self.loop.time()
        self.stack.time_offset = offset  # records made from `now` (the probe's) line up with the capture
        for handler in self.stack.pipeline.handlers:
            if hasattr(handler, "time_offset"):  # pcap and friends stamp wall-clock time
                handler.time_offset = offset
        self.loop.add_reader(self.link.fileno(), self._on_readable)
        self._running = True
        self.transmit()

    def stop(self) -> None:
        """Stop reading and cancel the timer; tells plugins through ``stack_closed``."""
        if not self._running:
            return
        self._running = False
        self.loop.remove_reader(self.link.fileno())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.stack.host is not None:
            self.stack.host.stack_closed(self.stack)

    def schedule_transmit(self) -> None:
        """Coalesce user-triggered sends into one :meth:`transmit` on the next loop turn."""
        if not self._transmit_scheduled:
            self._transmit_scheduled = True
            self.loop.call_soon(self._scheduled_transmit)

    def _scheduled_transmit(self) -> None:
        self._transmit_scheduled = False
        if self._running:
            self.transmit()

    def _on_readable(self) -> None:
        stack = self.stack
        now = self.loop.time()
        link = self._readinto
        if link is not None:
            view = self._rx_view
            readinto = link.readinto
            for _ in range(READ_BATCH):
                n = readinto(view)
                if n < 0:
                    break
                stack.receive_frame(view[:n], now=now)  # a view: valid until the next read
        else:
            for frame in self.link.read_available(READ_BATCH):
                stack.receive_frame(frame, now=now)
        self.transmit()

    def transmit(self) -> None:
        """Write pending frames and re-arm the single timer."""
        link = self.link
        stack = self.stack
        writev = getattr(link, "writev", None)  # optional in the Link protocol
        for _ in range(4):  # events may make user code write more; bounded, then next turn
            # User code runs first: what it sends in answer to the frames just read (a reply, the
            # FIN after the peer's FIN) leaves in the segment that carries our ACK, not one after
            # it (RFC 9293 §3.10.7.4: the ACK may ride on outgoing data; RFC 1122 §4.2.3.2).
            stack.dispatch_events()
            for frame in stack.frames_to_write(now=self.loop.time()):
                if isinstance(frame, bytes):
                    ok = link.write(frame)
                elif writev is not None:
                    ok = writev(frame)  # headers + send-buffer views: one writev, no joined copy
                else:
                    ok = link.write(b"".join(frame))
                if not ok:
                    stack.stats.drop("link", "tx_failed")
            # The frames' views of send buffers die here, before user code may write to those
            # buffers (a buffer with views alive copies itself to grow).
            frame = b""
            stack.dispatch_events()
            if not stack.has_pending_output():
                break
        self._rearm(stack.get_timer())

    def _rearm(self, timer_at: float | None) -> None:
        """Remember the stack's deadline; arm the one timer only if it would fire too late.

        A deadline that moves later (every ACK pushes the retransmission timer on) or goes away
        leaves the armed timer alone: it fires early and :meth:`_on_timer` waits again for the
        deadline of that moment. Only an earlier deadline cancels and re-arms: a connection
        costs one ``call_at`` instead of one per segment batch."""
        self._timer_at = timer_at
        if timer_at is None or not self._running:
            return
        if self._timer is not None:
            if timer_at >= self._armed_at:
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(timer_at, self._on_timer)
        self._armed_at = timer_at

    def _on_timer(self) -> None:
        self._timer = None
        at = self._timer_at
        if at is None:
            return  # the deadline went away after the timer was armed
        now = self.loop.time()
        if now < at - 1e-4:
            # Early: the deadline moved later since the timer was armed, or uvloop's timers ran
            # on libuv's millisecond clock, read once per loop iteration, and fired before their
            # time; the stack must not be told a deadline passed that has not (RACK would call
            # in-flight segments lost). Wait again.
            delay = max(at - now, 0.001)
            self._timer = self.loop.call_later(delay, self._on_timer)
            self._armed_at = now + delay
            return
        now = max(at, now)
        self._timer_at = None
        self.stack.handle_timer(now=now)
        self.transmit()
