"""The one packet-handler interface that every layer and middleware implements.

Call order per inbound frame, bottom-up (where several layers sit on one, the one taking the
key the layer below set in ``pkt.upper``; docs/architecture.md, "Pipeline graph")::

    link.receive -> [middleware.receive] -> network.receive -> transport.receive

Call order per outbound packet, top-down::

    transport (ctx.transmit) -> network.send -> [middleware.send] -> link.send -> Stack tx queue

What neighbours learn about each other at assembly is typed: a link offers
:class:`~framework.capabilities.LinkCapabilities`, a network layer implements
:class:`~framework.netlayer.NetworkLayer` for the transports above it.

Timers follow aioquic/smoltcp: each handler says when it next needs to run (``poll_at``) and
is called back (``handle_timer``) at or after that time. Nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from framework.packet import Packet

if TYPE_CHECKING:
    from framework.context import Context


@runtime_checkable
class PacketHandler(Protocol):
    """One layer (or pass-through middleware) in the pipeline."""

    name: str
    """Instance name, unique in a pipeline (the configuration's ``name``, default the type)."""

    def attach(self, below: Sequence[PacketHandler], above: Sequence[PacketHandler]) -> None:
        """Called once when the pipeline is assembled, with the handlers below (the path down
        to the link, nearest first) and above (nearest first; breadth-first where several
        layers sit on one). *above* is a :class:`~framework.pipeline.Above`, which also says
        which demultiplexing keys the layers directly above take (``above.keys``). Use it to
        learn the link's capabilities (:func:`~framework.capabilities.capabilities_below`), the
        network layer below (:func:`~framework.netlayer.network_layer_below`) or which
        protocols the layers above handle. Raise :class:`~framework.errors.ConfigError` if the
        neighbours make this handler unusable."""
        ...

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        """Consume this layer's header and return *pkt* for the layer above, or ``None`` if
        the packet was consumed here or dropped (after ``ctx.stats.drop``). Never raises for bad
        input."""
        ...

    def send(self, pkt: Packet, ctx: Context) -> Packet | None:
        """Add this layer's header to *pkt* and return it for the layer below; ``None`` when
        the packet was consumed here (dropped, queued, or sent in pieces via ``ctx.transmit``)."""
        ...

    def poll_at(self) -> float | None:
        """Earliest time this handler needs :meth:`handle_timer` (``None``: only on input)."""
        ...

    def handle_timer(self, ctx: Context) -> None:
        """Run the timers that expired at ``ctx.now``; may call ``ctx.transmit``/``ctx.deliver``."""
        ...

    def flush(self, ctx: Context) -> None:
        """Emit output deferred until the end of a batch of inputs (e.g. TCP's aggregated
        ACKs, RFC 9293 MUST-58). Called before the stack hands its frames to the link."""
        ...


class BaseHandler:
    """Convenience base: pass-through receive/send, no timers, nothing to learn at attach."""

    name: str = "handler"

    def attach(self, below: Sequence[PacketHandler], above: Sequence[PacketHandler]) -> None:
        return None

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        return pkt

    def send(self, pkt: Packet, ctx: Context) -> Packet | None:
        return pkt

    def poll_at(self) -> float | None:
        return None

    def handle_timer(self, ctx: Context) -> None:
        return None

    def flush(self, ctx: Context) -> None:
        return None


# -------------------------------------------------------------------- optional protocols
# A handler implements these only if it has the capability; the pipeline and the stack test
# for them with isinstance, once, at assembly (never per packet).


@runtime_checkable
class EventSource(Protocol):
    """A handler that queues user events (a transport's "data arrived", "connection closed")
    and hands them to their listeners when the stack's driver says so, after the frames of a
    batch went out (:meth:`framework.stack.Stack.dispatch_events`)."""

    def dispatch_events(self) -> None:
        """Deliver the queued events; user code runs only from here."""
        ...


@runtime_checkable
class OutputSource(Protocol):
    """A handler that can have output waiting that it emits only at :meth:`PacketHandler.flush`
    (TCP's aggregated ACKs): the driver asks before it sleeps."""

    @property
    def has_output(self) -> bool:
        """True if the next flush would send something."""
        ...


@runtime_checkable
class Closeable(Protocol):
    """A handler that holds a resource (a capture file) to release when the stack is closed or
    fails to assemble."""

    def close(self) -> None:
        """Release the resource; safe to call twice."""
        ...
