"""The IPv4 layer (RFC 791, RFC 1122 §3.2-3.3) with ICMP (RFC 792, RFC 1122 §3.2.2).

Receive path: parse and check the header, accept only datagrams for our address from valid
sources, reassemble fragments, answer ICMP echo, pass ICMP errors to the transport named by the
quoted header, and hand everything else to the layer above that claims the protocol. A
protocol nobody above claims gets ICMP Destination Unreachable (protocol).

Send path: the transport sets ``pkt.net`` to an :class:`Ipv4Repr` naming destination and
protocol (:meth:`Ipv4Layer.make_header`); this layer fills in TTL and identification, and
pushes the header. A datagram larger than the link MTU is fragmented unless DF is set
(RFC 791 §3.2).

To the transports above, this layer is a :class:`~framework.netlayer.NetworkLayer` (addresses,
MTU, headers, ICMP errors as :class:`~framework.netlayer.NetError`); from the link below it
takes the :class:`~framework.capabilities.LinkCapabilities` (the MTU).

Every rejection is counted as ``ipv4.<reason>`` or ``icmp.<reason>``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from framework.capabilities import capabilities_below
from framework.checksum import BytesLike
from framework.config import CheckContext
from framework.context import Context
from framework.errors import ConfigError, WireError
from framework.handler import BaseHandler, PacketHandler
from framework.netlayer import NetworkLayer
from framework.packet import Packet
from framework.pipeline import Above
from framework.plugins import hookimpl
from framework.registry import Registry
from layers.ipv4 import icmp
from layers.ipv4.reassembly import Reassembler
from layers.ipv4.wire import HEADER_LEN, PROTO_ICMP, Ipv4Repr, is_invalid_source, is_multicast


def _check_address(value: str) -> str | None:
    if "/" not in value:
        return f"{value!r} has no prefix length; write it like '10.0.0.2/24'"
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        return f"{value!r} is not an IPv4 address with prefix, like '10.0.0.2/24'"
    ip = iface.ip
    if ip.is_multicast or ip.is_loopback or ip.is_unspecified or ip.is_reserved or int(ip) >> 24 == 0:
        return f"{ip} cannot be a host address"
    net = iface.network
    if net.prefixlen < 31 and ip in (net.network_address, net.broadcast_address):
        return f"{ip} is the network or broadcast address of {net}"
    return None


@dataclass(slots=True)
class Ipv4Settings:
    address: str = field(default="10.0.0.2/24", metadata={"check": _check_address})
    """The stack's own address and prefix, e.g. ``"10.0.0.2/24"``. Datagrams for any other
    destination are discarded (RFC 1122 §3.2.1.3)."""

    ttl: int = field(default=64, metadata={"min": 1, "max": 255})
    """TTL of datagrams we send (RFC 1122 §3.2.1.7, RFC 9293 MUST-49): never 0."""

    mtu: int | None = field(default=None, metadata={"min": 68, "max": 65535})
    """Largest datagram to send; default: the MTU of the link layer below."""

    reassembly_timeout: float = field(default=60.0, metadata={"min": 1.0, "max": 255.0})
    """Seconds a partial datagram is kept (RFC 1122 §3.3.2: fixed, 60-120 s recommended)."""

    reassembly_max_datagrams: int = field(default=64, metadata={"min": 1, "max": 65536})
    """Partial datagrams held at once; the oldest is evicted beyond this."""

    reassembly_max_bytes: int = field(default=1 << 20, metadata={"min": 65535, "max": 1 << 30})
    """Octets held in partial datagrams at once; the oldest are evicted beyond this."""

    icmp_errors_per_second: float = field(default=50.0, metadata={"min": 0.0, "max": 100000.0})
    """Rate limit of ICMP error messages we send (RFC 1122 §3.2.2 permits limiting); 0 sends none."""

    echo_reply: bool = True
    """Answer ICMP echo requests (RFC 1122 §3.2.2.6: every host MUST implement an echo server)."""

    verify_checksum: bool = True
    """Verify header and ICMP checksums. Turn off only behind a link that guarantees them."""

    ident_seed: int | None = None
    """Start value of the identification counter; default random (set for reproducible runs)."""

    def check(self, context: CheckContext) -> None:
        """What :meth:`Ipv4Layer.attach` checks, on the validated configuration, so a
        configuration check finds it without building anything: ``mtu`` fits the link's."""
        found = context.link_below()
        if found is not None and self.mtu and self.mtu > found[1].mtu:
            link, caps = found
            problems, path = context.problems, context.path
            problems.append(f"{path}.mtu: {self.mtu} exceeds the MTU {caps.mtu} of the {link.type} layer below")


class _TokenBucket:
    """Rate limiter for the ICMP errors we originate."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(rate, 1.0)
        self.tokens = self.burst
        self.last: float | None = None

    def take(self, now: float) -> bool:
        if self.rate <= 0:
            return False
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Ipv4Layer(BaseHandler):
    """The IPv4 pipeline handler."""

    def __init__(self, name: str, settings: Ipv4Settings) -> None:
        self.name = name
        self.settings = settings
        iface = ipaddress.IPv4Interface(settings.address)
        self.interface = iface
        self.address: bytes = iface.ip.packed
        net = iface.network
        self.network: bytes = net.network_address.packed
        self.broadcast: bytes = net.broadcast_address.packed
        self.prefixlen = net.prefixlen
        self.ttl = settings.ttl
        self.mtu = settings.mtu or 0  # resolved at attach
        self.verify = settings.verify_checksum
        self.protocols: frozenset[int] = frozenset()
        seed = settings.ident_seed if settings.ident_seed is not None else int.from_bytes(os.urandom(2), "big")
        self._ident = seed & 0xFFFF
        self.reassembler = Reassembler(
            timeout=settings.reassembly_timeout,
            max_datagrams=settings.reassembly_max_datagrams,
            max_bytes=settings.reassembly_max_bytes,
        )
        self._icmp_limit = _TokenBucket(settings.icmp_errors_per_second)

    # ------------------------------------------------------------------ assembly

    def attach(self, below: Sequence[PacketHandler], above: Sequence[PacketHandler]) -> None:
        caps = capabilities_below(below)
        if caps is None and not self.mtu:
            raise ConfigError(["ipv4: no link layer below provides an MTU; set ipv4.mtu"])
        link_mtu = caps.mtu if caps is not None else 0
        if self.mtu and link_mtu and self.mtu > link_mtu:
            raise ConfigError([f"ipv4.mtu {self.mtu} exceeds the link MTU {link_mtu}"])
        self.mtu = self.mtu or link_mtu
        # The protocols the layers above take (their keys in the pipeline graph): anything else
        # gets Destination Unreachable (protocol) below.
        self.protocols = above.keys if isinstance(above, Above) else frozenset()

    # ------------------------------------------------------------------ network layer interface

    header_len = HEADER_LEN
    """RFC 791 §3.1: the header we send has no options."""

    #: ``make_header(src, dst, protocol, *, tos=0, dont_frag=True)``: the header class itself, so
    #: a transport's per-segment call costs no more than constructing it directly.
    make_header = Ipv4Repr

    def local_addresses(self) -> Sequence[bytes]:
        return (self.address,)

    def is_broadcast(self, addr: bytes) -> bool:
        # RFC 1122 §3.2.1.3: the limited broadcast, and the directed broadcast of our subnet
        # (a /31 or /32 has none, RFC 3021).
        return addr == b"\xff\xff\xff\xff" or (addr == self.broadcast and self.prefixlen < 31)

    def mtu_to(self, dst: bytes | None = None) -> int:
        # One point-to-point route: the same MTU towards every peer (RFC 1122 §3.3.3).
        return self.mtu

    def pseudo_header_sum(self, src: bytes, dst: bytes, protocol: int, length: int) -> int:
        # RFC 768 ("Fields"), RFC 9293 §3.1: source, destination, zero, protocol, length; the
        # eight address octets read as one integer are congruent to the sum of their words.
        return int.from_bytes(src + dst, "big") + protocol + length

    def port_unreachable(self, header: object, payload: BytesLike, ctx: Context) -> bool:
        """RFC 1122 §4.1.3.1 (SHOULD): Destination Unreachable (port) about a datagram passed
        up, under the rules of :meth:`_send_error`. The quote is rebuilt from the parsed header
        (IP options, which the layer does not keep, are not quoted: the sender matches errors by
        addresses, protocol and ports) and the transport bytes."""
        if not isinstance(header, Ipv4Repr):
            return False
        room = icmp.MAX_ERROR_DATAGRAM - 2 * HEADER_LEN - icmp.HEADER_LEN  # RFC 1812 §4.3.2.3
        quoted = payload[:room]
        raw = bytearray(HEADER_LEN + len(quoted))
        header.emit(raw, 0, header.payload_len)  # Total Length: the 20 octets quoted and the data
        raw[HEADER_LEN:] = quoted
        return self._send_error(icmp.DEST_UNREACHABLE, icmp.UNREACH_PORT, header, raw, ctx)

    # ------------------------------------------------------------------ receive

    @property
    def direct_rx(self) -> bool:
        """A transport above may take its datagrams before the pipeline reaches this layer
        (layers/tcp/demux.py) only if it does this layer's part exactly: when this receive is
        the one it copies, not a subclass's."""
        return type(self).receive is Ipv4Layer.receive

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        raw = cast(memoryview, pkt.payload)  # inbound packets always carry a view
        try:
            hdr, payload = Ipv4Repr.parse(raw, verify_checksum=self.verify)
        except WireError as exc:
            ctx.stats.drop("ipv4", exc.reason)
            return None
        dst = hdr.dst
        if dst != self.address:
            # RFC 1122 §3.2.1.3: accept only datagrams for our own address; broadcast and
            # multicast groups are not joined (RFC 9293 MUST-57: TCP discards them anyway).
            if dst == b"\xff\xff\xff\xff" or (dst == self.broadcast and self.prefixlen < 31):
                ctx.stats.drop("ipv4", "broadcast")
            elif is_multicast(dst):
                ctx.stats.drop("ipv4", "multicast")
            else:
                ctx.stats.drop("ipv4", "not_for_us")
            return None
        src = hdr.src
        # RFC 1122 §3.2.1.3: discard datagrams from invalid sources; a datagram claiming our
        # own address or our subnet's broadcast as source is spoofed ("land").
        if is_invalid_source(src) or src == self.address or (src == self.broadcast and self.prefixlen < 31):
            ctx.stats.drop("ipv4", "bad_source")
            return None
        # RFC 1122 §3.2.1.7: a host does not drop inbound datagrams for a low TTL.
        if hdr.is_fragment:
            # RFC 791 §3.2 / RFC 1122 §3.3.2: reassemble before delivery.
            evicted = self.reassembler.evicted
            try:
                whole = self.reassembler.add(hdr, payload, raw[: hdr.header_len + len(payload)], now=ctx.now)
            except WireError as exc:
                ctx.stats.drop("ipv4", exc.reason)
                return None
            finally:
                for _ in range(self.reassembler.evicted - evicted):
                    ctx.stats.drop("ipv4", "reassembly_evicted")
            if whole is None:
                ctx.stats.count("ipv4.fragments_held")
                return None
            ctx.stats.count("ipv4.reassembled")
            hdr, datagram = whole
            # The reassembled datagram (fragment 0's header, updated), also for ICMP quoting below.
            raw = memoryview(datagram)
            payload = raw[hdr.header_len :]
        proto = hdr.protocol
        if proto == PROTO_ICMP:
            return self._receive_icmp(hdr, payload, raw, ctx, pkt.csum_ok)
        if proto in self.protocols:
            pkt.net = hdr
            pkt.payload = payload
            pkt.upper = proto  # the pipeline hands it to the layer above that takes this protocol
            return pkt
        ctx.stats.drop("ipv4", "unknown_protocol")
        # RFC 1122 §3.2.2.1: a host SHOULD generate Destination Unreachable (protocol).
        self._send_error(icmp.DEST_UNREACHABLE, icmp.UNREACH_PROTOCOL, hdr, raw, ctx)
        return None

    def _receive_icmp(
        self, hdr: Ipv4Repr, payload: memoryview, raw: memoryview, ctx: Context, csum_ok: bool = False
    ) -> Packet | None:
        try:
            # RFC 1122 §3.2.2: verify, unless the link vouches for the checksum (TUN offload).
            msg = icmp.IcmpRepr.parse(payload, verify_checksum=self.verify and not csum_ok)
        except WireError as exc:
            ctx.stats.drop("icmp", exc.reason)
            return None
        t = msg.type
        if t == icmp.ECHO_REQUEST:
            if not self.settings.echo_reply:
                ctx.stats.drop("icmp", "echo_disabled")
                return None
            # RFC 1122 §3.2.2.6: reply with the same identifier, sequence number and data, from
            # the address the request was sent to.
            reply = Packet(b"", Ipv4Repr(self.address, hdr.src, PROTO_ICMP, tos=hdr.tos, dont_frag=False))
            reply.push(icmp.IcmpRepr(icmp.ECHO_REPLY, 0, msg.rest, bytes(msg.data)))
            ctx.stats.count("icmp.echo_replies")
            out = self.send(reply, ctx)  # None when it left in fragments
            if out is not None:
                ctx.transmit(self, out)
            return None
        if t in (icmp.DEST_UNREACHABLE, icmp.TIME_EXCEEDED, icmp.PARAMETER_PROBLEM):
            try:
                quoted, quoted_payload = Ipv4Repr.parse_quoted(memoryview(msg.data))
            except WireError as exc:
                ctx.stats.drop("icmp", exc.reason)
                return None
            # Only errors about datagrams we sent concern us (RFC 5927: check the quote).
            if quoted.src != self.address:
                ctx.stats.drop("icmp", "foreign_quote")
                return None
            if quoted.protocol not in self.protocols or len(quoted_payload) < 8:
                ctx.stats.drop("icmp", "unhandled_error")
                return None
            # RFC 9293 §3.9.2.2, MUST-54: pass the error to the transport the quote names.
            err = Packet(quoted_payload, quoted)
            err.error = icmp.IcmpError.from_message(msg)
            err.frame_no = 0
            err.upper = quoted.protocol
            ctx.stats.count("icmp.errors_received")
            return err
        if t == icmp.SOURCE_QUENCH:
            # RFC 6633, RFC 9293 MUST-55: Source Quench is silently discarded.
            ctx.stats.drop("icmp", "source_quench")
            return None
        if t == icmp.REDIRECT:
            # RFC 1122 §3.2.2.2: we have one point-to-point route; there is nothing to redirect.
            ctx.stats.drop("icmp", "redirect")
            return None
        if t == icmp.ECHO_REPLY:
            ctx.stats.drop("icmp", "unsolicited_echo_reply")
            return None
        # RFC 1122 §3.2.2: unknown ICMP types MUST be silently discarded.
        ctx.stats.drop("icmp", "unknown_type")
        return None

    def _send_error(
        self, type_: int, code: int, hdr: Ipv4Repr, raw: memoryview | bytes | bytearray, ctx: Context
    ) -> bool:
        """Send an ICMP error about the datagram *raw*, unless RFC 1122 §3.2.2 forbids it;
        ``True`` if it was sent."""
        # RFC 1122 §3.2.2: never about an ICMP error, a non-initial fragment, a broadcast or
        # multicast datagram, or one whose source is not a single host.
        if hdr.protocol == PROTO_ICMP and len(raw) > hdr.header_len and raw[hdr.header_len] in icmp.ERROR_TYPES:
            return False
        if hdr.frag_offset != 0 or hdr.dst != self.address or is_invalid_source(hdr.src):
            return False
        if not self._icmp_limit.take(ctx.now):
            ctx.stats.count("icmp.errors_rate_limited")
            return False
        pkt = Packet(b"", Ipv4Repr(self.address, hdr.src, PROTO_ICMP, dont_frag=False))
        pkt.push(icmp.error_message(type_, code, raw, hdr.header_len))
        ctx.stats.count("icmp.errors_sent")
        out = self.send(pkt, ctx)
        if out is not None:
            ctx.transmit(self, out)
        return True

    # ------------------------------------------------------------------ send

    #: A transport may build its datagrams whole when this layer and the link are all that lies
    #: below it (layers/tcp/txframe.py): it then takes TTL, MTU and identification from here.
    direct_ipv4 = True

    def take_ident(self) -> int:
        """The next Identification (RFC 6864 §4: one counter for every datagram we send)."""
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

    def send(self, pkt: Packet, ctx: Context) -> Packet | None:
        hdr = pkt.net
        if not isinstance(hdr, Ipv4Repr):
            ctx.stats.drop("ipv4", "no_header")
            return None
        # RFC 1122 §3.2.1.3: the source of every datagram we send is our own unicast address.
        if hdr.src != self.address:
            ctx.stats.drop("ipv4", "bad_source_out")
            return None
        hdr.ttl = self.ttl
        payload_len = len(pkt)
        # RFC 6864 §4: identification is unique per (src, dst, protocol) within MSL for
        # datagrams that may be fragmented; one counter for all destinations satisfies that.
        self._ident = (self._ident + 1) & 0xFFFF
        hdr.ident = self._ident
        if HEADER_LEN + payload_len <= self.mtu or (pkt.gso_size and HEADER_LEN + payload_len <= 0xFFFF):
            # (A TCP super-segment for a link with segmentation offload: the kernel cuts it to
            # the MTU, each piece a whole datagram with DF, so it is never fragmented.)
            hdr.payload_len = payload_len
            pkt.push(hdr)
            return pkt
        if hdr.dont_frag:
            # RFC 1122 §3.3.3: never send a datagram larger than the link MTU.
            ctx.stats.drop("ipv4", "too_big_df")
            return None
        self._fragment(pkt, hdr, ctx)
        return None

    def _fragment(self, pkt: Packet, hdr: Ipv4Repr, ctx: Context) -> None:
        """RFC 791 §3.2: split into fragments whose data (but the last's) is a multiple of 8."""
        data = pkt.to_bytes()
        step = (self.mtu - HEADER_LEN) & ~7
        for off in range(0, len(data), step):
            chunk = data[off : off + step]
            more = off + step < len(data)
            frag_hdr = Ipv4Repr(
                hdr.src, hdr.dst, hdr.protocol, len(chunk), hdr.ttl, hdr.tos, hdr.ident, False, more, off
            )
            frag = Packet(chunk, frag_hdr)
            frag.push(frag_hdr)
            ctx.stats.count("ipv4.fragments_sent")
            ctx.transmit(self, frag)

    # ------------------------------------------------------------------ timers

    def poll_at(self) -> float | None:
        return self.reassembler.poll_at()

    def handle_timer(self, ctx: Context) -> None:
        for gone in self.reassembler.expire(ctx.now):
            ctx.stats.drop("ipv4", "reassembly_timeout")
            # RFC 1122 §3.3.2: send Time Exceeded (reassembly) if fragment 0 had arrived.
            if gone.first is not None:
                first, _ = Ipv4Repr.parse_quoted(memoryview(gone.first))
                first.frag_offset = 0
                self._send_error(icmp.TIME_EXCEEDED, icmp.REASSEMBLY_EXCEEDED, first, gone.first, ctx)


if TYPE_CHECKING:  # mypy proves the layer is what transports take it for
    _as_network_layer: NetworkLayer = Ipv4Layer("ipv4", Ipv4Settings())


def _ipv4(name: str, settings: Ipv4Settings) -> Ipv4Layer:
    return Ipv4Layer(name, settings)


@hookimpl
def stack_register(registry: Registry) -> None:
    registry.add_layer(
        "ipv4",
        _ipv4,
        Ipv4Settings,
        doc="IPv4 with ICMP echo, errors and fragment reassembly",
        provides=("ipv4",),
        requires=("link",),
        demux="ip.protocol",  # pkt.upper: the protocol number (RFC 791 §3.1)
        accepts={"ip.version": [4]},  # RFC 791 §3.1: Version 4
        check=Ipv4Settings.check,
    )
