"""The packet envelope that travels through the pipeline.

Inbound, a :class:`Packet` starts as the whole frame; each layer narrows ``payload`` to what the
layer above should see and attaches its parsed header (``net`` for the network layer).

Outbound, the top layer creates a packet with its payload and pushes a header object; each
layer below pushes its own. :meth:`Packet.to_bytes` then allocates one buffer for all headers
and the payload and lets each header ``emit`` itself in place, innermost first, so a header that
checksums what follows it (a transport header) sees the final bytes. Middleware that needs the bytes
(pcap, fault injection) calls ``to_bytes()``, which caches the result as the new payload.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from framework.checksum import BytesLike

if TYPE_CHECKING:
    from framework.netlayer import NetError


#: What the stack's transmit queue holds: a whole frame, or the pieces of one frame in order (the
#: headers, then views of the payload) for one vectored write (``os.writev``). A layer that
#: builds its frames whole, with no handler below it to run, queues the pieces
#: (:meth:`~framework.context.Context.queue_frame`) so the payload is never copied before the
#: link writes it (docs/architecture.md, "The send path").
Frame: TypeAlias = bytes | tuple[BytesLike, ...]


def frame_bytes(frame: Frame) -> bytes:
    """The frame as one ``bytes`` object (joins the pieces of a vectored frame)."""
    return frame if isinstance(frame, bytes) else b"".join(frame)


class Header(Protocol):
    """A header that can serialize itself in front of a known amount of following bytes."""

    def buffer_len(self) -> int:
        """Number of bytes this header occupies."""
        ...

    def emit(self, buf: bytearray, offset: int, payload_len: int) -> None:
        """Write the header at ``buf[offset:]``; ``payload_len`` bytes follow it, already final."""
        ...


class Packet:
    """One datagram in flight through the pipeline (inbound or outbound).

    :ivar payload: inbound, the bytes the current layer still has to consume; outbound, the
        bytes that follow the headers pushed so far.
    :ivar headers: outbound headers, innermost (pushed first) first.
    :ivar net: the network-layer header: inbound, the parsed header (at least the fields of
        :class:`~framework.netlayer.NetHeader`); outbound, the header the transport asks the
        network layer to use (:meth:`~framework.netlayer.NetworkLayer.make_header`).
    :ivar error: set when the packet is a network layer's report of an error about a datagram
        we sent (a :class:`~framework.netlayer.NetError`), delivered to the transport that the
        quoted header names; ``net`` and ``payload`` are then the *quoted* header and bytes.
    :ivar frame_no: inbound frame counter value (matches the pcap frame order of inbound frames).

    Link-offload metadata (what the device does for the stack, announced by the link's
    :class:`~framework.capabilities.LinkCapabilities`); plain slots, read on the per-segment path:

    :ivar csum_ok: inbound, the link vouches for the transport checksum: a frame the local
        kernel handed over with a partial checksum never crossed a wire, and its checksum field
        holds only the pseudo-header sum, so the transport must not verify it
        (``LinkCapabilities.checksum_rx``).
    :ivar csum_partial: outbound, the transport put only the pseudo-header sum in its checksum
        field; the link has the device complete it (``LinkCapabilities.checksum_tx``).
    :ivar gso_size: outbound, a super-segment the device cuts into pieces of this many payload
        bytes each (segmentation offload, ``LinkCapabilities.max_super_segment``); 0 for an
        ordinary datagram.
    :ivar upper: inbound, the demultiplexing key of the packet, set by the layer below the one it
        goes to next (IPv4: the IP protocol number; a raw-IP link: the IP version): where several
        layers sit on one, the pipeline hands the packet to the one that takes this key. A
        middleware that replaces the packet copies it. -1 until a layer sets it.
    """

    __slots__ = ("csum_ok", "csum_partial", "error", "frame_no", "gso_size", "headers", "net", "payload", "upper")

    def __init__(self, payload: BytesLike, net: Any = None) -> None:
        self.payload: BytesLike = payload
        self.headers: list[Header] = []
        self.net: Any = net
        self.error: NetError | None = None
        self.frame_no = 0
        self.csum_ok = False
        self.csum_partial = False
        self.gso_size = 0
        self.upper = -1

    @classmethod
    def inbound(cls, frame: BytesLike, frame_no: int = 0) -> Packet:
        pkt = cls(memoryview(frame))
        pkt.frame_no = frame_no
        return pkt

    def push(self, header: Header) -> None:
        """Add an outer header (called by each layer on the send path)."""
        self.headers.append(header)

    def __len__(self) -> int:
        return sum(h.buffer_len() for h in self.headers) + len(self.payload)

    def to_bytes(self) -> bytes:
        """Serialize headers and payload into one buffer; afterwards ``payload`` holds it all."""
        if not self.headers:
            p = self.payload
            if not isinstance(p, bytes):
                p = self.payload = bytes(p)
            return p
        payload_len = len(self.payload)
        total = payload_len
        for h in self.headers:
            total += h.buffer_len()
        buf = bytearray(total)
        end = total - payload_len
        buf[end:] = self.payload
        following = payload_len
        for h in self.headers:
            start = end - h.buffer_len()
            h.emit(buf, start, following)
            following += end - start
            end = start
        out = bytes(buf)
        self.headers = []
        self.payload = out
        return out
