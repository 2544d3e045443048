"""IPv4 header parse/emit and address classification (layers/ipv4/wire.py): RFC 791 §3.1, RFC 1122 §3.2.1."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.packet import Raw

from framework.errors import WireError
from layers.ipv4.wire import HEADER_LEN, Ipv4Repr, check_options, is_invalid_source, is_multicast
from tests.helpers import assert_init_takes_fields
from tests.layers.ipv4.helpers import MF, datagram, fix_checksum, rfc1071

# Version 4, IHL 5, TOS 0, Total Length 30, ID 0x1c46, DF, TTL 64, TCP, checksum 0x0a92,
# 10.0.0.1 -> 10.0.0.2, then 10 data bytes.
HEADER = bytes.fromhex("45 00 001e 1c46 4000 40 06 0a92 0a000001 0a000002")
PACKET = HEADER + b"\xaa" * 10

# Same addresses, IHL 6 with options NOP NOP NOP EOL, Total Length 28 (4 data bytes), ID 1, DF, TTL 64, TCP.
HEADER_WITH_OPTIONS = bytes.fromhex("46 00 001c 0001 4000 40 06 23d8 0a000001 0a000002 01010100")


def parse(buf: bytes, **kw: bool) -> tuple[Ipv4Repr, bytes]:
    hdr, payload = Ipv4Repr.parse(memoryview(buf), **kw)
    return hdr, bytes(payload)


def reject(buf: bytes) -> str:
    with pytest.raises(WireError) as exc:
        Ipv4Repr.parse(memoryview(buf))
    assert exc.value.layer == "ipv4"
    return exc.value.reason


def patched(buf: bytes, offset: int, value: bytes, *, checksum: bool = True) -> bytes:
    out = bytearray(buf)
    out[offset : offset + len(value)] = value
    return fix_checksum(out) if checksum else bytes(out)


class TestParse:
    def test_literal_checksum_is_valid(self):
        """The literal header's checksum field sums to zero under the RFC 1071 reference (RFC 791 §3.1)."""
        assert rfc1071(HEADER) == 0

    def test_deconstruct_literal_header(self):
        """Every field of a literal header is read from its RFC 791 §3.1 position."""
        hdr, payload = parse(PACKET)
        assert hdr == Ipv4Repr(
            src=b"\x0a\x00\x00\x01",
            dst=b"\x0a\x00\x00\x02",
            protocol=6,
            payload_len=10,
            ttl=64,
            tos=0,
            ident=0x1C46,
            dont_frag=True,
            more_frags=False,
            frag_offset=0,
            header_len=20,
        )
        assert payload == b"\xaa" * 10
        assert not hdr.is_fragment

    def test_fragment_fields(self):
        """MF and the 13-bit offset (in 8-octet units) are decoded, offset returned in bytes (RFC 791 §3.1)."""
        hdr, _ = parse(datagram(b"x" * 8, flags=MF, offset=8 * 0x1FFF))
        assert (hdr.more_frags, hdr.dont_frag, hdr.frag_offset, hdr.is_fragment) == (True, False, 65528, True)
        hdr, _ = parse(datagram(b"x", offset=16))
        assert (hdr.more_frags, hdr.frag_offset, hdr.is_fragment) == (False, 16, True)

    def test_tos_ttl_ident_decoded(self):
        """TOS, TTL and Identification are passed through as received (RFC 791 §3.1)."""
        hdr, _ = parse(datagram(b"", tos=0xB8, ttl=1, ident=0xFFFF, proto=253))
        assert (hdr.tos, hdr.ttl, hdr.ident, hdr.protocol) == (0xB8, 1, 0xFFFF, 253)

    def test_options_are_skipped(self):
        """IHL > 5: the options are skipped and the payload starts after them (RFC 791 §3.1, RFC 1122 §3.2.1.8)."""
        assert rfc1071(HEADER_WITH_OPTIONS) == 0
        hdr, payload = parse(HEADER_WITH_OPTIONS + b"\x01\x02\x03\x04" + b"pad")
        assert (hdr.header_len, hdr.payload_len) == (24, 4)
        assert payload == b"\x01\x02\x03\x04"

    def test_unknown_option_with_valid_length_is_ignored(self):
        """An unknown option with a sane length is ignored (RFC 1122 §3.2.1.8)."""
        opts = bytes([0x9E, 4, 0xAB, 0xCD]) + bytes([0x07, 7, 4, 0, 0, 0, 0]) + b"\0"  # unknown + record route
        hdr, payload = parse(datagram(b"data", options=opts))
        assert (hdr.header_len, payload) == (32, b"data")

    def test_maximum_ihl(self):
        """IHL 15 (60-byte header, 40 bytes of NOPs) is accepted (RFC 791 §3.1)."""
        hdr, payload = parse(datagram(b"xy", options=b"\x01" * 40))
        assert (hdr.header_len, hdr.payload_len, payload) == (60, 2, b"xy")

    def test_trailing_bytes_beyond_total_length_are_ignored(self):
        """Bytes after Total Length (link padding) are not part of the datagram (RFC 791 §3.1)."""
        hdr, payload = parse(PACKET + b"\0" * 18)
        assert (hdr.payload_len, payload) == (10, b"\xaa" * 10)

    def test_header_only_datagram(self):
        """A datagram of exactly 20 bytes has an empty payload (RFC 791 §3.1)."""
        hdr, payload = parse(datagram(b""))
        assert (hdr.payload_len, payload) == (0, b"")

    def test_checksum_not_verified_when_disabled(self):
        """With verification off a bad checksum is accepted (RFC 1122 §3.2.1.2 is the default)."""
        bad = patched(PACKET, 10, b"\0\0", checksum=False)
        hdr, _ = parse(bad, verify_checksum=False)
        assert hdr.ident == 0x1C46

    def test_all_ones_checksum_equivalent_to_zero(self):
        """A header whose checksum is 0x0000 also verifies as 0xFFFF ("negative zero", RFC 1624 §3)."""
        # Find an ident making the computed checksum 0, then store the equivalent 0xFFFF.
        for ident in range(0x10000):
            raw = datagram(b"", ident=ident)
            if raw[10:12] == b"\0\0":
                break
        else:  # pragma: no cover
            pytest.fail("no ident yields a zero checksum")
        parse(raw)
        parse(patched(raw, 10, b"\xff\xff", checksum=False))


class TestReject:
    @pytest.mark.parametrize("length", [0, 1, 19])
    def test_shorter_than_header_is_truncated(self, length):
        """Fewer than 20 bytes cannot hold a header (RFC 791 §3.1)."""
        assert reject(PACKET[:length]) == "truncated"

    def test_shorter_than_total_length_is_truncated(self):
        """A datagram shorter than its Total Length is dropped (RFC 791 §3.1; checklist IP4)."""
        assert reject(PACKET[:-1]) == "truncated"

    def test_options_running_past_buffer(self):
        """IHL 15 on a 20-byte buffer is truncated or malformed, never read past the end (RFC 791 §3.1)."""
        assert reject(patched(HEADER, 0, b"\x4f", checksum=False)) in ("bad_total_length", "truncated")

    @pytest.mark.parametrize("first", [0x65, 0x55, 0x05, 0xF5])
    def test_version_not_4(self, first):
        """A version other than 4 is silently discarded (RFC 1122 §3.2.1.1)."""
        assert reject(patched(PACKET, 0, bytes([first]))) == "bad_version"

    def test_ipv6_header(self):
        """An IPv6 header (version 6) is discarded as a bad version (RFC 1122 §3.2.1.1)."""
        ipv6 = bytes.fromhex("6000000000083aff" + "fe80" + "00" * 13 + "01" + "ff02" + "00" * 13 + "02") + b"\x85" * 8
        assert reject(ipv6) == "bad_version"

    @pytest.mark.parametrize("ihl", [0, 1, 4])
    def test_ihl_below_5(self, ihl):
        """IHL counts 32-bit words and is at least 5 (RFC 791 §3.1)."""
        assert reject(patched(PACKET, 0, bytes([0x40 | ihl]), checksum=False)) == "bad_header_length"

    @pytest.mark.parametrize("total", [0, 19])
    def test_total_length_below_header(self, total):
        """Total Length covers the header, so it is at least IHL*4 (RFC 791 §3.1)."""
        assert reject(patched(PACKET, 2, total.to_bytes(2, "big"))) == "bad_total_length"

    def test_total_length_below_ihl_with_options(self):
        """Total Length smaller than a 24-byte header is rejected (RFC 791 §3.1)."""
        assert reject(patched(HEADER_WITH_OPTIONS, 2, (22).to_bytes(2, "big"))) == "bad_total_length"

    def test_bad_checksum(self):
        """A bad header checksum is silently discarded (RFC 1122 §3.2.1.2)."""
        assert reject(patched(PACKET, 10, b"\x0a\x93", checksum=False)) == "bad_checksum"

    def test_bad_checksum_in_options(self):
        """The checksum covers the options too (RFC 791 §3.1)."""
        assert reject(patched(HEADER_WITH_OPTIONS + b"abcd", 21, b"\x02", checksum=False)) == "bad_checksum"

    def test_reserved_flag(self):
        """Flags bit 0 is reserved and must be zero (RFC 791 §3.1)."""
        assert reject(patched(PACKET, 6, b"\xc0\x00")) == "reserved_flag"

    @pytest.mark.parametrize(
        "options",
        [
            pytest.param(b"\x07\x00\x00\x00", id="length-0"),
            pytest.param(b"\x07\x01\x00\x00", id="length-1"),
            pytest.param(b"\x07\x05\x00\x00", id="beyond-ihl"),
            pytest.param(b"\x01\x01\x44\xff", id="beyond-ihl-after-nops"),
            pytest.param(b"\x01\x01\x01\x83", id="no-length-byte"),
        ],
    )
    def test_bad_option_length(self, options):
        """A malformed option length (0, 1, past the header) is rejected, never looped on (RFC 1122 §3.2.1.8)."""
        assert reject(datagram(b"", options=options)) == "bad_option"


class TestCheckOptions:
    @pytest.mark.parametrize(
        "opts",
        [b"", b"\x00", b"\x00\x07\x00", b"\x01" * 40, b"\x94\x04\x00\x00", b"\x01\x83\x03\x00\x00\x00\x00\x00"],
    )
    def test_accepted(self, opts):
        """EOL ends the list, NOPs are single bytes, unknown options with a length are skipped (RFC 1122 §3.2.1.8)."""
        check_options(memoryview(opts))

    @given(st.binary(max_size=40))
    def test_never_loops_or_raises_otherwise(self, opts):
        """Any option bytes either pass or raise bad_option; the walk always ends (RFC 1122 §3.2.1.8)."""
        try:
            check_options(memoryview(opts))
        except WireError as exc:
            assert exc.reason == "bad_option"


class TestEmit:
    def test_emit_literal(self):
        """A Repr emits exactly the literal header, checksum included (RFC 791 §3.1)."""
        r = Ipv4Repr(b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", 6, ident=0x1C46, dont_frag=True)
        buf = bytearray(HEADER_LEN)
        r.emit(buf, 0, 10)
        assert bytes(buf) == HEADER

    def test_emit_is_inverse_of_parse(self):
        """parse then emit reproduces the header bytes (RFC 791 §3.1)."""
        hdr, payload = parse(PACKET)
        buf = bytearray(HEADER_LEN + len(payload))
        hdr.emit(buf, 0, len(payload))
        buf[HEADER_LEN:] = payload
        assert bytes(buf) == PACKET

    def test_emit_at_offset(self):
        """emit writes only buf[offset:offset+20] (RFC 791 §3.1)."""
        r, _ = parse(PACKET)
        buf = bytearray(b"\xee" * 30)
        r.emit(buf, 5, 10)
        assert buf[:5] == b"\xee" * 5 and bytes(buf[5:25]) == HEADER and buf[25:] == b"\xee" * 5

    def test_emit_drops_options(self):
        """We never emit options: a parsed 24-byte header is emitted as IHL 5 (RFC 791 §3.1)."""
        hdr, _ = parse(HEADER_WITH_OPTIONS + b"abcd")
        buf = bytearray(HEADER_LEN)
        hdr.emit(buf, 0, 4)
        again, _ = Ipv4Repr.parse(memoryview(bytes(buf) + b"abcd"))
        assert (buf[0], again.header_len, again.payload_len, again.ident) == (0x45, 20, 4, 1)

    def test_emit_fragment(self):
        """MF and the offset (bytes / 8) are written into the flags field, DF clear (RFC 791 §3.2)."""
        r = Ipv4Repr(b"\x0a\x00\x00\x02", b"\x0a\x00\x00\x01", 1, ident=7, dont_frag=False, more_frags=True)
        r.frag_offset = 1480
        buf = bytearray(HEADER_LEN)
        r.emit(buf, 0, 1480)
        assert buf[6:8] == (MF | 185).to_bytes(2, "big")
        assert buf[2:4] == (1500).to_bytes(2, "big")
        assert rfc1071(bytes(buf)) == 0

    @given(
        src=st.binary(min_size=4, max_size=4),
        dst=st.binary(min_size=4, max_size=4),
        protocol=st.integers(0, 255),
        payload_len=st.integers(0, 65535 - HEADER_LEN),
        ttl=st.integers(0, 255),
        tos=st.integers(0, 255),
        ident=st.integers(0, 0xFFFF),
        df=st.booleans(),
        mf=st.booleans(),
        frag_units=st.integers(0, 0x1FFF),
    )
    def test_roundtrip(self, src, dst, protocol, payload_len, ttl, tos, ident, df, mf, frag_units):
        """emit then parse gives back every field (RFC 791 §3.1)."""
        r = Ipv4Repr(src, dst, protocol, payload_len, ttl, tos, ident, df, mf, frag_units * 8)
        buf = bytearray(HEADER_LEN + payload_len)
        r.emit(buf, 0, payload_len)
        assert rfc1071(bytes(buf[:HEADER_LEN])) == 0
        back, payload = Ipv4Repr.parse(memoryview(buf))
        assert back == r and len(payload) == payload_len


addresses = st.integers(0, 0xFFFFFFFF).map(lambda n: socket.inet_ntoa(n.to_bytes(4, "big")))


class TestScapyOracle:
    @given(
        src=addresses,
        dst=addresses,
        proto=st.integers(0, 255),
        tos=st.integers(0, 255),
        ident=st.integers(0, 0xFFFF),
        flags=st.sampled_from(["", "DF", "MF", "DF+MF"]),
        frag=st.integers(0, 0x1FFF),
        ttl=st.integers(0, 255),
        options=st.integers(0, 10).map(lambda n: b"\x01" * (4 * n - 1) + b"\x00" if n else b""),
        payload=st.binary(max_size=64),
        padding=st.binary(max_size=8),
    )
    def test_parse_agrees_with_scapy(self, src, dst, proto, tos, ident, flags, frag, ttl, options, payload, padding):
        """A header built by scapy parses to the same fields with ours, payload included (RFC 791 §3.1)."""
        pkt = IP(src=src, dst=dst, proto=proto, tos=tos, id=ident, flags=flags, frag=frag, ttl=ttl, options=options)
        raw = bytes(pkt / Raw(payload)) if payload else bytes(pkt)
        hdr, data = parse(raw + padding)
        decoded = IP(raw)
        assert hdr.src == socket.inet_aton(decoded.src) and hdr.dst == socket.inet_aton(decoded.dst)
        assert (hdr.protocol, hdr.tos, hdr.ident, hdr.ttl) == (decoded.proto, decoded.tos, decoded.id, decoded.ttl)
        assert hdr.dont_frag == bool(decoded.flags.DF) and hdr.more_frags == bool(decoded.flags.MF)
        assert hdr.frag_offset == decoded.frag * 8
        assert hdr.header_len == decoded.ihl * 4
        assert hdr.payload_len == decoded.len - decoded.ihl * 4 == len(payload)
        assert data == payload

    @given(
        src=st.binary(min_size=4, max_size=4),
        dst=st.binary(min_size=4, max_size=4),
        protocol=st.integers(0, 255),
        ttl=st.integers(1, 255),
        tos=st.integers(0, 255),
        ident=st.integers(0, 0xFFFF),
        df=st.booleans(),
        mf=st.booleans(),
        frag_units=st.integers(0, 0x1FFF),
        payload=st.binary(max_size=32),
    )
    def test_emit_agrees_with_scapy(self, src, dst, protocol, ttl, tos, ident, df, mf, frag_units, payload):
        """scapy decodes our emitted header to the same fields and computes the same checksum (RFC 791 §3.1)."""
        r = Ipv4Repr(src, dst, protocol, len(payload), ttl, tos, ident, df, mf, frag_units * 8)
        buf = bytearray(HEADER_LEN + len(payload))
        r.emit(buf, 0, len(payload))
        buf[HEADER_LEN:] = payload
        pkt = IP(bytes(buf))
        assert (pkt.version, pkt.ihl, pkt.len, pkt.id, pkt.ttl, pkt.proto, pkt.tos) == (
            4,
            5,
            HEADER_LEN + len(payload),
            ident,
            ttl,
            protocol,
            tos,
        )
        assert (bool(pkt.flags.DF), bool(pkt.flags.MF), pkt.frag) == (df, mf, frag_units)
        assert pkt.src == socket.inet_ntoa(src) and pkt.dst == socket.inet_ntoa(dst)
        recomputed = IP(bytes(buf))
        del recomputed.chksum
        assert bytes(recomputed)[:HEADER_LEN] == bytes(buf[:HEADER_LEN])


class TestParseQuoted:
    def test_quote_shorter_than_total_length(self):
        """An ICMP quote holds the header + 8 data bytes, less than Total Length (RFC 1122 §3.2.2)."""
        full = datagram(b"T" * 100, src="10.0.0.2", dst="10.0.0.1")
        hdr, rest = Ipv4Repr.parse_quoted(memoryview(full[:28]))
        assert (hdr.src, hdr.dst, hdr.protocol, hdr.payload_len) == (b"\n\0\0\x02", b"\n\0\0\x01", 6, 100)
        assert bytes(rest) == b"T" * 8

    def test_checksum_and_reserved_flag_not_checked(self):
        """Routers may have changed the quoted header, so its checksum is not verified (RFC 792)."""
        full = patched(datagram(b"12345678"), 10, b"\xde\xad", checksum=False)
        full = patched(full, 6, b"\x80\x00", checksum=False)
        _hdr, rest = Ipv4Repr.parse_quoted(memoryview(full))
        assert bytes(rest) == b"12345678"

    def test_options_in_quote(self):
        """The quoted payload starts after the quoted header's options (RFC 792)."""
        hdr, rest = Ipv4Repr.parse_quoted(memoryview(HEADER_WITH_OPTIONS + b"abcdefgh"))
        assert hdr.header_len == 24 and bytes(rest) == b"abcdefgh"

    def test_total_length_below_ihl_is_tolerated(self):
        """A nonsense Total Length gives a zero payload length, not an error (RFC 792)."""
        hdr, _ = Ipv4Repr.parse_quoted(memoryview(patched(PACKET, 2, b"\x00\x00")))
        assert hdr.payload_len == 0

    def test_too_short(self):
        """Fewer than 20 bytes is not a quote (RFC 1122 §3.2.2)."""
        with pytest.raises(WireError) as exc:
            Ipv4Repr.parse_quoted(memoryview(PACKET[:19]))
        assert (exc.value.layer, exc.value.reason) == ("icmp", "quote_truncated")

    @pytest.mark.parametrize(
        "buf",
        [
            pytest.param(patched(PACKET, 0, b"\x65"), id="version-6"),
            pytest.param(patched(PACKET, 0, b"\x44"), id="ihl-4"),
            pytest.param(patched(PACKET, 0, b"\x47")[:24], id="ihl-past-quote"),
        ],
    )
    def test_malformed(self, buf):
        """A quote with a bad version or IHL is malformed (RFC 791 §3.1)."""
        with pytest.raises(WireError) as exc:
            Ipv4Repr.parse_quoted(memoryview(buf))
        assert (exc.value.layer, exc.value.reason) == ("icmp", "quote_malformed")


class TestAddresses:
    @pytest.mark.parametrize(
        "addr", ["0.0.0.0", "0.1.2.3", "127.0.0.1", "127.255.255.254", "224.0.0.1", "239.255.255.255"]
    )
    def test_invalid_sources(self, addr):
        """0/8, 127/8 and multicast are never valid sources (RFC 1122 §3.2.1.3)."""
        assert is_invalid_source(socket.inet_aton(addr))

    @pytest.mark.parametrize("addr", ["240.0.0.1", "255.255.255.255", "250.1.1.1"])
    def test_class_e_and_broadcast_are_invalid_sources(self, addr):
        """Class E and limited broadcast are not unicast sources (RFC 1122 §3.2.1.3)."""
        assert is_invalid_source(socket.inet_aton(addr))

    @pytest.mark.parametrize("addr", ["10.0.0.1", "1.0.0.0", "126.255.255.255", "128.0.0.1", "223.255.255.255"])
    def test_valid_sources(self, addr):
        """Ordinary unicast addresses are valid sources (RFC 1122 §3.2.1.3)."""
        assert not is_invalid_source(socket.inet_aton(addr))

    @pytest.mark.parametrize(
        ("addr", "expected"),
        [("224.0.0.0", True), ("239.255.255.255", True), ("223.255.255.255", False), ("240.0.0.0", False)],
    )
    def test_multicast(self, addr, expected):
        """Multicast is exactly 224.0.0.0/4 (RFC 1112 §4)."""
        assert is_multicast(socket.inet_aton(addr)) is expected


def test_ipv4repr_init_matches_its_declared_fields() -> None:
    """Ipv4Repr's __init__ is written out (mypyc compiles it): it takes the dataclass fields in
    order, by position and by name, with the declared defaults."""
    assert_init_takes_fields(Ipv4Repr, b"\x01\x02\x03\x04", b"\x05\x06\x07\x08", 6)
