"""TCP header parse/emit (RFC 9293 §3.1) and the checksum over the pseudo-header (MUST-2/3):
byte literals, round trips, and scapy as an independent oracle."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP

from framework.errors import WireError
from layers.tcp.wire import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, TcpRepr, flags_str, pseudo_base
from tests.helpers import assert_init_takes_fields
from tests.layers.ipv4.helpers import rfc1071
from tests.layers.tcp.helpers import LOCAL_ADDR, LOCAL_IP, REMOTE_ADDR, REMOTE_IP

PSEUDO_OUT = pseudo_base(LOCAL_ADDR, REMOTE_ADDR)  # our segments: 10.0.0.1 -> 10.0.0.2
PSEUDO_IN = pseudo_base(REMOTE_ADDR, LOCAL_ADDR)


def pseudo_header(src: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9293 §3.1: source, destination, zero, protocol 6, TCP length."""
    return src + dst + struct.pack("!BBH", 0, 6, length)


def emitted(seg: TcpRepr, pseudo: int = PSEUDO_OUT) -> bytes:
    seg.pseudo = pseudo
    return seg.to_bytes()


# A SYN from 10.0.0.1:80 to 10.0.0.2:49500, seq 10000, window 64, MSS 1460.
SYN_BYTES = bytes.fromhex(
    "0050"
    "c15c"  # ports 80, 49500
    "00002710"  # sequence number 10000
    "00000000"  # acknowledgment number 0
    "60"
    "02"  # data offset 6 words, flags SYN
    "0040"  # window 64
    "0000"  # checksum (filled in below)
    "0000"  # urgent pointer
    "020405b4"  # MSS 1460
)


def with_checksum(raw: bytes, src: bytes = LOCAL_ADDR, dst: bytes = REMOTE_ADDR) -> bytes:
    csum = rfc1071(pseudo_header(src, dst, len(raw)) + raw)
    return raw[:16] + csum.to_bytes(2, "big") + raw[18:]


class TestByteLiterals:
    def test_emit_syn_with_mss(self) -> None:
        """RFC 9293 §3.1, §3.2: header layout, data offset 6 for a 4-byte MSS option, checksum over the
        pseudo-header."""
        seg = TcpRepr(80, 49500, 10000, 0, SYN, 64, mss=1460)
        assert emitted(seg) == with_checksum(SYN_BYTES)

    def test_parse_syn_with_mss(self) -> None:
        """RFC 9293 §3.1: every header field and the MSS option are read back."""
        seg = TcpRepr.parse(memoryview(with_checksum(SYN_BYTES)), PSEUDO_OUT)
        assert seg == TcpRepr(80, 49500, 10000, 0, SYN, 64, mss=1460)
        assert bytes(seg.payload) == b""

    def test_emit_ack_with_data_and_all_fields(self) -> None:
        """RFC 9293 §3.1: 32-bit sequence and acknowledgment numbers, all flag bits, urgent pointer, payload after a
        20-byte header."""
        seg = TcpRepr(0xFFFF, 1, 0xFFFFFFFF, 0x80000000, CWR | ECE | URG | ACK | PSH, 0xFFFF, b"xyz", urgent=3)
        raw = bytes.fromhex("ffff0001ffffffff8000000050f8ffff00000003") + b"xyz"
        assert emitted(seg) == with_checksum(raw)

    def test_reserved_bits_are_zero_on_send_and_ignored_on_receipt(self) -> None:
        """RFC 9293 §3.1 (T4): reserved bits are sent as zero and ignored when parsing."""
        out = emitted(TcpRepr(1, 2, 3, 4, ACK, 5))
        assert out[12] & 0x0F == 0
        raw = bytearray(out)
        raw[12] |= 0x0F
        raw[16:18] = b"\0\0"
        raw = bytearray(with_checksum(bytes(raw)))
        assert TcpRepr.parse(memoryview(bytes(raw)), PSEUDO_OUT) == TcpRepr(1, 2, 3, 4, ACK, 5)

    def test_flags_str(self) -> None:
        """RFC 9293 §3.1: the control bits, shown in logs as tcpdump's flag letters."""
        assert flags_str(SYN | ACK) == "S."
        assert flags_str(FIN | PSH | ACK) == "FP."
        assert flags_str(RST) == "R"
        assert flags_str(0) == "none"

    def test_seg_len_counts_syn_and_fin(self) -> None:
        """RFC 9293 §3.4: SEG.LEN counts the octets of data plus one each for SYN and FIN."""
        assert TcpRepr(1, 2, 0, 0, SYN | FIN, 0, b"abc").seg_len == 5
        assert TcpRepr(1, 2, 0, 0, ACK, 0, b"abc").seg_len == 3


class TestChecksum:
    @given(st.binary(max_size=101), st.integers(0, 0xFFFFFFFF))
    def test_checksum_matches_reference_for_any_payload_length(self, payload: bytes, seq: int) -> None:
        """RFC 9293 §3.1, MUST-2 (T1): the checksum covers pseudo-header, header and data, an odd last byte padded
        with zero."""
        raw = emitted(TcpRepr(80, 49500, seq, 1, ACK | PSH, 64, payload))
        assert rfc1071(pseudo_header(LOCAL_ADDR, REMOTE_ADDR, len(raw)) + raw) == 0

    @pytest.mark.parametrize("n", [0, 1, 2, 3, 999, 1000, 1459])
    def test_scapy_agrees_on_the_checksum(self, n: int) -> None:
        """RFC 9293 §3.1 (T1): scapy, recomputing over its own pseudo-header, gets our checksum (odd and even
        lengths)."""
        seg = TcpRepr(80, 49500, 123, 456, ACK | PSH, 64, (bytes(range(256)) * 6)[:n])
        raw = emitted(seg)
        pkt = IP(src=LOCAL_IP, dst=REMOTE_IP) / TCP(raw)
        ours = pkt[TCP].chksum
        del pkt[TCP].chksum
        rebuilt = IP(bytes(pkt))
        assert rebuilt[TCP].chksum == ours

    def test_verification_accepts_good_and_rejects_bad(self) -> None:
        """RFC 9293 MUST-3 (T2): a correct checksum parses; any single flipped bit is a bad_checksum error."""
        raw = emitted(TcpRepr(80, 49500, 1, 2, ACK, 64, b"hello!"))
        TcpRepr.parse(memoryview(raw), PSEUDO_OUT)
        for byte in range(len(raw)):
            for bit in (0, 3, 7):
                bad = bytearray(raw)
                bad[byte] ^= 1 << bit
                with pytest.raises(WireError) as exc:
                    TcpRepr.parse(memoryview(bytes(bad)), PSEUDO_OUT)
                assert exc.value.reason in ("bad_checksum", "bad_data_offset", "bad_option")

    def test_wrong_pseudo_header_is_detected(self) -> None:
        """RFC 9293 §3.1 (T1): the same bytes from another address pair fail verification."""
        raw = emitted(TcpRepr(80, 49500, 1, 2, ACK, 64, b"x"))
        with pytest.raises(WireError, match="bad_checksum"):
            TcpRepr.parse(memoryview(raw), pseudo_base(b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x03"))

    def test_no_verification_without_pseudo_header(self) -> None:
        """RFC 9293 MUST-3: with TcpSettings.verify_checksum off no pseudo-header is passed and the field is not
        looked at."""
        raw = bytearray(emitted(TcpRepr(80, 49500, 1, 2, ACK, 64, b"x")))
        raw[16] ^= 0xFF
        assert TcpRepr.parse(memoryview(bytes(raw)), None).seq == 1


class TestMalformed:
    def test_truncated(self) -> None:
        """RFC 9293 §3.1: fewer than 20 bytes is no TCP header."""
        with pytest.raises(WireError, match="truncated"):
            TcpRepr.parse(memoryview(b"\0" * 19), None)

    @pytest.mark.parametrize("doff", [0, 1, 4, 6, 15])
    def test_bad_data_offset(self, doff: int) -> None:
        """RFC 9293 §3.1 (T5): 5 <= data offset and the header fits in the segment."""
        raw = bytearray(emitted(TcpRepr(80, 49500, 1, 2, ACK, 64)))
        raw[12] = doff << 4
        with pytest.raises(WireError, match="bad_data_offset"):
            TcpRepr.parse(memoryview(bytes(raw)), None)

    @given(st.binary(max_size=80))
    def test_parse_never_raises_anything_but_wire_error(self, raw: bytes) -> None:
        """RFC 9293 §3.1, MUST-7: arbitrary bytes either parse or raise WireError; nothing else, never a hang."""
        try:
            TcpRepr.parse(memoryview(raw), None)
        except WireError:
            pass


HEADERS = st.builds(
    TcpRepr,
    src_port=st.integers(0, 0xFFFF),
    dst_port=st.integers(0, 0xFFFF),
    seq=st.integers(0, 0xFFFFFFFF),
    ack=st.integers(0, 0xFFFFFFFF),
    flags=st.integers(0, 0xFF),
    window=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=64),
    urgent=st.integers(0, 0xFFFF),
    mss=st.none() | st.integers(0, 0xFFFF),
    wscale=st.none() | st.integers(0, 14),
    sack_perm=st.booleans(),
    sack=st.none()
    | st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)), min_size=1, max_size=3),
    ts=st.none() | st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)),
).filter(lambda seg: seg.options_len() <= 40)  # RFC 9293 §3.1: at most 40 bytes of options


class TestRoundTrip:
    @given(HEADERS)
    def test_emit_then_parse_is_identity(self, seg: TcpRepr) -> None:
        """RFC 9293 §3.1-3.2: every field and option survives emit + parse (with checksum verification)."""
        raw = emitted(seg, PSEUDO_IN)
        back = TcpRepr.parse(memoryview(raw), PSEUDO_IN)
        back.payload = bytes(back.payload)
        assert back == seg

    @given(HEADERS)
    def test_header_is_32_bit_aligned_and_within_60_bytes(self, seg: TcpRepr) -> None:
        """RFC 9293 §3.1, MUST-68/69 (T9): the data offset counts whole words; options never exceed 40 bytes."""
        raw = emitted(seg)
        hlen = (raw[12] >> 4) * 4
        assert hlen == 20 + seg.options_len()
        assert hlen % 4 == 0 and hlen <= 60
        assert raw[hlen:] == bytes(seg.payload)

    @given(HEADERS)
    def test_scapy_reads_what_we_emit(self, seg: TcpRepr) -> None:
        """RFC 9293 §3.1-3.2: an independent parser (scapy) sees the same header fields and options."""
        raw = emitted(seg)
        pkt = TCP(raw)
        assert (pkt.sport, pkt.dport, pkt.seq, pkt.ack, int(pkt.flags), pkt.window, pkt.urgptr) == (
            seg.src_port,
            seg.dst_port,
            seg.seq,
            seg.ack,
            seg.flags,
            seg.window,
            seg.urgent,
        )
        opts = dict((k, v) for k, v in pkt.options if k not in ("NOP", "EOL"))
        assert opts.get("MSS") == seg.mss
        assert opts.get("WScale") == seg.wscale
        assert ("SAckOK" in opts) == seg.sack_perm
        assert opts.get("Timestamp") == seg.ts
        if seg.sack:
            flat = tuple(x for block in seg.sack for x in block)
            assert opts["SAck"] == flat
        else:
            assert "SAck" not in opts


def test_tcprepr_init_matches_its_declared_fields() -> None:
    """TcpRepr's __init__ is written out (mypyc compiles it): it takes the dataclass fields in
    order, by position and by name, with the declared defaults."""
    assert_init_takes_fields(TcpRepr, 1, 2, 3, 4, 5, 6)
