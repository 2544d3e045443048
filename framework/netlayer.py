"""What a transport needs from the network layer below it, whatever its version.

A transport (TCP today, UDP next) finds the :class:`NetworkLayer` below it at attach time
(:func:`network_layer_below`) and from then on only uses this interface, so the same transport
runs on IPv4 or, later, IPv6 without knowing which:

- **addresses**: :meth:`NetworkLayer.local_addresses`, :meth:`NetworkLayer.is_broadcast`;
- **MTU towards a peer**: :meth:`NetworkLayer.mtu_to` and the fixed header size
  :attr:`NetworkLayer.header_len` (the transport's MSS is what is left of the MTU);
- **send with a protocol number**: :meth:`NetworkLayer.make_header` returns the header object
  the transport puts in ``Packet.net`` of a datagram it sends; the network layer fills in the
  rest (TTL or hop limit, identification, fragmentation) when the packet passes down through it.
  The transport still sends through the pipeline (``ctx.transmit``), so middleware between the
  two sees every datagram;
- **checksums**: :meth:`NetworkLayer.pseudo_header_sum`, the partial sum of the pseudo-header a
  transport's checksum covers (each version defines its own);
- **errors down**: :meth:`NetworkLayer.port_unreachable` tells the sender of a datagram that no
  one listens on its port; the network layer decides whether it may (the rules of its error
  messages, a rate limit) and how;
- **errors up**: a datagram that reports an error about one we sent (ICMP for IPv4) reaches the
  transport it concerns as a packet with ``Packet.error`` set to a :class:`NetError`; its
  ``net`` and ``payload`` are then the quoted header and the quoted transport bytes.

Inbound, ``Packet.net`` holds the parsed header, which has at least the fields of
:class:`NetHeader`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from framework.checksum import BytesLike
    from framework.context import Context


class NetHeader(Protocol):
    """The network-header fields a transport reads (inbound ``Packet.net``)."""

    src: bytes
    """Source address (4 bytes for IPv4, 16 for IPv6)."""
    dst: bytes
    """Destination address."""
    protocol: int
    """The protocol number of the payload (IANA "Assigned Internet Protocol Numbers"; IPv6's
    next header)."""
    tos: int
    """The DS field and ECN bits (IPv4 type of service, IPv6 traffic class; RFC 3168 §5)."""


class NetError(Protocol):
    """A network layer's report of an error about a datagram we sent (``Packet.error``)."""

    @property
    def name(self) -> str:
        """A short name for logs and events (``"port_unreachable"``)."""
        ...

    @property
    def is_hard(self) -> bool:
        """A hard error in the sense of RFC 9293 §3.9.2.2 (SHLD-26): it may abort a connection
        that is still opening. Soft errors are reported, never fatal (MUST-56)."""
        ...

    @property
    def too_big(self) -> bool:
        """The datagram was too big for a hop (RFC 1191 §4, RFC 8201 §4): path MTU discovery,
        never an abort."""
        ...

    @property
    def next_hop_mtu(self) -> int:
        """With :attr:`too_big`, the MTU of the hop that refused the datagram (0: unknown)."""
        ...


@runtime_checkable
class NetworkLayer(Protocol):
    """The network layer as a transport above it sees it."""

    name: str

    header_len: int
    """The size of the fixed network header this layer puts in front of a transport's datagram
    (20 for IPv4 without options, 40 for IPv6)."""

    def local_addresses(self) -> Sequence[bytes]:
        """Our own unicast addresses, the primary one first."""
        ...

    def is_broadcast(self, addr: bytes) -> bool:
        """*addr* is a broadcast address of one of our networks (a transport must not open a
        connection to it, RFC 9293 §3.9.1.1 MUST-46)."""
        ...

    def mtu_to(self, dst: bytes | None = None) -> int:
        """The largest datagram (network header included) this layer sends towards *dst*
        without fragmenting it; ``None``: towards any peer (the link MTU)."""
        ...

    def make_header(self, src: bytes, dst: bytes, protocol: int, *, tos: int = 0, dont_frag: bool = True) -> object:
        """The header of a datagram from *src* to *dst* carrying *protocol*, for ``Packet.net``
        of a packet the transport sends down; the network layer completes it on its way down."""
        ...

    def pseudo_header_sum(self, src: bytes, dst: bytes, protocol: int, length: int) -> int:
        """The partial ones'-complement sum (:func:`framework.checksum.ones_sum`) of the
        pseudo-header that a transport checksum covers, for a transport datagram of *length*
        octets from *src* to *dst*. The sum is the address part plus *protocol* plus *length*
        (the same for every version), so ``pseudo_header_sum(s, d, p, 0) + length`` is the sum
        for *length*: a transport may take the part without the length once and add it."""
        ...

    def port_unreachable(self, header: object, payload: BytesLike, ctx: Context) -> bool:
        """Tell the sender of an inbound datagram (*header*: its ``Packet.net``; *payload*: the
        transport bytes as passed up) that no one listens on its destination port, if this
        layer's rules for error messages allow (never about a broadcast or multicast datagram, a
        non-first fragment or an error message; rate-limited). ``True`` if a message went out."""
        ...


def network_layer_below(below: Iterable[object]) -> NetworkLayer | None:
    """The nearest :class:`NetworkLayer` in *below* (nearest first), or ``None``. Called at attach
    time only (an ``isinstance`` against a protocol is slow)."""
    for handler in below:
        if isinstance(handler, NetworkLayer):
            return handler
    return None


__all__ = ["NetError", "NetHeader", "NetworkLayer", "network_layer_below"]
