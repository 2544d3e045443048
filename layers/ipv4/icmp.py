"""ICMP for IPv4 (RFC 792, RFC 1122 §3.2.2): message parse/emit and the error record passed up.

The IPv4 layer answers echo requests itself, sends Destination Unreachable (protocol) and Time
Exceeded (reassembly), and hands errors about our own datagrams to the transport layer that the
quoted header names (RFC 9293 §3.9.2.2, MUST-54) as an :class:`IcmpError` (the IPv4 form of
a :class:`~framework.netlayer.NetError`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from framework.checksum import internet_checksum
from framework.errors import WireError

# RFC 792: type, code, checksum, then 4 bytes whose meaning depends on the type.
_HEADER = struct.Struct("!BBH4s")
HEADER_LEN = _HEADER.size  # 8

ECHO_REPLY = 0
DEST_UNREACHABLE = 3
SOURCE_QUENCH = 4
REDIRECT = 5
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAMETER_PROBLEM = 12

#: Types that report an error about a datagram (RFC 1122 §3.2.2: never answer these with errors).
ERROR_TYPES = frozenset({DEST_UNREACHABLE, SOURCE_QUENCH, REDIRECT, TIME_EXCEEDED, PARAMETER_PROBLEM})

# Destination Unreachable codes (RFC 792, RFC 1122 §3.2.2.1)
UNREACH_NET = 0
UNREACH_HOST = 1
UNREACH_PROTOCOL = 2
UNREACH_PORT = 3
UNREACH_FRAG_NEEDED = 4
UNREACH_SOURCE_ROUTE = 5
# Time Exceeded codes
TTL_EXCEEDED = 0
REASSEMBLY_EXCEEDED = 1

#: RFC 1812 §4.3.2.3 / Linux: an error message quotes as much as fits in 576 bytes.
MAX_ERROR_DATAGRAM = 576


@dataclass(slots=True)
class IcmpRepr:
    """One ICMP message. ``rest`` is the 4-byte type-specific field (id+seq for echo)."""

    type: int
    code: int
    rest: bytes
    data: bytes | memoryview

    @classmethod
    def parse(cls, buf: memoryview, *, verify_checksum: bool = True) -> IcmpRepr:
        if len(buf) < HEADER_LEN:
            raise WireError("icmp", "truncated")
        # RFC 792 / RFC 1122 §3.2.2: the checksum covers the whole message; bad ones are discarded.
        if verify_checksum and internet_checksum(buf) != 0:
            raise WireError("icmp", "bad_checksum")
        type_, code, _csum, rest = _HEADER.unpack_from(buf)
        return cls(type_, code, rest, buf[HEADER_LEN:])

    def buffer_len(self) -> int:
        return HEADER_LEN + len(self.data)

    def emit(self, buf: bytearray, offset: int, payload_len: int) -> None:
        """Write the message (header and data) at *offset*; nothing follows it."""
        _HEADER.pack_into(buf, offset, self.type, self.code, 0, self.rest)
        end = offset + HEADER_LEN + len(self.data)
        buf[offset + HEADER_LEN : end] = self.data
        csum = internet_checksum(memoryview(buf)[offset:end])
        buf[offset + 2] = csum >> 8
        buf[offset + 3] = csum & 0xFF


@dataclass(slots=True)
class IcmpError:
    """An ICMP error about one of our datagrams, delivered to the transport it concerns.

    The packet that carries it has ``net`` = the *quoted* IPv4 header and ``payload`` = the
    quoted transport bytes (at least 8: ports and sequence number for TCP).
    """

    type: int
    code: int
    next_hop_mtu: int = 0
    """For Destination Unreachable code 4 (RFC 1191 §4), the MTU of the next hop, else 0."""
    pointer: int = 0
    """For Parameter Problem (RFC 792), the octet that caused the problem, else 0."""

    @property
    def is_hard(self) -> bool:
        """RFC 9293 §3.9.2.2 (SHLD-26, MUST-56): Destination Unreachable codes 2-4 are hard
        errors (code 4 feeds PMTUD instead of aborting); codes 0, 1, 5, Time Exceeded and
        Parameter Problem are soft and never abort a connection."""
        return self.type == DEST_UNREACHABLE and self.code in (UNREACH_PROTOCOL, UNREACH_PORT, UNREACH_FRAG_NEEDED)

    @property
    def too_big(self) -> bool:
        """RFC 1191 §4: Destination Unreachable, fragmentation needed and DF set (code 4)."""
        return self.type == DEST_UNREACHABLE and self.code == UNREACH_FRAG_NEEDED

    @property
    def name(self) -> str:
        names = {
            (DEST_UNREACHABLE, UNREACH_NET): "net_unreachable",
            (DEST_UNREACHABLE, UNREACH_HOST): "host_unreachable",
            (DEST_UNREACHABLE, UNREACH_PROTOCOL): "protocol_unreachable",
            (DEST_UNREACHABLE, UNREACH_PORT): "port_unreachable",
            (DEST_UNREACHABLE, UNREACH_FRAG_NEEDED): "fragmentation_needed",
            (DEST_UNREACHABLE, UNREACH_SOURCE_ROUTE): "source_route_failed",
            (TIME_EXCEEDED, TTL_EXCEEDED): "ttl_exceeded",
            (TIME_EXCEEDED, REASSEMBLY_EXCEEDED): "reassembly_time_exceeded",
        }
        return names.get((self.type, self.code), f"icmp_{self.type}_{self.code}")

    @classmethod
    def from_message(cls, msg: IcmpRepr) -> IcmpError:
        mtu = int.from_bytes(msg.rest[2:4], "big") if msg.type == DEST_UNREACHABLE and msg.code == 4 else 0
        pointer = msg.rest[0] if msg.type == PARAMETER_PROBLEM else 0
        return cls(msg.type, msg.code, mtu, pointer)


def error_message(type_: int, code: int, offending: bytes | bytearray | memoryview, header_len: int) -> IcmpRepr:
    """Build an ICMP error quoting *offending* (the whole original datagram, header first).

    RFC 1122 §3.2.2: the quote is the internet header and at least 8 data octets; we quote as
    much as keeps the error datagram within 576 octets, as RFC 1812 §4.3.2.3 recommends.
    """
    room = MAX_ERROR_DATAGRAM - 20 - HEADER_LEN
    quote = bytes(offending[: max(min(len(offending), room), header_len + 8)])
    return IcmpRepr(type_, code, b"\0\0\0\0", quote)
