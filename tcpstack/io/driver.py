"""The asyncio driver: read the link until it would block, feed the stack, write what it
returns, and keep exactly one re-armed timer (aioquic's ``transmit()`` pattern).

It owns no protocol logic. Time is ``loop.time()``, passed into the sans-IO stack.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

import structlog

from framework.stack import Stack
from tcpstack.io.link import Link, ReadIntoLink

logger = structlog.get_logger("tcpstack.driver")

#: Frames read per readable callback before yielding to other callbacks.
READ_BATCH = 64


class AsyncioDriver:
    """Runs one :class:`Stack` over one :class:`Link` on an asyncio event loop."""

    def __init__(self, stack: Stack, link: Link, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.stack = stack
        self.link = link
        self.loop = loop or asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
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
        for _ in range(4):  # events may make user code write more; bounded, then next turn
            for frame in stack.frames_to_send(now=self.loop.time()):
                if not link.write(frame):
                    stack.stats.drop("link", "tx_failed")
            stack.dispatch_events()
            if not stack.has_pending_output():
                break
        timer_at = stack.get_timer()
        if self._timer is not None and self._timer_at != timer_at:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and timer_at is not None and self._running:
            self._timer = self.loop.call_at(timer_at, self._on_timer)
        self._timer_at = timer_at

    def _on_timer(self) -> None:
        now = max(self._timer_at or 0.0, self.loop.time())
        self._timer = None
        self._timer_at = None
        self.stack.handle_timer(now=now)
        self.transmit()
