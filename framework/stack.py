"""The sans-IO stack facade: frames in with the time, frames out, next timer, timer fired.

The shape is aioquic's ``QuicConnection`` at frame level. The stack never reads a clock and
never performs I/O; the application's I/O driver (or a test) supplies both.

After every call to :meth:`Stack.receive_frame` or :meth:`Stack.handle_timer` the caller must
drain :meth:`Stack.frames_to_send` and re-arm its timer from :meth:`Stack.get_timer`.

The stack's clock never runs backwards: a *now* earlier than one already given is taken as that
one (counted as ``stack.clock_behind``). A driver may run a timer a little before the clock
reaches it and say it is due (tcpstack/io/driver.py does, within 0.1 ms); the next call then
brings an earlier real time. Protocols order events by time (RACK compares send times, RFC 8985
§6.2), so a clock that stepped back made a segment look sent before one sent ahead of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from framework.checksum import BytesLike
from framework.context import Context
from framework.handler import PacketHandler
from framework.packet import Frame, Packet, frame_bytes
from framework.pipeline import Pipeline
from framework.stats import Stats

if TYPE_CHECKING:
    from framework.config import StackConfig
    from framework.plugins import PluginHost

logger = structlog.get_logger("tcpstack.stack")

#: ``early(frame, now) -> taken``: see :meth:`Stack.set_early_receive`.
EarlyReceive = Callable[[BytesLike, float], bool]


class Stack:
    """A protocol stack assembled from a pipeline of handlers."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        host: PluginHost | None = None,
        config: StackConfig | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.host = host
        self.config = config
        self.stats = stats if stats is not None else Stats()
        self._ctx = Context(pipeline, self.stats)
        self._frames_in = 0
        self._log: Any = logger
        self.early_receive: EarlyReceive | None = None
        """A handler's early demultiplexer, called with every frame before the pipeline
        (:meth:`set_early_receive`); ``None``: every frame goes up the pipeline."""
        self._clock = float("-inf")  # the latest time given: the stack's clock never runs backwards
        self.time_offset = 0.0
        """Wall-clock time minus the stack's clock, in seconds: what turns a ``now`` into a time
        since the Unix epoch. The I/O edge sets it when it starts (the same offset a capture's
        ``time_offset`` gets); 0 when a test drives the stack with explicit times."""

    def _now(self, now: float) -> float:
        """*now*, or the stack's clock when *now* is behind it (see the module docstring)."""
        if now < self._clock:
            self.stats.count("stack.clock_behind")
            return self._clock
        self._clock = now
        return now

    # ------------------------------------------------------------------ inputs

    def receive_frame(self, frame: BytesLike, *, now: float) -> None:
        """Feed one frame read from the link. Never raises for any input bytes.

        *frame* may be a view of a buffer the caller reuses once this returns (the driver's
        read buffer): what the stack keeps of it, it copies.

        Afterwards drain :meth:`frames_to_send` and re-read :meth:`get_timer`.
        """
        n = self._frames_in = self._frames_in + 1
        ctx = self._ctx
        ctx.now = self._now(now)
        ctx.inbound = n  # handling frame n (Context.inbound); the stack's next call resets it
        try:
            early = self.early_receive
            if early is not None and early(frame, ctx.now):  # the clamped clock, as the pipeline gets
                return  # taken whole, with the pipeline's counters kept (docs/architecture.md)
            self.pipeline.receive(Packet.inbound(frame, self._frames_in), ctx)
        except Exception:  # a bug, not bad input: count it, log it, keep the stack alive
            self.stats.drop("stack", "internal_error")
            self._log.exception("stack.internal_error", frame_no=self._frames_in)

    def set_early_receive(self, early: EarlyReceive) -> bool:
        """Install *early* as the stack's early demultiplexer, unless one is installed already
        (``False`` then): a handler's shortcut for the frames it can tell, by their bytes alone,
        are its own and would pass unchanged through every handler below it
        (docs/architecture.md, "Early demux").

        *early(frame, now)* returns ``True`` when it took the frame: it has then done exactly
        what the pipeline would have (every counter and log of every handler on the way);
        ``False`` when it did nothing, and the frame goes up the pipeline. The handler decides
        once, when the stack is assembled, whether the pipeline's shape lets it (for example,
        no middleware on the way, which must see every frame)."""
        if self.early_receive is not None:
            return False
        self.early_receive = early
        return True

    def handle_timer(self, *, now: float) -> None:
        """Run every timer due at *now*. Afterwards drain :meth:`frames_to_send`."""
        ctx = self._ctx
        ctx.now = self._now(now)
        ctx.inbound = 0
        try:
            self.pipeline.handle_timer(ctx)
        except Exception:
            self.stats.drop("stack", "internal_error")
            self._log.exception("stack.internal_error", where="timer")

    def send(self, origin: PacketHandler, pkt: Packet, *, now: float) -> None:
        """Send *pkt* down from below *origin* (used by upper layers' user-facing calls)."""
        ctx = self._ctx
        ctx.now = self._now(now)
        ctx.inbound = 0
        try:
            self.pipeline.send_below(origin, pkt, ctx)
        except Exception:
            self.stats.drop("stack", "internal_error")
            self._log.exception("stack.internal_error", where="send")

    # ------------------------------------------------------------------ outputs

    def frames_to_send(self, *, now: float) -> list[bytes]:
        """Return (and forget) every frame queued for the link, oldest first, each one ``bytes``
        (the pieces of a vectored frame joined: see :meth:`frames_to_write`)."""
        return [frame_bytes(f) for f in self.frames_to_write(now=now)]

    def frames_to_write(self, *, now: float) -> list[Frame]:
        """Like :meth:`frames_to_send`, but a frame may be a tuple of pieces (headers, then
        views of a send buffer) to write with one vectored write: what the I/O driver uses.
        The views stay valid, but drop them before calling the stack again (a send buffer with
        views alive must copy itself to grow)."""
        ctx = self._ctx
        ctx.now = self._now(now)
        ctx.inbound = 0
        try:
            self.pipeline.flush(ctx)
        except Exception:
            self.stats.drop("stack", "internal_error")
            self._log.exception("stack.internal_error", where="flush")
        q = self.pipeline.tx_queue
        if not q:
            return []
        out = list(q)
        q.clear()
        self.stats.count("frames_out", len(out))
        return out

    def has_pending_output(self) -> bool:
        """True if a handler has output waiting for the next :meth:`frames_to_send`."""
        return bool(self.pipeline.tx_queue) or any(h.has_output for h in self.pipeline.output_sources)

    def dispatch_events(self) -> None:
        """Deliver queued user events (e.g. TCP data arrival) to their listeners. The driver
        calls this before writing :meth:`frames_to_send` (so replies ride with the batch's ACKs) and
        after; user code runs only from here."""
        self._ctx.inbound = 0  # what user code causes is not the last inbound frame's doing
        self.pipeline.dispatch_events()

    def get_timer(self) -> float | None:
        """The earliest time :meth:`handle_timer` must run, or ``None``."""
        return self.pipeline.poll_at()

    # ------------------------------------------------------------------ introspection

    @property
    def frames_in(self) -> int:
        return self._frames_in

    def layer(self, name: str) -> PacketHandler:
        """The handler called *name* (a configuration ``name`` or a layer type)."""
        return self.pipeline.by_name(name)

    @property
    def context(self) -> Context:
        """The reusable call context (for layers that send on behalf of a user API)."""
        return self._ctx
