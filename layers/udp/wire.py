"""UDP header parse/emit (RFC 768). Pure functions and a Repr: no state, no I/O.

The checksum covers a pseudo-header that the network layer defines
(:meth:`framework.netlayer.NetworkLayer.pseudo_header_sum`); this module takes its partial sum
*without* the length (which is the UDP length, read here) and adds the length itself.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from framework.checksum import BytesLike, internet_checksum
from framework.errors import WireError

# RFC 768, "Format": source port, destination port, length, checksum.
_HEADER = struct.Struct("!HHHH")
HEADER_LEN: Final = _HEADER.size  # 8
PROTO_UDP: Final = 17  # RFC 768, "IP Interface": protocol number 17 (decimal)
MAX_PAYLOAD: Final = 0xFFFF - HEADER_LEN  # RFC 768: Length is 16 bits and counts the header


@dataclass(slots=True)
class UdpRepr:
    """One UDP datagram: ports and data. ``pseudo`` (outbound) is the network layer's
    pseudo-header sum without the length; :meth:`emit` adds the length and writes the checksum."""

    src_port: int
    dst_port: int
    payload: BytesLike = b""
    pseudo: int = 0
    checksummed: bool = True
    """Inbound: the datagram carried a checksum (a zero field means none, RFC 768). Outbound:
    compute one (RFC 1122 §4.1.3.4: checksumming MUST default to on)."""

    @classmethod
    def parse(cls, buf: memoryview, pseudo: int | None, *, zero_checksum_ok: bool = True) -> UdpRepr:
        """Parse the datagram in *buf* (the network layer's payload).

        *pseudo*: the pseudo-header sum without the length, or ``None`` not to verify (the link
        vouches for the checksum). *zero_checksum_ok*: a zero checksum field means "no checksum"
        (RFC 768 over IPv4; IPv6 forbids it, RFC 8200 §8.1).

        :raises WireError: reason ``truncated``, ``bad_length``, ``length_exceeds_datagram``,
            ``bad_checksum`` or ``zero_checksum``.
        """
        n = len(buf)
        if n < HEADER_LEN:
            raise WireError("udp", "truncated")
        sport, dport, length, csum = _HEADER.unpack_from(buf)
        # RFC 768, "Length": the length in octets of the header and the data; minimum 8.
        if length < HEADER_LEN:
            raise WireError("udp", "bad_length")
        # RFC 768 / RFC 1122 §4.1.3: a datagram shorter than its Length field is truncated.
        # (One longer has trailing octets outside the datagram: they are ignored, as Linux does.)
        if length > n:
            raise WireError("udp", "length_exceeds_datagram")
        if csum == 0:
            # RFC 768 "Checksum": an all-zero field means the sender computed none (IPv4 only).
            if not zero_checksum_ok:
                raise WireError("udp", "zero_checksum")
            return cls(sport, dport, buf[HEADER_LEN:length], 0, False)
        # RFC 1122 §4.1.3.4: a received checksum MUST be verified; a bad one discarded silently.
        if pseudo is not None and internet_checksum(buf[:length], pseudo + length) != 0:
            raise WireError("udp", "bad_checksum")
        return cls(sport, dport, buf[HEADER_LEN:length], 0, True)

    def buffer_len(self) -> int:
        return HEADER_LEN + len(self.payload)

    def emit(self, buf: bytearray, offset: int, payload_len: int) -> None:
        """Write header and data at *offset* (nothing follows them), checksum included."""
        length = HEADER_LEN + len(self.payload)
        _HEADER.pack_into(buf, offset, self.src_port, self.dst_port, length, 0)
        end = offset + length
        buf[offset + HEADER_LEN : end] = self.payload
        if not self.checksummed:
            return  # RFC 768: zero, "no checksum"
        csum = internet_checksum(memoryview(buf)[offset:end], self.pseudo + length)
        # RFC 768 "Checksum": a computed checksum of zero is transmitted as all ones.
        csum = csum or 0xFFFF
        buf[offset + 6] = csum >> 8
        buf[offset + 7] = csum & 0xFF
