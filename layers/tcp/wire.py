"""TCP header and options parse/emit (RFC 9293 §3.1-3.2), checksum over the pseudo-header.

Options understood: EOL, NOP, MSS (RFC 9293 §3.7.1), window scale (RFC 7323 §2), SACK-permitted
and SACK (RFC 2018), timestamps (RFC 7323 §3). Unknown options that carry a length are skipped
(MUST-6); a length below 2 or past the header is malformed and the segment is dropped (MUST-7),
so parsing never loops. Options need not be aligned (MUST-64). A known option with the wrong
length is ignored, as Linux does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from framework.checksum import BytesLike, fold, internet_checksum
from framework.errors import WireError

# RFC 9293 §3.1: source port, destination port, sequence number, acknowledgment number,
# data offset (4 bits) + reserved (4 bits), flags (CWR ECE URG ACK PSH RST SYN FIN),
# window, checksum, urgent pointer.
_HEADER = struct.Struct("!HHIIBBHHH")
HEADER_LEN: Final = _HEADER.size  # 20
MAX_HEADER_LEN: Final = 60
MAX_OPTION_BYTES: Final = MAX_HEADER_LEN - HEADER_LEN  # RFC 9293 §3.1: Data Offset allows 40 bytes of options

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80

OPT_EOL: Final = 0
OPT_NOP: Final = 1
OPT_MSS: Final = 2
OPT_WSCALE: Final = 3
OPT_SACK_PERM: Final = 4
OPT_SACK: Final = 5
OPT_TIMESTAMP: Final = 8

PROTO_TCP: Final = 6

_FLAG_NAMES = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "."), (URG, "U"), (ECE, "E"), (CWR, "W"))


def flags_str(flags: int) -> str:
    """tcpdump-style flag letters, e.g. ``"S."`` for SYN-ACK."""
    return "".join(ch for bit, ch in _FLAG_NAMES if flags & bit) or "none"


@dataclass(slots=True)
class TcpRepr:
    """One TCP segment: header fields, parsed options and payload.

    ``window`` is the raw 16-bit field (unscaled). Outbound, ``pseudo`` is the partial sum of
    the pseudo-header's addresses and protocol (:func:`pseudo_base`); ``emit`` adds the TCP
    length and computes the checksum (MUST-2).
    """

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    payload: BytesLike = b""
    urgent: int = 0
    mss: int | None = None
    wscale: int | None = None
    sack_perm: bool = False
    sack: list[tuple[int, int]] | None = None
    ts: tuple[int, int] | None = None
    pseudo: int = field(default=0, repr=False, compare=False)
    ip_ecn: int = field(default=0, repr=False, compare=False)
    """The IP ECN codepoint (RFC 3168 §5): of the datagram this segment arrived in, or to put on
    the one it leaves in. Not part of the TCP header."""
    rexmit: bool = field(default=False, repr=False, compare=False)
    """Outbound: a retransmission or a window/keep-alive probe, which ECN must not mark as
    ECN-capable (RFC 3168 §6.1.5-6.1.6)."""
    csum_partial: bool = field(default=False, repr=False, compare=False)
    """Outbound, TUN offload: put only the pseudo-header sum in the checksum field; the kernel
    completes the checksum (``VIRTIO_NET_HDR_F_NEEDS_CSUM``)."""
    gso_size: int = field(default=0, repr=False, compare=False)
    """Outbound, TUN offload: a super-segment the kernel cuts into segments of this many
    payload bytes, each with a copy of this header (TCP segmentation offload)."""

    def __init__(
        self,
        src_port: int,
        dst_port: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        payload: BytesLike = b"",
        urgent: int = 0,
        mss: int | None = None,
        wscale: int | None = None,
        sack_perm: bool = False,
        sack: list[tuple[int, int]] | None = None,
        ts: tuple[int, int] | None = None,
        pseudo: int = 0,
        ip_ecn: int = 0,
        rexmit: bool = False,
        csum_partial: bool = False,
        gso_size: int = 0,
    ) -> None:
        # Written out, not generated: mypyc compiles a hand-written __init__ but leaves a
        # dataclass's generated one interpreted (about 13x slower to construct, and one is built
        # per segment). Same fields, order and defaults as declared above (@dataclass keeps an
        # __init__ the class defines; tests/layers/tcp/test_wire.py checks the signature).
        self.src_port = src_port
        self.dst_port = dst_port
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.payload = payload
        self.urgent = urgent
        self.mss = mss
        self.wscale = wscale
        self.sack_perm = sack_perm
        self.sack = sack
        self.ts = ts
        self.pseudo = pseudo
        self.ip_ecn = ip_ecn
        self.rexmit = rexmit
        self.csum_partial = csum_partial
        self.gso_size = gso_size

    @property
    def seg_len(self) -> int:
        """SEG.LEN: payload length plus one for each of SYN and FIN (RFC 9293 §3.4)."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)

    # ------------------------------------------------------------------ parse

    @classmethod
    def parse(cls, buf: memoryview, pseudo: int | None) -> TcpRepr:
        """Parse a segment; verify the checksum when *pseudo* (the pseudo-header partial sum
        without the length) is given.

        :raises WireError: for a truncated or malformed segment or a bad checksum.
        """
        n = len(buf)
        if n < HEADER_LEN:
            raise WireError("tcp", "truncated")
        sport, dport, seq, ack, off, flags, window, _csum, urgent = _HEADER.unpack_from(buf)
        hlen = (off >> 4) * 4
        # RFC 9293 §3.1: Data Offset is at least 5 words and the header fits the segment.
        if hlen < HEADER_LEN or hlen > n:
            raise WireError("tcp", "bad_data_offset")
        # RFC 9293 §3.1, MUST-3: drop segments whose checksum is wrong.
        if pseudo is not None and internet_checksum(buf, pseudo + n) != 0:
            raise WireError("tcp", "bad_checksum")
        # The reserved bits (the low 4 of the offset byte) are ignored on receipt (§3.1).
        seg = cls(sport, dport, seq, ack, flags, window, buf[hlen:], urgent)
        if hlen > HEADER_LEN:
            _parse_options(seg, buf[HEADER_LEN:hlen])
        return seg

    # ------------------------------------------------------------------ emit

    def options_len(self) -> int:
        """Bytes of options, laid out as Linux does so every option is 32-bit aligned."""
        n = 4 if self.mss is not None else 0
        if self.ts is not None:
            n += 12  # SACK-permitted + timestamps, or NOP NOP + timestamps
        elif self.sack_perm:
            n += 4  # NOP NOP SACK-permitted
        if self.wscale is not None:
            n += 4  # NOP + window scale
        if self.sack:
            n += 4 + 8 * len(self.sack)  # NOP NOP + SACK
        return n

    def buffer_len(self) -> int:
        return HEADER_LEN + self.options_len() + len(self.payload)

    def emit(self, buf: bytearray, offset: int, payload_len: int) -> None:
        """Write header, options and payload at *offset*; compute the checksum.

        ``payload_len`` is the number of bytes after this segment (always 0: TCP is the top).
        """
        olen = self.options_len()
        hlen = HEADER_LEN + olen
        _HEADER.pack_into(
            buf,
            offset,
            self.src_port,
            self.dst_port,
            self.seq,
            self.ack,
            (hlen // 4) << 4,
            self.flags,
            self.window,
            0,
            self.urgent,
        )
        if olen:
            emit_options(self, buf, offset + HEADER_LEN)
        end = offset + hlen + len(self.payload)
        buf[offset + hlen : end] = self.payload
        if self.csum_partial:
            # The pseudo-header's ones'-complement sum (addresses, protocol, this length), not
            # inverted: the kernel adds the segment and inverts (Linux CHECKSUM_PARTIAL).
            csum = 0xFFFF ^ fold(self.pseudo + (end - offset))
        else:
            csum = internet_checksum(memoryview(buf)[offset:end], self.pseudo + (end - offset))
        buf[offset + 16] = csum >> 8
        buf[offset + 17] = csum & 0xFF

    def to_bytes(self) -> bytes:
        buf = bytearray(self.buffer_len())
        self.emit(buf, 0, 0)
        return bytes(buf)

    def __str__(self) -> str:
        return (
            f"{self.src_port}>{self.dst_port} [{flags_str(self.flags)}] seq={self.seq} ack={self.ack} "
            f"win={self.window} len={len(self.payload)}"
        )


def pseudo_base(src: bytes, dst: bytes) -> int:
    """Partial sum of the IPv4 pseudo-header without the TCP length (RFC 9293 §3.1)."""
    return int.from_bytes(src + dst, "big") + PROTO_TCP


def _parse_options(seg: TcpRepr, opts: memoryview) -> None:
    i, n = 0, len(opts)
    while i < n:
        kind = opts[i]
        if kind == OPT_EOL:  # MUST-4
            return
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise WireError("tcp", "bad_option")
        length = opts[i + 1]
        # MUST-7: an illegal option length must not make us loop or read past the header.
        if length < 2 or i + length > n:
            raise WireError("tcp", "bad_option")
        if kind == OPT_MSS and length == 4:
            seg.mss = (opts[i + 2] << 8) | opts[i + 3]
        elif kind == OPT_WSCALE and length == 3:
            seg.wscale = opts[i + 2]
        elif kind == OPT_SACK_PERM and length == 2:
            seg.sack_perm = True
        elif kind == OPT_TIMESTAMP and length == 10:
            seg.ts = (int.from_bytes(opts[i + 2 : i + 6], "big"), int.from_bytes(opts[i + 6 : i + 10], "big"))
        elif kind == OPT_SACK and length >= 10 and (length - 2) % 8 == 0:
            blocks = []
            for j in range(i + 2, i + length, 8):
                blocks.append((int.from_bytes(opts[j : j + 4], "big"), int.from_bytes(opts[j + 4 : j + 8], "big")))
            seg.sack = blocks
        # MUST-6: anything else with a length is skipped.
        i += length


def emit_options(seg: TcpRepr, buf: bytearray, at: int) -> None:
    """Write options 32-bit aligned with NOP padding in front (MUST-64 lets receivers cope
    with any alignment; aligned options are what every stack sends and tcpdump shows)."""
    if seg.mss is not None:
        struct.pack_into("!BBH", buf, at, OPT_MSS, 4, seg.mss)
        at += 4
    if seg.ts is not None:
        if seg.sack_perm:
            buf[at : at + 2] = b"\x04\x02"
        else:
            buf[at : at + 2] = b"\x01\x01"
        struct.pack_into("!BBII", buf, at + 2, OPT_TIMESTAMP, 10, seg.ts[0], seg.ts[1])
        at += 12
    elif seg.sack_perm:
        buf[at : at + 4] = b"\x01\x01\x04\x02"
        at += 4
    if seg.wscale is not None:
        struct.pack_into("!BBBB", buf, at, OPT_NOP, OPT_WSCALE, 3, seg.wscale)
        at += 4
    if seg.sack:
        struct.pack_into("!BBBB", buf, at, OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(seg.sack))
        at += 4
        for left, right in seg.sack:
            struct.pack_into("!II", buf, at, left, right)
            at += 8
