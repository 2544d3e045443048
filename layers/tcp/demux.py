"""Early demux: a frame straight from the link to header prediction (docs/architecture.md,
"Early demux"; Linux's ``tcp_v4_early_demux``).

When nothing lies between the link and the TCP layer but the IPv4 layer (no middleware that
must see every frame: pcap, fault, seqshift; no other handler on the way), the TCP layer
installs :meth:`EarlyDemux.receive` as the stack's early demultiplexer
(:meth:`framework.stack.Stack.set_early_receive`). It takes a frame only when the pipeline
would have done nothing with it but pass it up to :func:`layers.tcp.fastpath.receive`:

- the link's part (:class:`layers.link.handler.RawIpLink`): a non-empty frame, with TUN
  offload a ``virtio_net_hdr`` of a kind the link takes;
- the IPv4 layer's part (:meth:`layers.ipv4.handler.Ipv4Layer.receive`), with each of its
  checks: version 4 and IHL 5 (no options), a consistent Total Length, the header checksum
  (unless the layer is told not to verify), reserved flag clear, not a fragment, our address
  as destination, a unicast source that is not ours, protocol TCP;
- the TCP layer's part (:meth:`layers.tcp.layer.TcpLayer.receive`): an established
  connection of the 4-tuple with ``fast_path`` on, and a segment that the prediction takes;
- or, for a segment of such a connection (in any state) that the prediction refuses, the TCP
  layer's full processing of it (:meth:`layers.tcp.layer.TcpLayer.early_segment`: the
  handshake's last ACK, a FIN, a RST, anything out of the ordinary), except where
  ``receive`` would do more than that: a SYN that may reopen TIME-WAIT, an ACK to a full
  accept queue, a header that does not parse;
- or, for a segment of no connection to a port that listens, a plain SYN the listener has
  room for (:meth:`layers.tcp.layer.TcpLayer.early_syn`: the passive open); anything else
  there (RSTs, ACKs, SYN cookies to send, full queues) goes up the pipeline.

Anything else (a check fails, no connection, a segment left to the pipeline) returns ``False``
having changed nothing, and the frame goes up the pipeline, which then counts and logs it as it
always does. A frame taken is counted as the pipeline counts it (``frames_in``,
``link.gso_frames_in``, ``tcp.fast_path``/``tcp.fast_ack``, the ``tcp`` drops), plus
``tcp.early_demux`` (predicted) or ``tcp.early_demux_slow`` (fully processed); the IPv4 layer
counts nothing for a datagram it passes up.

Proven equal to the pipeline by differential tests (tests/layers/tcp/test_early_demux.py).
Plain typed Python: compiled with mypyc as well as run interpreted.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from framework.checksum import BytesLike, internet_checksum
from framework.handler import PacketHandler
from framework.stats import Stats
from layers.tcp import fastpath
from layers.tcp.wire import HEADER_LEN, PROTO_TCP, pseudo_base

if TYPE_CHECKING:
    from framework.pipeline import Pipeline
    from layers.tcp.connection import TcpConnection

# RFC 791 §3.1: version/IHL, TOS, total length, identification, flags/fragment offset, TTL,
# protocol, header checksum, source, destination; then RFC 9293 §3.1's ports.
_IP_PORTS = struct.Struct("!BBHHHBBH4s4sHH")
_VNET = struct.Struct("<BBHHHH")  # struct virtio_net_hdr (<linux/virtio_net.h>)
_VNET_LEN: Final = 10
_VNET_CSUM: Final = 1 | 2  # NEEDS_CSUM | DATA_VALID: the link vouches for the TCP checksum
_GSO_ECN: Final = 0x80
_GSO_TCPV4: Final = 1
_VER_IHL: Final = 0x45  # version 4, IHL 5: a header without options
_IP_HLEN: Final = 20
_FRAG: Final = 0x8000 | 0x2000 | 0x1FFF  # reserved flag, MF, fragment offset
_IP_VERSION: Final = 4  # the key the link passes IPv4 up with (RFC 791 §3.1: Version)


class RxIpv4(Protocol):
    """What early demux needs of the IPv4 layer below TCP (layers/ipv4/handler.py)."""

    address: bytes
    broadcast: bytes
    prefixlen: int
    verify: bool
    protocols: frozenset[int]

    @property
    def direct_rx(self) -> bool:
        """True when the layer's receive is the one :class:`EarlyDemux` does the part of."""
        ...


class RxLink(Protocol):
    """What early demux needs of the raw-IP link at the bottom (layers/link/handler.py)."""

    vnet: bool

    @property
    def direct_rx(self) -> bool:
        """True when the link's receive is the one :class:`EarlyDemux` does the part of."""
        ...


def find_rx_path(
    pipeline: Pipeline, tcp: PacketHandler, below: Sequence[PacketHandler]
) -> tuple[RxIpv4, RxLink] | None:
    """The IPv4 layer and the link when a TCP/IPv4 frame goes from the link through the IPv4
    layer straight to *tcp* and nothing else (*below*: what lies below *tcp*), else ``None``."""
    if len(below) != 2:
        return None
    net, link = below
    if not getattr(net, "direct_rx", False) or not getattr(link, "direct_rx", False):
        return None
    if pipeline.root is not link or pipeline.next_above(link, _IP_VERSION) is not net:
        return None
    if pipeline.next_above(net, PROTO_TCP) is not tcp or PROTO_TCP not in getattr(net, "protocols", ()):
        return None
    return net, link  # type: ignore[return-value]  # checked by the markers above


class EarlyDemux:
    """The link's, the IPv4 layer's and the TCP layer's share of receiving a predicted segment,
    done in one step (module docstring). The settings are read once, at assembly."""

    __slots__ = (
        "address",
        "connections",
        "events",
        "land",
        "listeners",
        "stats",
        "tcp",
        "verify_ip",
        "verify_tcp",
        "vnet",
    )

    def __init__(
        self,
        tcp: Any,
        connections: dict[tuple[bytes, int, int], TcpConnection],
        ipv4: RxIpv4,
        link: RxLink,
        stats: Stats,
    ) -> None:
        self.tcp = tcp  # the TcpLayer: its dirty set is swapped at every flush, so read per frame
        self.connections = connections
        self.listeners: dict[int, Any] = tcp.listeners  # the TcpLayer's: one dict for its lifetime
        self.address = ipv4.address
        # RFC 1122 §3.2.1.3: a source of our subnet's directed broadcast is invalid (a /31 or /32
        # has none, RFC 3021): the address to refuse, or our own address again when there is none.
        self.land = ipv4.broadcast if ipv4.prefixlen < 31 else ipv4.address
        self.verify_ip = ipv4.verify
        self.verify_tcp = bool(tcp.settings.verify_checksum)
        self.vnet = link.vnet
        self.stats = stats
        self.events = stats.events

    def receive(self, frame: BytesLike, now: float) -> bool:
        """Take *frame* whole (``True``) or leave it to the pipeline untouched (``False``)."""
        buf = memoryview(frame)
        n = len(buf)
        csum_ok = False
        gso = False
        if self.vnet:
            if n <= _VNET_LEN:
                return False
            flags, gso_type, _h, _g, _s, _o = _VNET.unpack_from(buf)
            if gso_type & ~_GSO_ECN != 0 and gso_type & ~_GSO_ECN != _GSO_TCPV4:
                return False  # the link drops it (unsupported_gso)
            gso = gso_type != 0
            csum_ok = flags & _VNET_CSUM != 0
            buf = buf[_VNET_LEN:]
            n -= _VNET_LEN
        if n < _IP_HLEN + HEADER_LEN:
            return False
        ver_ihl, tos, total, _id, frag, _ttl, proto, _c, src, dst, sport, dport = _IP_PORTS.unpack_from(buf)
        # RFC 791 §3.1: IPv4 without options; Total Length covers header and data and fits the
        # frame; RFC 1122 §3.2.1.1: version 4.
        if ver_ihl != _VER_IHL or total > n or total < _IP_HLEN + HEADER_LEN:
            return False
        # RFC 791 §3.1: the reserved flag clear; RFC 791 §3.2: a fragment goes to reassembly.
        if frag & _FRAG or proto != PROTO_TCP:
            return False
        # RFC 1122 §3.2.1.3: our own address only; a unicast source, neither ours nor our
        # subnet's broadcast (layers/ipv4/wire.py is_invalid_source: 0/8, 127/8, 224/3).
        first = src[0]
        if dst != self.address or first == 0 or first == 127 or first >= 224:
            return False
        if src == self.address or src == self.land:
            return False
        conn = self.connections.get((src, sport, dport))
        if conn is None:
            if dport not in self.listeners:
                return False
        elif not conn.fast_path:
            return False
        # RFC 1122 §3.2.1.2: a bad header checksum is the pipeline's counted drop.
        if self.verify_ip and internet_checksum(buf[:_IP_HLEN]) != 0:
            return False
        # RFC 9293 §3.1, MUST-3: the pseudo-header sum, unless the link vouches for the checksum.
        pseudo = pseudo_base(src, dst) if self.verify_tcp and not csum_ok else None
        if conn is None:
            # A SYN to a listener: the TCP layer's passive open, unless it must answer otherwise.
            if not self.tcp.early_syn(src, dport, buf[_IP_HLEN:total], pseudo, tos & 3, now, self.stats):
                return False
            return self._took_slow(gso)
        kind = fastpath.receive(conn, buf[_IP_HLEN:total], pseudo, tos & 3, now)
        if kind == fastpath.SLOW:
            # Not predicted: the TCP layer's full processing, minus the pipeline (the handshake's
            # last ACK, FINs, anything else of a connection), unless it leaves the frame alone.
            if not self.tcp.early_segment(conn, buf[_IP_HLEN:total], pseudo, tos & 3, now, self.stats):
                return False
            return self._took_slow(gso)
        events = self.events
        events["frames_in"] += 1
        if gso:
            events["link.gso_frames_in"] += 1
        events["tcp.early_demux"] += 1
        if kind == fastpath.BAD_CHECKSUM:
            self.stats.drop("tcp", "bad_checksum")
            return True
        events["tcp.fast_path" if kind == fastpath.DATA else "tcp.fast_ack"] += 1
        reason = conn.drop_reason
        if reason is not None:
            self.stats.drop("tcp", reason)
            conn.drop_reason = None
        self.tcp._dirty[conn] = None
        return True

    def _took_slow(self, gso: bool) -> bool:
        """Count a frame the TCP layer processed in full as the pipeline counts it."""
        events = self.events
        events["frames_in"] += 1
        if gso:
            events["link.gso_frames_in"] += 1
        events["tcp.early_demux_slow"] += 1
        return True
