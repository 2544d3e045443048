"""The send path: TCP segments built straight into frames (docs/architecture.md, "The send path").

When nothing lies below the TCP layer but an IPv4 layer and a raw-IP link (no middleware that
must see a :class:`~framework.packet.Packet`: pcap, fault, seqshift), the TCP layer does their
share of sending itself, exactly as they would (:class:`TxPath`):

- a per-connection :class:`TxTemplate` holds what never changes for the 4-tuple: addresses,
  ports, the pseudo-header sum, the constant words of the IPv4 header checksum;
- each segment is then one ``struct.pack`` of the IPv4 and TCP headers (the timestamps option,
  the usual one, included; other options are written by :func:`layers.tcp.wire.emit_options`);
- both checksums are ones'-complement sums of header *fields* (a 32-bit field is congruent to
  the sum of its two 16-bit words modulo 0xFFFF, framework/checksum.py) plus one pass over the
  payload, never over a joined frame;
- the payload stays a view of the send buffer: the frame is ``(headers, payload)``, written
  with one ``writev`` by the I/O driver (:data:`framework.packet.Frame`).

With TUN offload the checksum field holds only the pseudo-header sum and a ``virtio_net_hdr``
goes in front (RFC-free: <linux/virtio_net.h>), so a 64 KB super-segment is never copied in
Python. Frames are byte-identical to those of the pipeline path (``TcpLayer.tx_direct = False``
keeps that path; tests/layers/tcp/test_txframe.py compares the two).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final, Protocol

from framework.checksum import fold, ones_sum
from framework.context import Context
from framework.handler import PacketHandler
from framework.packet import Frame
from layers.tcp.wire import CWR, PROTO_TCP, TcpRepr, emit_options, pseudo_base

# RFC 791 §3.1 (version/IHL, TOS, total length, identification, flags/fragment offset, TTL,
# protocol, header checksum, addresses) then RFC 9293 §3.1 (ports, SEQ, ACK, data offset, flags,
# window, checksum, urgent pointer): the 40 bytes of a segment without options.
_IP_TCP = struct.Struct("!BBHHHBBH4s4sHHIIBBHHH")
# The same with NOP, NOP, Timestamps (RFC 7323 §3.2; Appendix A's layout): 52 bytes.
_IP_TCP_TS = struct.Struct("!BBHHHBBH4s4sHHIIBBHHHBBBBII")
_TS_WORDS: Final = 0x0101 + 0x080A  # the option's constant words: NOP NOP, kind 8 length 10
_IP_HLEN: Final = 20  # we never send IPv4 options
_DF: Final = 0x4000  # RFC 791 §3.1: Don't Fragment (TCP's datagrams always carry it here, as before)
_MAX_DATAGRAM: Final = 0xFFFF  # RFC 791 §3.1: Total Length is 16 bits

# struct virtio_net_hdr (<linux/virtio_net.h>), as layers/link/handler.py writes it.
_VNET = struct.Struct("<BBHHHH")
_VNET_F_NEEDS_CSUM: Final = 1
_GSO_TCPV4: Final = 1
_GSO_ECN: Final = 0x80
_PLAIN_VNET = bytes(_VNET.size)


class DirectIpv4(Protocol):
    """What the send path needs of the IPv4 layer below TCP (layers/ipv4/handler.py)."""

    address: bytes
    ttl: int
    mtu: int

    def take_ident(self) -> int:
        """The next Identification value (the counter every datagram sent takes from)."""
        ...


class DirectLink(Protocol):
    """What the send path needs of the raw-IP link below IPv4 (layers/link/handler.py)."""

    mtu: int
    vnet: bool


class TxTemplate:
    """What every frame of one connection shares: the 4-tuple and the sums that follow from it."""

    __slots__ = ("dport", "dst", "ip_sum", "ports_sum", "pseudo", "sport", "src")

    def __init__(self, src: bytes, dst: bytes, sport: int, dport: int) -> None:
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        # RFC 791 §3.1: the header checksum's words that never change (version/IHL, DF,
        # protocol, the addresses; TOS, length, identification and TTL are added per frame).
        self.ip_sum = 0x4500 + _DF + PROTO_TCP + int.from_bytes(src, "big") + int.from_bytes(dst, "big")
        self.pseudo = pseudo_base(src, dst)  # RFC 9293 §3.1: the pseudo-header without the length
        self.ports_sum = sport + dport


def find_direct(below: Sequence[PacketHandler]) -> tuple[DirectIpv4, DirectLink] | None:
    """The IPv4 layer and the link when they are all that lies below TCP, else ``None`` (a
    middleware in between must see every frame as a Packet: the pipeline path)."""
    if len(below) != 2:
        return None
    net, link = below
    if not getattr(net, "direct_ipv4", False) or not getattr(link, "direct_link", False):
        return None
    return net, link  # type: ignore[return-value]  # checked by the markers above


class TxPath:
    """The IPv4 layer's and the link's share of sending, done for TCP in one step per segment.

    Every check of :meth:`Ipv4Layer.send <layers.ipv4.handler.Ipv4Layer.send>` and
    :meth:`RawIpLink.send <layers.link.handler.RawIpLink.send>` happens here too, with the same
    drop counters.
    """

    __slots__ = ("built", "ipv4", "link", "partial", "templates")

    def __init__(self, ipv4: DirectIpv4, link: DirectLink, partial: bool) -> None:
        self.ipv4 = ipv4
        self.link = link
        self.partial = partial  # the device completes checksums (and cuts super-segments)
        self.templates: dict[object, TxTemplate] = {}
        self.built = 0  # frames built (tests check which path ran)

    def template(self, owner: object, src: bytes, dst: bytes, sport: int, dport: int) -> TxTemplate:
        """The template of *owner* (a connection), made on its first frame."""
        tpl = self.templates.get(owner)
        if tpl is None:
            tpl = self.templates[owner] = TxTemplate(src, dst, sport, dport)
        return tpl

    def forget(self, owner: object) -> None:
        self.templates.pop(owner, None)

    def send(self, tpl: TxTemplate, seg: TcpRepr, ctx: Context) -> None:
        """Queue *seg* as a finished frame (or count why it was dropped, as the layers would)."""
        frame = self.frame(tpl, seg, ctx)
        if frame is not None:
            self.built += 1
            ctx.queue_frame(frame)

    def frame(self, tpl: TxTemplate, seg: TcpRepr, ctx: Context) -> Frame | None:
        ipv4 = self.ipv4
        # RFC 1122 §3.2.1.3: the source of every datagram we send is our own unicast address.
        if tpl.src != ipv4.address:
            ctx.stats.drop("ipv4", "bad_source_out")
            return None
        payload = seg.payload
        plen = len(payload)
        flags = seg.flags
        ts = seg.ts
        opts: bytearray | None = None
        if seg.mss is None and seg.wscale is None and not seg.sack_perm and not seg.sack:
            hlen = 20 if ts is None else 32
        else:
            opts = bytearray(seg.options_len())
            emit_options(seg, opts, 0)
            hlen = 20 + len(opts)
        tcp_len = hlen + plen
        total = _IP_HLEN + tcp_len
        # RFC 6864 §4: Identification from the IPv4 layer's one counter (taken, as there, before
        # the size checks).
        ident = ipv4.take_ident()
        partial = self.partial
        gso = seg.gso_size if partial else 0
        if total > ipv4.mtu and not (gso and total <= _MAX_DATAGRAM):
            # RFC 1122 §3.3.3: never a datagram larger than the MTU; TCP's carry DF, so no
            # fragmenting (a super-segment is cut to the MTU by the device).
            ctx.stats.drop("ipv4", "too_big_df")
            return None
        link = self.link
        vnet = link.vnet
        if total > link.mtu and not (gso and vnet and total <= _MAX_DATAGRAM):
            ctx.stats.drop("link", "too_big")
            return None
        tos = seg.ip_ecn  # RFC 3168 §5: the ECN field; no DSCP
        ttl = ipv4.ttl
        # fold() inlined (framework/checksum.py): these sums are never 0 (version/IHL, protocol).
        r = (tpl.ip_sum + (tos + total + ident + (ttl << 8))) % 0xFFFF
        ip_csum = 0xFFFF - r if r else 0
        if partial:
            # The pseudo-header's sum (addresses, protocol, length), not inverted: the device adds
            # the segment and inverts (Linux CHECKSUM_PARTIAL; MUST-2 still met).
            csum = 0xFFFF ^ fold(tpl.pseudo + tcp_len)
        else:
            # RFC 9293 §3.1 (MUST-2): pseudo-header, header fields, options, payload.
            s = tpl.pseudo + tcp_len + tpl.ports_sum + seg.seq + seg.ack + ((hlen << 10) | flags)
            s += seg.window + seg.urgent
            if opts is not None:
                s += int.from_bytes(opts, "big")  # whole 32-bit words: no odd byte
            elif ts is not None:
                s += _TS_WORDS + ts[0] + ts[1]
            if plen:
                s += ones_sum(payload)
            r = s % 0xFFFF
            csum = 0xFFFF - r if r else 0
        if ts is not None and opts is None:
            hdr = _IP_TCP_TS.pack(
                0x45, tos, total, ident, _DF, ttl, PROTO_TCP, ip_csum, tpl.src, tpl.dst,
                tpl.sport, tpl.dport, seg.seq, seg.ack, hlen << 2, flags, seg.window, csum, seg.urgent,
                1, 1, 8, 10, ts[0], ts[1],
            )  # fmt: skip
        else:
            hdr = _IP_TCP.pack(
                0x45, tos, total, ident, _DF, ttl, PROTO_TCP, ip_csum, tpl.src, tpl.dst,
                tpl.sport, tpl.dport, seg.seq, seg.ack, hlen << 2, flags, seg.window, csum, seg.urgent,
            )  # fmt: skip
            if opts is not None:
                hdr += opts
        if vnet:
            if partial:
                # csum_start: the TCP header; csum_offset: its checksum field (RFC 9293 §3.1). A
                # super-segment with CWR (RFC 3168 §6.1.2) is marked ECN, as Linux marks its own.
                gso_type = (_GSO_TCPV4 | (_GSO_ECN if flags & CWR else 0)) if gso else 0
                hdr = _VNET.pack(_VNET_F_NEEDS_CSUM, gso_type, _IP_HLEN + hlen, gso, _IP_HLEN, 16) + hdr
            else:
                hdr = _PLAIN_VNET + hdr
        if plen:
            return (hdr, payload)
        return hdr
