"""UdpRepr parse/emit (layers/udp/wire.py): RFC 768 and RFC 1122 §4.1.3.4, scapy as the oracle."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from framework.errors import WireError
from framework.packet import Packet
from layers.udp.wire import HEADER_LEN, UdpRepr
from tests.layers.udp.helpers import OWN, OWN_B, PEER, PEER_B, udp_datagram


def pseudo(src: bytes = PEER_B, dst: bytes = OWN_B) -> int:
    """The IPv4 pseudo-header sum without the length, written out (RFC 768 "Fields")."""
    return sum(int.from_bytes(a[i : i + 2], "big") for a in (src, dst) for i in (0, 2)) + 17


def udp_part(frame: bytes) -> memoryview:
    return memoryview(frame)[20:]


class TestParse:
    @given(st.binary(max_size=1472), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
    def test_scapy_datagrams_parse(self, data: bytes, sport: int, dport: int) -> None:
        """Any datagram scapy builds parses to its ports and data, checksum verified (RFC 768)."""
        d = UdpRepr.parse(udp_part(udp_datagram(data, sport=sport, dport=dport)), pseudo())
        assert (d.src_port, d.dst_port, bytes(d.payload), d.checksummed) == (sport, dport, data, True)

    @given(st.binary(min_size=0, max_size=64), st.integers(0, 63), st.integers(0, 7))
    def test_any_flipped_bit_is_a_bad_checksum(self, data: bytes, byte: int, bit: int) -> None:
        """RFC 1122 §4.1.3.4: a datagram whose checksum fails MUST be discarded (one bit flipped
        anywhere but in the length field, which fails earlier)."""
        raw = bytearray(udp_part(udp_datagram(data)))
        i = byte % len(raw)
        if i in (4, 5):
            return  # the length field: a length check rejects it first
        raw[i] ^= 1 << bit
        if i in (6, 7) and raw[6:8] == b"\0\0":
            return  # the checksum field became zero: "no checksum"
        with pytest.raises(WireError, match="bad_checksum"):
            UdpRepr.parse(memoryview(bytes(raw)), pseudo())

    def test_wrong_pseudo_header_is_a_bad_checksum(self) -> None:
        """RFC 768: the checksum covers the pseudo-header (a datagram misdelivered to another
        address fails)."""
        raw = udp_part(udp_datagram(b"x", dst="10.0.0.3"))
        with pytest.raises(WireError, match="bad_checksum"):
            UdpRepr.parse(raw, pseudo())

    def test_zero_checksum_accepted_over_ipv4(self) -> None:
        """RFC 768 "Checksum": an all-zero field means the sender computed none."""
        d = UdpRepr.parse(udp_part(udp_datagram(b"abc", chksum=0)), pseudo())
        assert bytes(d.payload) == b"abc" and not d.checksummed

    def test_zero_checksum_refused_where_forbidden(self) -> None:
        """RFC 8200 §8.1: over IPv6 a zero checksum is refused (the parser's switch)."""
        with pytest.raises(WireError, match="zero_checksum"):
            UdpRepr.parse(udp_part(udp_datagram(b"abc", chksum=0)), pseudo(), zero_checksum_ok=False)

    def test_no_verification_without_a_pseudo_sum(self) -> None:
        """A link that vouches for the checksum (TUN offload) skips verification."""
        d = UdpRepr.parse(udp_part(udp_datagram(b"abc", chksum=0x1234)), None)
        assert bytes(d.payload) == b"abc"

    @pytest.mark.parametrize("size", range(HEADER_LEN))
    def test_truncated_header(self, size: int) -> None:
        """RFC 768: the header is 8 octets."""
        with pytest.raises(WireError, match="truncated"):
            UdpRepr.parse(memoryview(bytes(8)[:size]), pseudo())

    @pytest.mark.parametrize("length", range(HEADER_LEN))
    def test_length_below_header(self, length: int) -> None:
        """RFC 768 "Length": the minimum value is eight."""
        with pytest.raises(WireError, match="bad_length"):
            UdpRepr.parse(udp_part(udp_datagram(b"abcd", length=length)), pseudo())

    def test_length_beyond_datagram(self) -> None:
        """RFC 768 "Length": a Length field above what IP delivered is a truncated datagram."""
        with pytest.raises(WireError, match="length_exceeds_datagram"):
            UdpRepr.parse(udp_part(udp_datagram(b"abcd", length=13)), pseudo())

    def test_octets_beyond_length_are_ignored(self) -> None:
        """Octets after the Length field's end are not the datagram's (ignored, as Linux does);
        the checksum covers only the datagram."""
        whole = bytes(udp_part(udp_datagram(b"ab", sport=1, dport=2)))  # Length 10, checksum by scapy
        d = UdpRepr.parse(memoryview(whole + b"XYZ"), pseudo())
        assert bytes(d.payload) == b"ab"


class TestEmit:
    @given(st.binary(max_size=1472), st.integers(0, 0xFFFF), st.integers(1, 0xFFFF))
    def test_scapy_accepts_what_we_emit(self, data: bytes, sport: int, dport: int) -> None:
        """RFC 768: scapy reads our header and finds the checksum it would compute."""
        d = UdpRepr(sport, dport, data)
        d.pseudo = pseudo(OWN_B, PEER_B)
        raw = Packet(b"")
        raw.push(d)
        udp = raw.to_bytes()
        parsed = UDP(udp)
        assert (parsed.sport, parsed.dport, parsed.len, bytes(parsed.payload)) == (sport, dport, 8 + len(data), data)
        expected = UDP(bytes(IP(src=OWN, dst=PEER) / UDP(sport=sport, dport=dport) / Raw(data))[20:])
        assert parsed.chksum == expected.chksum
        assert parsed.chksum != 0  # RFC 768: a computed zero is sent as all ones

    def test_computed_zero_is_sent_as_all_ones(self) -> None:
        """RFC 768 "Checksum": if the computed checksum is zero, it is transmitted as all ones.
        Data chosen so that the checksum comes out as zero."""
        base = UdpRepr(1, 2, b"\0\0")
        base.pseudo = pseudo(OWN_B, PEER_B)
        buf = bytearray(10)
        base.emit(buf, 0, 0)
        csum = int.from_bytes(buf[6:8], "big")
        # Put the checksum into the data: the sum then becomes 0xFFFF, whose complement is zero.
        d = UdpRepr(1, 2, csum.to_bytes(2, "big"))
        d.pseudo = base.pseudo
        d.emit(buf, 0, 0)
        assert buf[6:8] == b"\xff\xff"
        assert UdpRepr.parse(memoryview(bytes(buf)), pseudo(OWN_B, PEER_B)).checksummed
