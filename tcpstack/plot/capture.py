"""Reading a capture for ``tcpstack plot``: pcap and pcapng files, split into TCP connections.

The files (classic pcap in either byte order with micro- or nanosecond timestamps; pcapng with
any number of sections and interfaces, each with its own link type and timestamp resolution) and
the link layers (raw IP: link types 101, 12, 14, 228 and 229; Ethernet with VLAN tags: 1; Linux
cooked v1: 113 and v2: 276; BSD loopback/null: 0 and 108) are decoded by dpkt; this module keeps
of every TCP segment only the numbers the graphs need, in arrays (24 bytes a segment, 12 more per
SACK block), so a capture of millions of frames fits in memory.

A frame that cannot be read (not IP, not TCP, a fragment, a garbage or truncated header) is
skipped and counted by reason in :class:`ReadStats`; a file that is not a capture, or whose link
type is not one of the above, raises :class:`CaptureError` with one line to show. A file cut
short (a capture still being written, a killed tcpdump) gives the frames before the cut and a
note.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import struct
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

import dpkt

__all__ = ["Capture", "CaptureError", "Conn", "Endpoint", "ReadStats", "format_endpoint", "read_capture"]

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

#: Link types read as bare IP datagrams (the version nibble tells v4 from v6): LINKTYPE_RAW (101),
#: the DLT_RAW values some systems wrote into files (12, 14), LINKTYPE_IPV4 (228), LINKTYPE_IPV6 (229).
RAW_LINKTYPES: Final = frozenset({101, 12, 14, 228, 229})
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_NULL: Final = 0
LINKTYPE_LOOP: Final = 108
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_LINUX_SLL2: Final = 276
SUPPORTED = "raw IP (101, 12, 14, 228, 229), Ethernet (1), Linux cooked v1 (113) and v2 (276), loopback (0, 108)"

#: The largest record or block believed: a corrupt length field must not make us allocate gigabytes.
MAX_RECORD: Final = 16 << 20

_PCAP_MAGICS: Final = frozenset(
    {0xA1B2C3D4, 0xD4C3B2A1, 0xA1B23C4D, 0x4D3CB2A1}  # micro- and nanosecond, both byte orders
)
_PCAPNG_SHB: Final = 0x0A0D0D0A
_BOM: Final = 0x1A2B3C4D


class CaptureError(Exception):
    """The file cannot be read as a capture at all (one line to show the user)."""


@dataclass(slots=True)
class ReadStats:
    """What reading a capture met: frames read, TCP segments kept, and the rest by reason."""

    frames: int = 0
    tcp: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    """Frames not used, by reason: not IP (ARP...), not TCP (UDP, ICMP...), an IP fragment, or
    malformed (a garbage or truncated header, a broken TCP header)."""
    notes: list[str] = field(default_factory=list)
    """File-level problems that did not stop the reading (a file cut short, a corrupt block)."""

    def malformed(self) -> int:
        return sum(n for reason, n in self.skipped.items() if reason.startswith("malformed"))


Endpoint = tuple[str, int]
"""An address as text (IPv6 compressed, without brackets) and a port."""


def format_endpoint(ep: Endpoint) -> str:
    """``10.0.0.2:80``, ``[fd00::2]:80``."""
    addr, port = ep
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


class Conn:
    """One TCP connection of a capture: both directions' segments in capture order.

    Side 0 is the source of the connection's first frame, side 1 the other end. Per segment the
    arrays hold: time (s), side, flags, SEG.SEQ, SEG.ACK, SEG.WND (unscaled), payload length; a
    segment's SACK blocks are in :attr:`sack_at` (the segment's index), :attr:`sack_left` and
    :attr:`sack_right` (absolute sequence numbers, RFC 2018 §3).
    """

    __slots__ = (
        "closed",
        "ends",
        "index",
        "isn",
        "mss",
        "payload",
        "sack_at",
        "sack_left",
        "sack_ok",
        "sack_right",
        "seg_ack",
        "seg_flags",
        "seg_len",
        "seg_seq",
        "seg_side",
        "seg_t",
        "seg_win",
        "segments",
        "syn_ack_side",
        "syn_seen",
        "t_max",
        "t_min",
        "wscale",
    )

    def __init__(self, index: int, a: Endpoint, b: Endpoint) -> None:
        self.index = index
        """Order of first appearance in the capture, from 1."""
        self.ends: tuple[Endpoint, Endpoint] = (a, b)
        self.seg_t = array("d")
        self.seg_side = array("B")
        self.seg_flags = array("B")
        self.seg_seq = array("I")  # 4 bytes each ("L" is 8 on 64-bit Linux)
        self.seg_ack = array("I")
        self.seg_win = array("H")
        self.seg_len = array("I")
        self.sack_at = array("I")
        self.sack_left = array("I")
        self.sack_right = array("I")
        self.syn_seen = [False, False]
        self.isn = [0, 0]
        """Each side's SYN sequence number (when :attr:`syn_seen`)."""
        self.mss: list[int | None] = [None, None]
        self.wscale: list[int | None] = [None, None]
        """Each side's window scale option in its SYN (RFC 7323 §2.2), ``None`` if absent."""
        self.sack_ok = [False, False]
        self.syn_ack_side: int | None = None
        """The side that sent a SYN-ACK (the passive opener, the server) if seen."""
        self.payload = [0, 0]
        """Payload bytes each side sent, retransmissions included."""
        self.segments = [0, 0]
        self.closed = False
        """A FIN or RST was seen: a later SYN on the same ports starts a new connection."""
        self.t_min = math.inf
        self.t_max = -math.inf

    def __len__(self) -> int:
        return len(self.seg_t)

    @property
    def first_t(self) -> float:
        """The earliest frame's time (frames need not be in time order: merged captures, a clock step)."""
        return self.t_min

    @property
    def last_t(self) -> float:
        return self.t_max

    @property
    def data_bytes(self) -> int:
        return self.payload[0] + self.payload[1]

    def server_first(self) -> tuple[Endpoint, Endpoint]:
        """The ends with the passive opener (the side that sent the SYN-ACK) first; without a
        handshake in the capture, the destination of the first frame first."""
        if self.syn_ack_side == 0:
            return self.ends
        return self.ends[1], self.ends[0]

    def add(
        self, t: float, side: int, flags: int, seq: int, ack: int, win: int, length: int, opts: list[tuple[int, bytes]]
    ) -> None:
        self.seg_t.append(t)
        self.t_min = min(self.t_min, t)
        self.t_max = max(self.t_max, t)
        self.seg_side.append(side)
        self.seg_flags.append(flags)
        self.seg_seq.append(seq)
        self.seg_ack.append(ack)
        self.seg_win.append(win)
        self.seg_len.append(length)
        self.payload[side] += length
        self.segments[side] += 1
        if flags & (FIN | RST):
            self.closed = True
        if flags & SYN:
            self.syn_seen[side] = True
            self.isn[side] = seq
            if flags & ACK:
                self.syn_ack_side = side
            for kind, data in opts:
                if kind == 2 and len(data) == 2:  # RFC 9293 §3.7.1 MSS
                    self.mss[side] = struct.unpack("!H", data)[0]
                elif kind == 3 and len(data) == 1:  # RFC 7323 §2.2 window scale (shift at most 14, §2.3)
                    self.wscale[side] = min(data[0], 14)
                elif kind == 4:  # RFC 2018 §2 SACK-permitted
                    self.sack_ok[side] = True
        for kind, data in opts:
            if kind == 5:  # RFC 2018 §3: blocks of two 32-bit edges
                index = len(self.seg_t) - 1
                for i in range(0, len(data) - 7, 8):
                    left, right = struct.unpack_from("!II", data, i)
                    self.sack_at.append(index)
                    self.sack_left.append(left)
                    self.sack_right.append(right)

    def window_scale(self, side: int) -> int | None:
        """The shift to apply to *side*'s SEG.WND (RFC 7323 §2.2: only when both SYNs carried the
        option, and never to a SYN's own window); ``None`` when the capture missed a SYN."""
        if not (self.syn_seen[0] and self.syn_seen[1]):
            return None
        if self.wscale[0] is None or self.wscale[1] is None:
            return 0
        return self.wscale[side]


@dataclass(slots=True)
class Capture:
    path: Path
    conns: list[Conn]
    """In order of first appearance (``Conn.index`` 1, 2, ...)."""
    stats: ReadStats
    linktypes: set[int]


# ====================================================================== files


class _Guard:
    """A file whose ``read(n)`` refuses a corrupt length (above :data:`MAX_RECORD`) and notes a short read."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.name = getattr(f, "name", "<file>")
        self.short = False

    def read(self, n: int = -1) -> bytes:
        if n > MAX_RECORD:
            raise _Corrupt(f"a record of {n} bytes at offset {self.f.tell()}")
        data = self.f.read(n)
        if 0 < n and len(data) < n and data:
            self.short = True
        return data

    def tell(self) -> int:
        return self.f.tell()


class _Corrupt(Exception):
    pass


def _pcap_frames(f: _Guard, stats: ReadStats) -> Iterator[tuple[float, int, bytes]]:
    try:
        reader = dpkt.pcap.Reader(f)
    except (ValueError, dpkt.Error, struct.error) as exc:
        raise CaptureError(f"not a pcap file ({exc})") from None
    linktype = int(reader.datalink())
    if not _supported(linktype):
        raise CaptureError(f"link type {linktype} is not supported (supported: {SUPPORTED})")
    try:
        for ts, buf in reader:
            yield float(ts), linktype, buf
    except dpkt.NeedData:
        f.short = True
    except _Corrupt as exc:
        stats.notes.append(f"corrupt after frame {stats.frames}: {exc}; the rest is not read")


def _pcapng_frames(f: _Guard, stats: ReadStats) -> Iterator[tuple[float, int, bytes]]:
    """Every packet of every section: per interface its link type and timestamp resolution
    (pcapng: if_tsresol, if_tsoffset), which dpkt's own reader takes from the first one only."""
    order = "<"
    interfaces: list[tuple[int, float, int]] = []  # link type, units per second, offset (s)
    first = True
    while True:
        head = f.read(8)
        if len(head) < 8:
            if head:
                f.short = True
            return
        btype = struct.unpack(order + "I", head[:4])[0]
        if btype == _PCAPNG_SHB:  # same bytes in both orders; the byte-order magic follows
            bom = f.read(4)
            if len(bom) < 4:
                f.short = True
                return
            if struct.unpack("<I", bom)[0] == _BOM:
                order = "<"
            elif struct.unpack(">I", bom)[0] == _BOM:
                order = ">"
            else:
                raise CaptureError("not a pcapng file (bad byte-order magic)")
            head += bom
            interfaces = []
        elif first:
            raise CaptureError("not a pcapng file")
        first = False
        blen = struct.unpack(order + "I", head[4:8])[0]
        if blen % 4 or not 12 <= blen <= MAX_RECORD or blen < len(head) + 4:
            stats.notes.append(f"corrupt block (length {blen}) after frame {stats.frames}; the rest is not read")
            return
        body = f.read(blen - len(head))
        if len(body) < blen - len(head):
            f.short = True
            return
        block = head + body
        le = order == "<"
        try:
            if btype == _PCAPNG_SHB:
                shb = (dpkt.pcapng.SectionHeaderBlockLE if le else dpkt.pcapng.SectionHeaderBlock)(block)
                if shb.v_major != 1:
                    raise CaptureError(f"pcapng version {shb.v_major}.{shb.v_minor} is not supported")
            elif btype == dpkt.pcapng.PCAPNG_BT_IDB:
                idb = (dpkt.pcapng.InterfaceDescriptionBlockLE if le else dpkt.pcapng.InterfaceDescriptionBlock)(block)
                interfaces.append(_interface(idb, order))
            elif btype in (dpkt.pcapng.PCAPNG_BT_EPB, dpkt.pcapng.PCAPNG_BT_PB):
                if btype == dpkt.pcapng.PCAPNG_BT_EPB:
                    pkt = (dpkt.pcapng.EnhancedPacketBlockLE if le else dpkt.pcapng.EnhancedPacketBlock)(block)
                else:
                    pkt = (dpkt.pcapng.PacketBlockLE if le else dpkt.pcapng.PacketBlock)(block)
                if pkt.iface_id >= len(interfaces):
                    stats.frames += 1
                    stats.skipped["malformed: packet of an undeclared interface"] += 1
                    continue
                linktype, units, offset = interfaces[pkt.iface_id]
                ts = offset + ((pkt.ts_high << 32) | pkt.ts_low) / units
                yield ts, linktype, bytes(pkt.pkt_data)
            elif btype == dpkt.pcapng.PCAPNG_BT_SPB:
                stats.frames += 1
                stats.skipped["simple packet block (no timestamp)"] += 1
            # Other blocks (name resolution, statistics, secrets, custom) carry no packets.
        except (dpkt.Error, struct.error, ValueError, IndexError) as exc:
            if btype in (dpkt.pcapng.PCAPNG_BT_EPB, dpkt.pcapng.PCAPNG_BT_PB):
                stats.frames += 1
                stats.skipped["malformed: packet block"] += 1
            elif btype == dpkt.pcapng.PCAPNG_BT_IDB:
                stats.notes.append(f"malformed interface description block ({exc or type(exc).__name__})")
                interfaces.append((-1, 1e6, 0))  # its packets: skipped as of an unsupported link type
            elif btype == _PCAPNG_SHB:
                raise CaptureError(f"malformed pcapng section header ({exc or type(exc).__name__})") from None


def _supported(linktype: int) -> bool:
    return linktype in RAW_LINKTYPES or linktype in (
        LINKTYPE_ETHERNET, LINKTYPE_NULL, LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2,
    )  # fmt: skip


def _interface(idb: dpkt.pcapng.InterfaceDescriptionBlock, order: str) -> tuple[int, float, int]:
    units, offset = 1e6, 0
    for opt in idb.opts:
        if opt.code == dpkt.pcapng.PCAPNG_OPT_IF_TSRESOL and len(opt.data) >= 1:
            v = opt.data[0]
            units = float(2 ** (v & 0x7F) if v & 0x80 else 10 ** (v & 0x7F))  # pcapng §4.2 if_tsresol
        elif opt.code == dpkt.pcapng.PCAPNG_OPT_IF_TSOFFSET and len(opt.data) == 8:
            offset = struct.unpack(order + "q", opt.data)[0]
    return int(idb.linktype), units, offset


# ====================================================================== frames


def _network(linktype: int, buf: bytes) -> object:
    """The frame's IP datagram as a dpkt object (``dpkt.ip.IP`` or ``dpkt.ip6.IP6``), whatever
    else the link layer carried, or why it cannot be read (a string)."""
    if linktype in RAW_LINKTYPES:
        version = buf[0] >> 4 if buf else 0
        if version == 4:
            return dpkt.ip.IP(buf)
        if version == 6:
            return dpkt.ip6.IP6(buf)
        return "malformed: not an IP header"
    link: Any
    if linktype == LINKTYPE_ETHERNET:
        link = dpkt.ethernet.Ethernet(buf)
        types = {link.type, *(tag.type for tag in getattr(link, "vlan_tags", ()))}
    elif linktype == LINKTYPE_LINUX_SLL:
        link = dpkt.sll.SLL(buf)
        types = {link.ethtype}
    elif linktype == LINKTYPE_LINUX_SLL2:
        link = dpkt.sll2.SLL2(buf)
        types = {link.ethtype}
    else:  # LINKTYPE_NULL, LINKTYPE_LOOP
        link = dpkt.loopback.Loopback(buf)
        types = set()
    net = link.data
    if isinstance(net, bytes) and types & _IP_ETHERTYPES:
        return "malformed: IP header"  # the link layer says IP, but dpkt could not read it
    return net


_IP_ETHERTYPES: Final = frozenset({0x0800, 0x86DD})


_Segment = tuple[bytes, int, bytes, int, int, int, int, int, int, list[tuple[int, bytes]]]


def _segment(net: object) -> _Segment | str:
    """(src, sport, dst, dport, seq, ack, flags, win, payload length, options), or why not."""
    if isinstance(net, str):
        return net
    if isinstance(net, dpkt.ip.IP):
        if net.v != 4 or net.hl < 5:
            return "malformed: IP header"
        if net.p != dpkt.ip.IP_PROTO_TCP:
            return "not TCP"
        if net.offset or net.mf:
            return "IP fragment"
        ip_payload = net.len - 4 * net.hl if net.len else None  # 0: a TSO super-frame; use what is there
    elif isinstance(net, dpkt.ip6.IP6):
        if net.p != dpkt.ip.IP_PROTO_TCP:
            return "IP fragment" if 44 in net.extension_hdrs else "not TCP"
        if 44 in net.extension_hdrs:
            return "IP fragment"
        ext = sum(int(h.length) for h in net.all_extension_headers)
        ip_payload = net.plen - ext if net.plen else None
    else:
        return "not IP"
    tcp = net.data
    if not isinstance(tcp, dpkt.tcp.TCP):
        return "malformed: broken TCP header"
    header = 4 * tcp.off
    if header < 20:
        return "malformed: broken TCP header"
    if ip_payload is None:
        ip_payload = header + len(tcp.data)
    length = ip_payload - header
    if length < 0:
        return "malformed: broken TCP header"
    opts: list[tuple[int, bytes]] = []
    if tcp.opts:
        opts = [o for o in dpkt.tcp.parse_opts(bytes(tcp.opts)) if o is not None]
    return (
        bytes(net.src), int(tcp.sport), bytes(net.dst), int(tcp.dport),
        int(tcp.seq), int(tcp.ack), int(tcp.flags) & 0xFF, int(tcp.win), length, opts,
    )  # fmt: skip


def _address(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def normalize_address(text: str) -> str:
    """The form addresses take in :class:`Endpoint` (raises ValueError)."""
    return str(ipaddress.ip_address(text))


def read_capture(path: str | Path) -> Capture:
    """Read *path* (pcap or pcapng) into its TCP connections.

    :raises CaptureError: the file cannot be opened, is not a capture, or has a link type not in
        :data:`SUPPORTED`, or holds no frame at all.
    """
    path = Path(path)
    stats = ReadStats()
    conns: list[Conn] = []
    current: dict[tuple[bytes, int, bytes, int], tuple[Conn, int]] = {}
    linktypes: set[int] = set()
    try:
        raw = open(path, "rb")  # closed below
    except OSError as exc:
        raise CaptureError(f"cannot open: {exc.strerror or exc}") from None
    with raw:
        f = _Guard(raw)
        try:
            magic_bytes = raw.read(4)
        except OSError as exc:
            raise CaptureError(f"cannot read: {exc.strerror or exc}") from None
        if len(magic_bytes) < 4:
            raise CaptureError("not a pcap or pcapng file (too short)")
        magic = struct.unpack("<I", magic_bytes)[0]
        raw.seek(0)
        if magic == _PCAPNG_SHB:
            frames = _pcapng_frames(f, stats)
        elif magic in _PCAP_MAGICS:
            frames = _pcap_frames(f, stats)
        else:
            raise CaptureError(f"not a pcap or pcapng file (it starts with {magic_bytes.hex()})")
        try:
            for ts, linktype, buf in frames:
                stats.frames += 1
                if linktype not in linktypes:
                    linktypes.add(linktype)
                if not _supported(linktype):  # pcapng: one interface of several may be of another kind
                    stats.skipped[f"link type {linktype} (not supported)"] += 1
                    continue
                try:
                    seg = _segment(_network(linktype, buf))
                except Exception:  # a garbage frame must not end the reading: counted
                    seg = "malformed: garbage frame"
                if isinstance(seg, str):
                    stats.skipped[seg] += 1
                    continue
                stats.tcp += 1
                _add(conns, current, ts, seg)
        except OSError as exc:
            raise CaptureError(f"cannot read: {exc.strerror or exc}") from None
        if f.short:
            stats.notes.append(f"the file ends inside a frame (cut short?) after {stats.frames} frames")
    unsupported = sorted(lt for lt in linktypes if not _supported(lt))
    if unsupported and not stats.tcp:
        raise CaptureError(f"link type {unsupported[0]} is not supported (supported: {SUPPORTED})")
    if stats.frames == 0 and not stats.notes:
        raise CaptureError("the capture holds no frames")
    return Capture(path=path, conns=conns, stats=stats, linktypes=linktypes)


def _add(
    conns: list[Conn], current: dict[tuple[bytes, int, bytes, int], tuple[Conn, int]], ts: float, seg: _Segment
) -> None:
    src, sport, dst, dport, seq, ack, flags, win, length, opts = seg
    key = (src, sport, dst, dport)
    found = current.get(key)
    if found is not None and flags & (SYN | ACK) == SYN:
        conn, side = found
        # A SYN on ports in use: the same connection retrying its SYN (the same ISN), or a new
        # connection reusing the ports (another ISN, or after data, a FIN or an RST).
        if conn.syn_seen[side] and conn.isn[side] == seq:
            pass
        elif conn.syn_seen[side] or conn.closed or conn.data_bytes:
            found = None
    if found is None:
        conn = Conn(len(conns) + 1, (_address(src), sport), (_address(dst), dport))
        conns.append(conn)
        current[key] = (conn, 0)
        current[(dst, dport, src, sport)] = (conn, 1)
        side = 0
    else:
        conn, side = found
    conn.add(ts, side, flags, seq, ack, win, length, opts)
