"""Per-call services a handler may use, handed to every ``receive``/``send``/``handle_timer``.

One :class:`Context` exists per stack and is reused: the stack sets ``now`` before each call,
so the per-packet path allocates nothing for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from framework.packet import Frame, Packet
from framework.stats import Stats

if TYPE_CHECKING:
    from framework.handler import PacketHandler
    from framework.pipeline import Pipeline


class Context:
    """What a handler may do besides returning a packet: count (``ctx.stats.drop``,
    ``ctx.stats.count``), transmit, deliver."""

    __slots__ = ("_pipeline", "inbound", "now", "stats")

    def __init__(self, pipeline: Pipeline, stats: Stats) -> None:
        self.now = 0.0
        self.inbound = 0
        """The number (:attr:`Stack.frames_in <framework.stack.Stack.frames_in>`) of the inbound
        frame being handled, 0 outside inbound handling (a timer, a send, the end-of-batch flush,
        event dispatch). The stack sets it as each call begins, one store per call, so a handler
        can tell whether what happens now happens on behalf of an inbound frame: the pcapng
        capture uses it to put a decision on the frame it was taken on (docs/architecture.md,
        "Which frame a decision belongs to")."""
        self.stats = stats
        self._pipeline = pipeline

    def transmit(self, origin: PacketHandler, pkt: Packet) -> None:
        """Send *pkt* down through every handler below *origin* (a reply, a retransmission)."""
        self._pipeline.send_below(origin, pkt, self)

    def queue_frame(self, frame: Frame) -> None:
        """Queue a finished frame for the link, as :meth:`transmit` does at the end of the way
        down: for a layer that built the whole frame itself because nothing below it needs to
        run (the TCP send path, docs/architecture.md "The send path")."""
        self._pipeline.tx_queue.append(frame)

    def deliver(self, origin: PacketHandler, pkt: Packet) -> None:
        """Pass *pkt* up through every handler above *origin* (a delayed or reassembled packet)."""
        self._pipeline.receive_above(origin, pkt, self)
