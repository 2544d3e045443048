"""Link layers for raw IP framing: a TUN device (``tun``) and an in-memory link (``memory``).

A TUN device opened with ``IFF_NO_PI`` carries bare IP datagrams, so the link handler in the
core is thin: it only knows the MTU (the largest datagram the link carries, RFC 1122 §3.3.3
MMS_S/EMTU_R) and passes packets through. Opening the device is the I/O edge's job
(:mod:`tcpstack.io.tun`), driven by these settings.

With ``offload = true`` the device is opened with ``IFF_VNET_HDR`` and checksum plus TCP
segmentation offload (docs/architecture.md, "TUN offload"): every frame then starts with a 10-byte
``virtio_net_hdr``. This handler, still sans-IO, strips it from arriving frames (a frame whose
checksum the kernel left partial, ``NEEDS_CSUM``, is marked so that TCP does not verify it; the
kernel may hand over TCP super-segments of up to 64 KB) and puts one in front of every frame it
sends: for TCP, "complete the checksum" and, for a super-segment, "cut it into segments of
gso_size bytes" (TSO); all zero for anything else, whose checksums are complete.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from framework.capabilities import LinkCapabilities, OffersCapabilities
from framework.context import Context
from framework.handler import BaseHandler
from framework.packet import Packet
from framework.plugins import hookimpl
from framework.registry import Registry

_IFNAME = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")

#: ``struct virtio_net_hdr`` (<linux/virtio_net.h>): flags, gso_type, hdr_len, gso_size,
#: csum_start, csum_offset; little-endian on the machines TUN runs on.
VNET_HDR = struct.Struct("<BBHHHH")
VNET_HDR_LEN = VNET_HDR.size  # 10
VNET_F_NEEDS_CSUM = 1  # the transport checksum holds only the pseudo-header sum
VNET_F_DATA_VALID = 2  # the checksum was already verified
GSO_NONE, GSO_TCPV4 = 0, 1
GSO_ECN = 0x80


def check_ifname(value: str) -> str | None:
    return None if _IFNAME.match(value) else "must be 1-15 characters of letters, digits, '_', '.', '-'"


@dataclass(slots=True)
class TunSettings:
    device: str = field(default="tun0", metadata={"check": check_ifname})
    """Name of the TUN device. An existing (e.g. persistent, ``ip tuntap add``) device is
    attached to; a missing one is an error unless ``create`` is true."""

    mtu: int = field(default=1500, metadata={"min": 576, "max": 65535})
    """Largest IP datagram the link carries (RFC 1122 §3.3.3). Set on the device when it is
    created; must match an existing device's MTU."""

    create: bool = False
    """Create the device if it does not exist (needs CAP_NET_ADMIN). Off by default, so a
    mistyped name is an error instead of a new, unconfigured device. A created device gets a
    transmit queue of 10000 frames (tun's default of 500 drops bursts)."""

    kernel_address: str | None = None
    """If set (``"10.0.0.1/24"``), bring the device up and give the kernel's side this address.
    Handy for a device the stack creates itself; needs CAP_NET_ADMIN."""

    offload: bool = False
    """Open the device with ``IFF_VNET_HDR`` and checksum + TCP segmentation offload, both
    ways: TCP super-segments of up to 64 KB with partial checksums, which are not verified
    (they never crossed a wire) and which the kernel completes and cuts for ours. About ten
    times faster; off by default so that every checksum is computed and checked in Python (the
    device is then set back to no offload, which a persistent device would otherwise keep)."""


@dataclass(slots=True)
class MemorySettings:
    mtu: int = field(default=1500, metadata={"min": 576, "max": 65535})
    """Largest IP datagram the in-memory link carries."""


class _PlainVnetHeader:
    """The ``virtio_net_hdr`` in front of a sent frame: all zero, no offload asked for."""

    __slots__ = ()

    def buffer_len(self) -> int:
        return VNET_HDR_LEN

    def emit(self, buf: bytearray, offset: int, payload_len: int) -> None:
        buf[offset : offset + VNET_HDR_LEN] = bytes(VNET_HDR_LEN)


_PLAIN_VNET = _PlainVnetHeader()

#: The largest IPv4 datagram, so the largest super-segment the kernel takes (``tso_max_size``).
MAX_GSO_DATAGRAM = 65535


class _OffloadVnetHeader:
    """A ``virtio_net_hdr`` asking the kernel to complete a partial TCP checksum and, with a
    ``gso_size``, to cut the super-segment behind it into segments (TSO). Header lengths are
    read from the IPv4 and TCP headers that follow, which are final when this one is emitted."""

    __slots__ = ("gso_size",)

    def __init__(self, gso_size: int) -> None:
        self.gso_size = gso_size

    def buffer_len(self) -> int:
        return VNET_HDR_LEN

    def emit(self, buf: bytearray, offset: int, payload_len: int) -> None:
        ip = offset + VNET_HDR_LEN
        ihl = (buf[ip] & 0x0F) * 4
        tcp = ip + ihl
        doff = (buf[tcp + 12] >> 4) * 4
        # A super-segment carrying CWR (RFC 3168 §6.1.2) is marked SKB_GSO_TCP_ECN, as Linux marks
        # its own (tcp_gso_segment keeps CWR on the first piece only either way).
        gso_type = (GSO_TCPV4 | (GSO_ECN if buf[tcp + 13] & 0x80 else 0)) if self.gso_size else GSO_NONE
        # csum_start: the TCP header; csum_offset: its checksum field (RFC 9293 §3.1).
        VNET_HDR.pack_into(buf, offset, VNET_F_NEEDS_CSUM, gso_type, ihl + doff, self.gso_size, ihl, 16)


class RawIpLink(BaseHandler):
    """Bottom of the pipeline for links that carry bare IP datagrams (TUN, memory), with or
    without a ``virtio_net_hdr`` in front of each (TUN offload)."""

    def __init__(self, name: str, mtu: int, settings: TunSettings | MemorySettings) -> None:
        self.name = name
        self.mtu = mtu
        self.settings = settings
        self.vnet = isinstance(settings, TunSettings) and settings.offload
        self.capabilities = _capabilities(mtu, self.vnet)
        """What the layers above receive at attach time."""

    @property
    def direct_rx(self) -> bool:
        """A transport may take frames before the pipeline reaches this link (layers/tcp/demux.py)
        only if it does this link's part exactly: when this receive is the one it copies."""
        return type(self).receive is RawIpLink.receive and type(self)._receive_vnet is RawIpLink._receive_vnet

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        if not len(pkt.payload):
            ctx.stats.drop("link", "empty")
            return None
        if self.vnet:
            return self._receive_vnet(pkt, ctx)
        ctx.stats.count("frames_in")
        pkt.upper = pkt.payload[0] >> 4  # the IP version (RFC 791 §3.1, RFC 8200 §3) picks the layer above
        return pkt

    def _receive_vnet(self, pkt: Packet, ctx: Context) -> Packet | None:
        frame = pkt.payload
        if len(frame) <= VNET_HDR_LEN:
            ctx.stats.drop("link", "short_vnet_header")
            return None
        flags, gso_type, _hdr_len, _gso_size, _start, _offset = VNET_HDR.unpack_from(frame)
        if gso_type & ~GSO_ECN not in (GSO_NONE, GSO_TCPV4):
            ctx.stats.drop("link", "unsupported_gso")  # UDP or IPv6 super-packets: not ours to split
            return None
        pkt.payload = frame[VNET_HDR_LEN:]
        pkt.upper = frame[VNET_HDR_LEN] >> 4  # the IP version picks the layer above
        if flags & (VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID):
            pkt.csum_ok = True
        ctx.stats.count("frames_in")
        if gso_type:
            ctx.stats.count("link.gso_frames_in")
        return pkt

    #: A transport may build its frames whole (layers/tcp/txframe.py does this handler's part,
    #: the MTU check and the ``virtio_net_hdr``) when only the network layer lies between.
    direct_link = True

    def send(self, pkt: Packet, ctx: Context) -> Packet | None:
        size = len(pkt)
        # Never hand the link more than it carries (RFC 1122 §3.3.3); a super-segment is cut
        # to the MTU by the kernel.
        if size > self.mtu and not (pkt.gso_size and self.vnet and size <= MAX_GSO_DATAGRAM):
            ctx.stats.drop("link", "too_big")
            return None
        if self.vnet:
            if pkt.csum_partial:
                pkt.push(_OffloadVnetHeader(pkt.gso_size))
            else:
                pkt.push(_PLAIN_VNET)
        return pkt


if TYPE_CHECKING:  # mypy proves the link offers what the layers above look for
    _offers: OffersCapabilities = RawIpLink("memory", 1500, MemorySettings())


def _capabilities(mtu: int, offload: bool) -> LinkCapabilities:
    """With TUN offload the kernel hands over frames with partial checksums it vouches for,
    completes ours, and cuts TCP super-segments of up to :data:`MAX_GSO_DATAGRAM` bytes."""
    if offload:
        return LinkCapabilities(mtu, checksum_rx=True, checksum_tx=True, max_super_segment=MAX_GSO_DATAGRAM)
    return LinkCapabilities(mtu)


def _tun(name: str, settings: TunSettings) -> RawIpLink:
    return RawIpLink(name, settings.mtu, settings)


def _memory(name: str, settings: MemorySettings) -> RawIpLink:
    return RawIpLink(name, settings.mtu, settings)


@hookimpl
def stack_register(registry: Registry) -> None:
    registry.add_layer(
        "tun",
        _tun,
        TunSettings,
        doc="Linux TUN device carrying bare IP datagrams",
        provides=("link",),
        bottom=True,
        demux="ip.version",
        capabilities=lambda s: _capabilities(s.mtu, s.offload),
    )
    registry.add_layer(
        "memory",
        _memory,
        MemorySettings,
        doc="in-memory link for tests and simulation",
        provides=("link",),
        bottom=True,
        demux="ip.version",
        capabilities=lambda s: _capabilities(s.mtu, False),
    )
