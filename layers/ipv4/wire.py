"""IPv4 header parse/emit (RFC 791 §3.1) and address classification (RFC 1122 §3.2.1.3).

Pure functions and a Repr: no state, no I/O. The acceptance policy (what we reject and why) is
written next to each check.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from framework.checksum import internet_checksum
from framework.errors import WireError

# RFC 791 §3.1: version/IHL, TOS, total length, identification, flags/fragment offset,
# TTL, protocol, header checksum, source address, destination address.
_HEADER = struct.Struct("!BBHHHBBH4s4s")
HEADER_LEN: Final = _HEADER.size  # 20; we never emit options
MAX_DATAGRAM: Final = 65535  # RFC 791 §3.1: Total Length is 16 bits
FLAG_DF: Final = 0x4000
FLAG_MF: Final = 0x2000
OFFSET_MASK: Final = 0x1FFF
_RESERVED_FLAG: Final = 0x8000

PROTO_ICMP: Final = 1
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17


@dataclass(slots=True)
class Ipv4Repr:
    """The IPv4 header fields the stack acts on (smoltcp's ``Repr``).

    Addresses are 4-byte ``bytes``: cheap, hashable, and ready for the TCP pseudo-header.
    ``frag_offset`` is in bytes (the wire field times 8). Implements the outbound ``Header``
    protocol of :mod:`framework.packet`, so a layer can push it onto a packet.
    """

    src: bytes
    dst: bytes
    protocol: int
    payload_len: int = 0
    ttl: int = 64
    tos: int = 0
    ident: int = 0
    dont_frag: bool = True
    more_frags: bool = False
    frag_offset: int = 0
    header_len: int = HEADER_LEN

    def __init__(
        self,
        src: bytes,
        dst: bytes,
        protocol: int,
        payload_len: int = 0,
        ttl: int = 64,
        tos: int = 0,
        ident: int = 0,
        dont_frag: bool = True,
        more_frags: bool = False,
        frag_offset: int = 0,
        header_len: int = HEADER_LEN,
    ) -> None:
        # Written out, not generated: mypyc compiles a hand-written __init__ but leaves a
        # dataclass's generated one interpreted. Same fields, order and defaults as declared
        # above (tests/layers/ipv4/test_wire.py checks the signature).
        self.src = src
        self.dst = dst
        self.protocol = protocol
        self.payload_len = payload_len
        self.ttl = ttl
        self.tos = tos
        self.ident = ident
        self.dont_frag = dont_frag
        self.more_frags = more_frags
        self.frag_offset = frag_offset
        self.header_len = header_len

    @property
    def is_fragment(self) -> bool:
        return self.more_frags or self.frag_offset != 0

    @classmethod
    def parse(cls, buf: memoryview, *, verify_checksum: bool = True) -> tuple[Ipv4Repr, memoryview]:
        """Return the header and its payload (trailing link padding beyond Total Length cut off).

        :raises WireError: if the bytes are malformed.
        """
        if len(buf) < HEADER_LEN:
            raise WireError("ipv4", "truncated")
        ver_ihl, tos, total_len, ident, flags_frag, ttl, proto, _csum, src, dst = _HEADER.unpack_from(buf)
        # RFC 1122 §3.2.1.1: a datagram whose version number is not 4 MUST be silently discarded.
        if ver_ihl >> 4 != 4:
            raise WireError("ipv4", "bad_version")
        ihl = (ver_ihl & 0x0F) * 4
        # RFC 791 §3.1: IHL counts 32-bit words, at least 5; Total Length covers header + data.
        if ihl < HEADER_LEN:
            raise WireError("ipv4", "bad_header_length")
        if total_len < ihl:
            raise WireError("ipv4", "bad_total_length")
        if total_len > len(buf):
            raise WireError("ipv4", "truncated")
        # RFC 1122 §3.2.1.2: a datagram with a bad header checksum MUST be silently discarded.
        if verify_checksum and internet_checksum(buf[:ihl]) != 0:
            raise WireError("ipv4", "bad_checksum")
        # RFC 791 §3.1: bit 0 of the flags is reserved and must be zero.
        if flags_frag & _RESERVED_FLAG:
            raise WireError("ipv4", "reserved_flag")
        if ihl > HEADER_LEN:
            check_options(buf[HEADER_LEN:ihl])
        r = cls(
            src,
            dst,
            proto,
            total_len - ihl,
            ttl,
            tos,
            ident,
            bool(flags_frag & FLAG_DF),
            bool(flags_frag & FLAG_MF),
            (flags_frag & OFFSET_MASK) * 8,
            ihl,
        )
        return r, buf[ihl:total_len]

    @classmethod
    def parse_quoted(cls, buf: memoryview) -> tuple[Ipv4Repr, memoryview]:
        """Parse the header quoted inside an ICMP error (RFC 792): lenient about length.

        The quote holds the original header and at least 8 bytes of its data (RFC 1122
        §3.2.2), so Total Length usually exceeds what is present and the checksum may have
        been changed by routers; only structure is checked.
        """
        if len(buf) < HEADER_LEN:
            raise WireError("icmp", "quote_truncated")
        ver_ihl, tos, total_len, ident, flags_frag, ttl, proto, _csum, src, dst = _HEADER.unpack_from(buf)
        ihl = (ver_ihl & 0x0F) * 4
        if ver_ihl >> 4 != 4 or ihl < HEADER_LEN or len(buf) < ihl:
            raise WireError("icmp", "quote_malformed")
        r = cls(
            src,
            dst,
            proto,
            max(total_len - ihl, 0),
            ttl,
            tos,
            ident,
            bool(flags_frag & FLAG_DF),
            bool(flags_frag & FLAG_MF),
            (flags_frag & OFFSET_MASK) * 8,
            ihl,
        )
        return r, buf[ihl:]

    def buffer_len(self) -> int:
        return HEADER_LEN

    def emit(self, buf: bytearray, offset: int, payload_len: int) -> None:
        """Write this header at ``buf[offset:offset + 20]``, checksum included.

        ``payload_len`` bytes follow; Total Length is set from it (RFC 791 §3.1).
        """
        flags = (FLAG_DF if self.dont_frag else 0) | (FLAG_MF if self.more_frags else 0)
        _HEADER.pack_into(
            buf,
            offset,
            0x45,
            self.tos,
            HEADER_LEN + payload_len,
            self.ident,
            flags | (self.frag_offset >> 3),
            self.ttl,
            self.protocol,
            0,
            self.src,
            self.dst,
        )
        csum = internet_checksum(memoryview(buf)[offset : offset + HEADER_LEN])
        buf[offset + 10] = csum >> 8
        buf[offset + 11] = csum & 0xFF


def check_options(opts: memoryview) -> None:
    """Walk IP options only to reject malformed lengths (RFC 1122 §3.2.1.8: unknown options are
    ignored; a length that is < 2 or runs past the header is malformed and never loops)."""
    i, n = 0, len(opts)
    while i < n:
        kind = opts[i]
        if kind == 0:  # End of Option List
            return
        if kind == 1:  # No Operation
            i += 1
            continue
        if i + 1 >= n:
            raise WireError("ipv4", "bad_option")
        length = opts[i + 1]
        if length < 2 or i + length > n:
            raise WireError("ipv4", "bad_option")
        i += length


def is_invalid_source(addr: bytes) -> bool:
    """RFC 1122 §3.2.1.3: a host MUST silently discard a datagram whose source is not a
    unicast host address: 0.0.0.0/8 ("this network"), 127/8 (loopback, never on a wire),
    limited broadcast, 224/4 multicast and 240/4 (class E, reserved)."""
    first = addr[0]
    return first == 0 or first == 127 or first >= 224


def is_multicast(addr: bytes) -> bool:
    return 224 <= addr[0] < 240
