"""The pipeline: an ordered list of handlers, chained bottom-up for receive and top-down for
send. It knows no protocol; it only moves :class:`~framework.packet.Packet` objects."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from framework.errors import ConfigError
from framework.handler import PacketHandler
from framework.packet import Packet

if TYPE_CHECKING:
    from framework.context import Context


class Pipeline:
    """Handlers from bottom (link) to top (transport)."""

    def __init__(self, handlers: Sequence[PacketHandler]) -> None:
        if not handlers:
            raise ConfigError(["layers: a stack needs at least one layer"])
        names = [h.name for h in handlers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError([f"layers: duplicate layer name {n!r}" for n in dupes])
        self.handlers: tuple[PacketHandler, ...] = tuple(handlers)
        self._index = {id(h): i for i, h in enumerate(self.handlers)}
        # Precomputed chains: what lies above / below each handler, nearest first.
        self._above = {id(h): self.handlers[i + 1 :] for i, h in enumerate(self.handlers)}
        self._below = {id(h): tuple(reversed(self.handlers[:i])) for i, h in enumerate(self.handlers)}
        self.tx_queue: deque[bytes] = deque()
        # Only handlers that override flush/dispatch_events are called for them.
        self._flushers = tuple(h for h in self.handlers if _overrides(h, "flush"))
        self._dispatchers = tuple(h for h in self.handlers if callable(getattr(h, "dispatch_events", None)))
        for h in self.handlers:
            h.attach(self._below[id(h)], self._above[id(h)])

    def by_name(self, name: str) -> PacketHandler:
        for h in self.handlers:
            if h.name == name:
                return h
        raise KeyError(name)

    def receive(self, pkt: Packet, ctx: Context) -> None:
        """Run an inbound packet up from the bottom handler."""
        self._run_up(self.handlers, pkt, ctx)

    def receive_above(self, origin: PacketHandler, pkt: Packet, ctx: Context) -> None:
        self._run_up(self._above[id(origin)], pkt, ctx)

    @staticmethod
    def _run_up(chain: Sequence[PacketHandler], pkt: Packet, ctx: Context) -> None:
        p: Packet | None = pkt
        for handler in chain:
            p = handler.receive(p, ctx)  # type: ignore[arg-type]
            if p is None:
                return
        # Nobody above consumed it: a packet no layer wanted is a counted drop, not a crash.
        ctx.stats.drop("pipeline", "unclaimed")

    def send_below(self, origin: PacketHandler, pkt: Packet, ctx: Context) -> None:
        """Run an outbound packet down from just below *origin*; queue the resulting frame."""
        p: Packet | None = pkt
        for handler in self._below[id(origin)]:
            p = handler.send(p, ctx)  # type: ignore[arg-type]
            if p is None:
                return
        self.tx_queue.append(p.to_bytes())  # type: ignore[union-attr]

    def flush(self, ctx: Context) -> None:
        """Let handlers emit what they deferred until the end of the batch (top first)."""
        for h in reversed(self._flushers):
            h.flush(ctx)

    def dispatch_events(self) -> None:
        """Let handlers hand queued user events to their listeners (after frames went out)."""
        for h in self._dispatchers:
            h.dispatch_events()  # type: ignore[attr-defined]

    def poll_at(self) -> float | None:
        best: float | None = None
        for h in self.handlers:
            t = h.poll_at()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timer(self, ctx: Context) -> None:
        now = ctx.now
        for h in self.handlers:
            t = h.poll_at()
            if t is not None and t <= now:
                h.handle_timer(ctx)


def _overrides(handler: PacketHandler, method: str) -> bool:
    from framework.handler import BaseHandler

    impl = getattr(type(handler), method, None)
    return impl is not None and impl is not getattr(BaseHandler, method, None)
