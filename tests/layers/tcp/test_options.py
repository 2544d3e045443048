"""TCP options (RFC 9293 §3.2, §3.7.1; RFC 7323; RFC 2018): parsing any layout (MUST-4..7,
MUST-64), emitting the aligned layout Linux uses, and scapy as an oracle for both."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import TCP

from framework.errors import WireError
from layers.tcp.wire import ACK, SYN, TcpRepr


def header(options: bytes, payload: bytes = b"") -> bytes:
    """A 20-byte header (SYN) followed by *options* (zero-padded to a word) and *payload*."""
    options += b"\0" * (-len(options) % 4)
    doff = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", 1, 2, 3, 0, doff << 4, SYN, 1000, 0, 0) + options + payload


def parse(options: bytes, payload: bytes = b"") -> TcpRepr:
    return TcpRepr.parse(memoryview(header(options, payload)), None)


class TestParse:
    def test_mss(self) -> None:
        """RFC 9293 §3.2 (MUST-14): kind 2, length 4, 16-bit MSS."""
        assert parse(b"\x02\x04\x05\xb4").mss == 1460

    def test_window_scale_sack_permitted_timestamps(self) -> None:
        """RFC 7323 §2.2, §3.2; RFC 2018 §2: kinds 3 (len 3), 4 (len 2), 8 (len 10) are recognised."""
        seg = parse(b"\x02\x04\x05\xb4\x04\x02\x08\x0a\x00\x00\x00\x07\x00\x00\x00\x00\x01\x03\x03\x07")
        assert (seg.mss, seg.sack_perm, seg.ts, seg.wscale) == (1460, True, (7, 0), 7)

    def test_sack_blocks(self) -> None:
        """RFC 2018 §3: kind 5, length 8n+2, n (left, right) edges."""
        seg = parse(b"\x01\x01\x05\x12" + struct.pack("!IIII", 10, 20, 30, 40))
        assert seg.sack == [(10, 20), (30, 40)]

    def test_eol_ends_the_list(self) -> None:
        """RFC 9293 §3.2, MUST-4: End of Option List: nothing after it is parsed."""
        assert parse(b"\x00\x02\x04\x05\xb4").mss is None

    def test_nop_runs_and_unaligned_options(self) -> None:
        """RFC 9293 MUST-5/64 (T6, T8): any number of NOPs; options at any byte offset."""
        assert parse(b"\x01" * 7 + b"\x02\x04\x01\x00").mss == 256
        assert parse(b"\x01\x02\x04\x02\x00").mss == 512

    def test_unknown_options_are_skipped(self) -> None:
        """RFC 9293 §3.2, MUST-6 (T6): an unknown option with a length is skipped, those after it still read."""
        seg = parse(b"\xfd\x04\xaa\xbb\xfe\x02\x02\x04\x03\xe8")
        assert seg.mss == 1000

    def test_known_option_with_wrong_length_is_ignored(self) -> None:
        """RFC 9293 §3.2, MUST-6: a known kind with an unexpected length is skipped by its length (wire.py's
        documented choice, as Linux)."""
        seg = parse(b"\x02\x06\x05\xb4\x00\x00\x03\x03\x05")
        assert seg.mss is None and seg.wscale == 5

    @pytest.mark.timeout(10)
    @pytest.mark.parametrize(
        "options",
        [b"\x02\x00", b"\x02\x01", b"\xfd\x00", b"\xfd\x01", b"\x01\x01\x01\x02", b"\x02\x08\x05\xb4"],
        ids=["mss-len0", "mss-len1", "unknown-len0", "unknown-len1", "no-length-byte", "overrun"],
    )
    def test_illegal_lengths_raise_instead_of_looping(self, options: bytes) -> None:
        """RFC 9293 §3.1, MUST-7 (T7): an illegal option length is a malformed segment (never an endless loop)."""
        with pytest.raises(WireError, match="bad_option"):
            parse(options)

    def test_options_do_not_leak_into_the_payload(self) -> None:
        """RFC 9293 §3.1: the payload starts after Data Offset words, however the options end."""
        seg = parse(b"\x02\x04\x05\xb4\x01", payload=b"data")
        assert bytes(seg.payload) == b"data"

    @given(st.binary(max_size=40))
    def test_any_option_bytes_parse_or_raise_wire_error(self, options: bytes) -> None:
        """RFC 9293 MUST-7: arbitrary option bytes never crash or hang the parser."""
        try:
            parse(options)
        except WireError as exc:
            assert exc.reason == "bad_option"


class TestScapyBuiltOptions:
    @pytest.mark.parametrize(
        ("options", "expected"),
        [
            ([("MSS", 1460)], {"mss": 1460}),
            ([("NOP", None), ("MSS", 536)], {"mss": 536}),
            ([("WScale", 14), ("NOP", None), ("SAckOK", b"")], {"wscale": 14, "sack_perm": True}),
            ([("Timestamp", (123456789, 987654321))], {"ts": (123456789, 987654321)}),
            ([("SAck", (1, 2, 3, 4, 5, 6))], {"sack": [(1, 2), (3, 4), (5, 6)]}),
            (
                [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)],
                {"mss": 1460, "sack_perm": True, "ts": (1, 0), "wscale": 7},
            ),  # Linux's SYN
        ],
    )
    def test_parse_what_scapy_builds(self, options: list[tuple[str, object]], expected: dict[str, object]) -> None:
        """RFC 9293 §3.2, RFC 7323, RFC 2018: options laid out by an independent builder are understood."""
        raw = bytes(TCP(sport=1, dport=2, flags="S", options=options))
        seg = TcpRepr.parse(memoryview(raw), None)
        for name, value in expected.items():
            assert getattr(seg, name) == value


class TestEmitLayout:
    def test_syn_options_in_linux_order_and_aligned(self) -> None:
        """RFC 9293 MUST-64/68/69 (T9): we emit MSS, SACK-perm + TS, NOP + WS: every option but NOP has a length, all
        4-byte aligned."""
        seg = TcpRepr(1, 2, 3, 0, SYN, 1000, mss=1460, sack_perm=True, ts=(5, 0), wscale=7)
        raw = seg.to_bytes()
        assert raw[20:] == bytes.fromhex("020405b40402080a000000050000000001030307")
        assert [k for k, _ in TCP(raw).options] == ["MSS", "SAckOK", "Timestamp", "NOP", "WScale"]

    def test_timestamps_without_sack_permitted_are_padded_with_nops(self) -> None:
        """RFC 7323 Appendix A: NOP NOP TS keeps the 10-byte timestamp option word-aligned."""
        raw = TcpRepr(1, 2, 3, 4, ACK, 1000, ts=(1, 2)).to_bytes()
        assert raw[20:32] == bytes.fromhex("0101080a0000000100000002")

    def test_sack_blocks_are_preceded_by_two_nops(self) -> None:
        """RFC 2018 §3: NOP NOP SACK(8n+2) keeps the blocks aligned; scapy reads them back."""
        raw = TcpRepr(1, 2, 3, 4, ACK, 1000, sack=[(100, 200)]).to_bytes()
        assert raw[20:32] == bytes.fromhex("0101050a00000064000000c8")
        assert dict(TCP(raw).options)["SAck"] == (100, 200)

    def test_no_options_means_a_20_byte_header(self) -> None:
        """RFC 9293 §3.1: without options Data Offset is 5."""
        raw = TcpRepr(1, 2, 3, 4, ACK, 1000, b"x").to_bytes()
        assert raw[12] >> 4 == 5 and len(raw) == 21
