"""Deterministic simulation: stacks joined by in-memory wires on a virtual clock.

No sockets, no threads, no sleeping: the simulation advances time straight to the next frame
arrival or timer, so a minute of TCP runs in milliseconds and every run is identical. Frames
cross a wire after a fixed propagation delay plus their serialization time at the wire's
bandwidth; a queue limit drops frames a congested wire cannot hold (tail drop).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from framework.stack import Stack


@dataclass(slots=True)
class WireStats:
    frames: int = 0
    bytes: int = 0
    dropped: int = 0


class _Direction:
    """One direction of a wire: a FIFO with a propagation delay and an optional rate limit."""

    __slots__ = ("bandwidth", "busy_until", "delay", "dst", "queue_limit", "queued", "stats")

    def __init__(self, dst: Stack, delay: float, bandwidth: float | None, queue_limit: int | None) -> None:
        self.dst = dst
        self.delay = delay
        self.bandwidth = bandwidth  # bytes per second, None = infinite
        self.queue_limit = queue_limit  # frames waiting for the transmitter
        self.busy_until = 0.0
        self.queued: list[float] = []  # departure times of frames still in the transmit queue
        self.stats = WireStats()


class Simulation:
    """Stacks on a virtual clock. Connect them with :meth:`wire`, then :meth:`run`."""

    def __init__(self) -> None:
        self.now = 0.0
        self.stacks: list[Stack] = []
        self._out: dict[int, _Direction] = {}
        self._arrivals: list[tuple[float, int, Stack, bytes]] = []
        self._tie = itertools.count()
        self.on_step: Callable[[float], None] | None = None

    def add(self, stack: Stack) -> Stack:
        self.stacks.append(stack)
        return stack

    def wire(
        self,
        a: Stack,
        b: Stack,
        *,
        delay: float = 0.0005,
        bandwidth: float | None = None,
        queue_limit: int | None = None,
    ) -> None:
        """Join *a* and *b* both ways (each stack has one link in a simulation)."""
        for s in (a, b):
            if s not in self.stacks:
                self.stacks.append(s)
        self._out[id(a)] = _Direction(b, delay, bandwidth, queue_limit)
        self._out[id(b)] = _Direction(a, delay, bandwidth, queue_limit)

    def stats(self, src: Stack) -> WireStats:
        return self._out[id(src)].stats

    def _collect(self) -> None:
        """Take every stack's pending frames onto its wire; deliver user events."""
        for _ in range(8):
            moved = False
            for s in self.stacks:
                frames = s.frames_to_send(now=self.now)
                if frames:
                    moved = True
                    d = self._out.get(id(s))
                    if d is not None:
                        for f in frames:
                            self._send(d, f)
                s.dispatch_events()
            if not moved and not any(s.has_pending_output() for s in self.stacks):
                return

    def _send(self, d: _Direction, frame: bytes) -> None:
        now = self.now
        q = d.queued
        while q and q[0] <= now:
            q.pop(0)
        if d.queue_limit is not None and len(q) >= d.queue_limit:
            d.stats.dropped += 1
            return
        start = max(now, d.busy_until)
        tx = len(frame) / d.bandwidth if d.bandwidth else 0.0
        d.busy_until = start + tx
        q.append(d.busy_until)
        d.stats.frames += 1
        d.stats.bytes += len(frame)
        heapq.heappush(self._arrivals, (d.busy_until + d.delay, next(self._tie), d.dst, frame))

    def next_time(self) -> float | None:
        best = self._arrivals[0][0] if self._arrivals else None
        for s in self.stacks:
            t = s.get_timer()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def step(self) -> bool:
        """Advance to the next arrival or timer and process everything due; False if idle."""
        self._collect()
        t = self.next_time()
        if t is None:
            return False
        self.now = max(self.now, t)
        now = self.now
        arrivals = self._arrivals
        while arrivals and arrivals[0][0] <= now:
            _, _, dst, frame = heapq.heappop(arrivals)
            dst.receive_frame(frame, now=now)
        for s in self.stacks:
            timer = s.get_timer()
            if timer is not None and timer <= now:
                s.handle_timer(now=now)
        self._collect()
        if self.on_step is not None:
            self.on_step(now)
        return True

    def run(
        self, *, until: float | None = None, condition: Callable[[], bool] | None = None, max_steps: int = 10_000_000
    ) -> int:
        """Step until *condition* holds, time would pass *until*, or nothing is left to do.

        :returns: the number of steps taken.
        """
        steps = 0
        self._collect()
        while steps < max_steps:
            if condition is not None and condition():
                break
            self._collect()
            t = self.next_time()
            if t is None or (until is not None and t > until):
                if until is not None:
                    self.now = max(self.now, until)
                break
            self.step()
            steps += 1
        return steps
