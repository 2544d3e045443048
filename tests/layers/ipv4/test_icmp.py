"""ICMP (layers/ipv4/icmp.py and the ICMP side of the IPv4 layer): RFC 792, RFC 1122 §3.2.2, RFC 9293 §3.9.2.2.

Checklist rows IC1-IC10 and IP16. Stacks come from :func:`tests.helpers.ipv4_stack` (10.0.0.2/24,
a sink claiming protocol 6), fed with :meth:`Stack.receive_frame` at explicit times.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, IPerror, TCPerror, defragment, fragment
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

from framework.errors import WireError
from layers.ipv4 import icmp
from layers.ipv4.icmp import IcmpError, IcmpRepr, error_message
from layers.ipv4.wire import Ipv4Repr
from tests.helpers import ipv4_stack
from tests.layers.ipv4.helpers import (
    DF,
    MF,
    OWN,
    OWN_B,
    PEER,
    PEER_B,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UNKNOWN,
    datagram,
    drops,
    echo_request,
    feed,
    fragment_payload,
    icmp_message,
    parse_icmp_output,
    parse_output,
    rfc1071,
)

# Echo request: type 8, code 0, checksum 0xbc03, identifier 0x1234, sequence 1, data "abcde".
ECHO = bytes.fromhex("08 00 bc03 1234 0001") + b"abcde"


def tcp_segment(payload: bytes = b"") -> bytes:
    """20 bytes shaped like a TCP header (ports 40000 -> 80, seq 0x01020304); the IPv4 layer never parses it."""
    return struct.pack("!HHIIBBHHH", 40000, 80, 0x01020304, 0, 0x50, 0x02, 65535, 0, 0) + payload


def icmp_error_datagram(type_: int, code: int, quote: bytes, rest: bytes = b"\0\0\0\0", **ip: object) -> bytes:
    return datagram(icmp_message(type_, code, rest, quote), proto=PROTO_ICMP, **ip)  # type: ignore[arg-type]


def our_tcp_datagram(payload: bytes = b"") -> bytes:
    """A TCP datagram as we would have sent it: 10.0.0.2 -> 10.0.0.1."""
    return datagram(tcp_segment(payload), src=OWN, dst=PEER, proto=PROTO_TCP, ident=99, flags=DF)


# ---------------------------------------------------------------------------------------- wire


class TestIcmpWire:
    def test_literal_checksum_is_valid(self):
        """The literal echo request checksums to zero (RFC 792)."""
        assert rfc1071(ECHO) == 0

    def test_deconstruct_echo(self):
        """Type, code, the 4-byte rest (id, seq) and data are read from their RFC 792 positions."""
        msg = IcmpRepr.parse(memoryview(ECHO))
        assert (msg.type, msg.code, msg.rest, bytes(msg.data)) == (8, 0, b"\x12\x34\x00\x01", b"abcde")

    def test_emit_literal(self):
        """emit writes the literal message, odd-length checksum included (RFC 792, RFC 1071 §4.1)."""
        buf = bytearray(len(ECHO))
        IcmpRepr(8, 0, b"\x12\x34\x00\x01", b"abcde").emit(buf, 0, 0)
        assert bytes(buf) == ECHO

    def test_emit_is_inverse_of_parse(self):
        """parse then emit reproduces the message (RFC 792)."""
        msg = IcmpRepr.parse(memoryview(ECHO))
        buf = bytearray(b"\xee" * (3 + msg.buffer_len()))
        msg.emit(buf, 3, 0)
        assert bytes(buf[3:]) == ECHO and buf[:3] == b"\xee" * 3

    @pytest.mark.parametrize("length", [0, 1, 7])
    def test_truncated(self, length):
        """Fewer than 8 bytes is not an ICMP message (RFC 792)."""
        with pytest.raises(WireError) as exc:
            IcmpRepr.parse(memoryview(ECHO[:length]))
        assert (exc.value.layer, exc.value.reason) == ("icmp", "truncated")

    def test_bad_checksum(self):
        """The checksum covers the whole message; a bad one is rejected (RFC 792, RFC 1122 §3.2.2)."""
        bad = ECHO[:-1] + b"f"
        with pytest.raises(WireError) as exc:
            IcmpRepr.parse(memoryview(bad))
        assert exc.value.reason == "bad_checksum"
        assert bytes(IcmpRepr.parse(memoryview(bad), verify_checksum=False).data) == b"abcdf"

    @given(
        type_=st.integers(0, 255),
        code=st.integers(0, 255),
        rest=st.binary(min_size=4, max_size=4),
        data=st.binary(max_size=100),
    )
    def test_emit_agrees_with_scapy(self, type_, code, rest, data):
        """scapy's checksum verifies our emitted message, and parse gives back every field (RFC 792)."""
        m = IcmpRepr(type_, code, rest, data)
        buf = bytearray(m.buffer_len())
        m.emit(buf, 0, 0)
        back = IcmpRepr.parse(memoryview(bytes(buf)))
        assert (back.type, back.code, back.rest, bytes(back.data)) == (type_, code, rest, data)
        assert scapy_checksum(bytes(buf)) == 0

    @given(ident=st.integers(0, 0xFFFF), seq=st.integers(0, 0xFFFF), data=st.binary(max_size=100))
    def test_parse_agrees_with_scapy(self, ident, seq, data):
        """An echo request built by scapy parses to the same id, seq and data (RFC 792)."""
        raw = bytes(ICMP(type=8, id=ident, seq=seq) / Raw(data)) if data else bytes(ICMP(type=8, id=ident, seq=seq))
        msg = IcmpRepr.parse(memoryview(raw))
        assert (msg.type, msg.rest, bytes(msg.data)) == (8, struct.pack("!HH", ident, seq), data)


class TestIcmpErrorRecord:
    @pytest.mark.parametrize(
        ("type_", "code", "hard", "name"),
        [
            (3, 0, False, "net_unreachable"),
            (3, 1, False, "host_unreachable"),
            (3, 2, True, "protocol_unreachable"),
            (3, 3, True, "port_unreachable"),
            (3, 4, True, "fragmentation_needed"),
            (3, 5, False, "source_route_failed"),
            (3, 13, False, "icmp_3_13"),
            (11, 0, False, "ttl_exceeded"),
            (11, 1, False, "reassembly_time_exceeded"),
            (12, 0, False, "icmp_12_0"),
        ],
    )
    def test_hard_and_soft(self, type_, code, hard, name):
        """Unreachable codes 2-4 are hard, the rest soft (RFC 9293 §3.9.2.2, MUST-56, SHLD-26)."""
        err = IcmpError(type_, code)
        assert (err.is_hard, err.name) == (hard, name)

    def test_next_hop_mtu(self):
        """Fragmentation needed carries the next-hop MTU in the low 16 bits of rest (RFC 1191 §4)."""
        err = IcmpError.from_message(IcmpRepr(3, 4, b"\0\0\x05\x00", b""))
        assert (err.next_hop_mtu, err.pointer) == (1280, 0)
        assert IcmpError.from_message(IcmpRepr(3, 3, b"\0\0\x05\x00", b"")).next_hop_mtu == 0

    def test_parameter_problem_pointer(self):
        """Parameter Problem names the offending octet in the first byte of rest (RFC 792)."""
        err = IcmpError.from_message(IcmpRepr(12, 0, b"\x09\0\0\0", b""))
        assert (err.pointer, err.next_hop_mtu) == (9, 0)


class TestErrorMessage:
    def test_short_datagram_quoted_whole(self):
        """A datagram shorter than the room is quoted entirely (RFC 1122 §3.2.2: header + at least 8 bytes)."""
        dgram = datagram(b"12345678", proto=PROTO_UNKNOWN)
        m = error_message(3, 2, dgram, 20)
        assert (m.type, m.code, m.rest, bytes(m.data)) == (3, 2, b"\0\0\0\0", dgram)

    def test_long_datagram_quote_fills_576(self):
        """The quote is cut so the error datagram is 576 octets (RFC 1812 §4.3.2.3)."""
        dgram = datagram(bytes(range(256)) * 8, proto=PROTO_UNKNOWN)
        m = error_message(3, 2, dgram, 20)
        assert bytes(m.data) == dgram[:548]
        assert 20 + m.buffer_len() == icmp.MAX_ERROR_DATAGRAM


# ------------------------------------------------------------------------- echo (IC1, IC2)


class TestEcho:
    @pytest.mark.parametrize("size", [0, 1, 3, 4, 56, 1471, 1472])
    def test_reply_same_id_seq_data(self, size):
        """An echo reply carries the request's identifier, sequence number and data (RFC 1122 §3.2.2.6)."""
        data = bytes((i * 7 + 3) & 0xFF for i in range(size))
        stack, _, sink = ipv4_stack()
        out = feed(stack, [echo_request(0xBEEF, 0x0102, data, tos=0x10)], now=5.0)
        assert len(out) == 1
        hdr, msg = parse_icmp_output(out[0])
        assert (hdr.src, hdr.dst, hdr.tos) == (OWN_B, PEER_B, 0x10)
        assert (msg.type, msg.code, msg.rest, bytes(msg.data)) == (0, 0, b"\xbe\xef\x01\x02", data)
        assert len(out[0]) == 28 + size <= 1500
        assert sink.received == [] and drops(stack) == {}
        assert stack.stats.events["icmp.echo_replies"] == 1

    def test_reply_decoded_by_scapy(self):
        """scapy (an independent decoder) sees a well-formed echo reply to its own request (RFC 792)."""
        req = IP(src=PEER, dst=OWN, id=5) / ICMP(type="echo-request", id=77, seq=3) / Raw(b"\xff" * 33)
        stack, _, _ = ipv4_stack()
        (out,) = feed(stack, [bytes(req)], now=0.0)
        rep = IP(out)
        assert (rep.src, rep.dst, rep[ICMP].type, rep[ICMP].code) == (OWN, PEER, 0, 0)
        assert (rep[ICMP].id, rep[ICMP].seq, rep[Raw].load) == (77, 3, b"\xff" * 33)
        stored_ip, stored_icmp = rep.chksum, rep[ICMP].chksum
        del rep.chksum
        del rep[ICMP].chksum
        again = IP(bytes(rep))
        assert (again.chksum, again[ICMP].chksum) == (stored_ip, stored_icmp)

    def test_reply_to_request_with_options(self):
        """A request with IP options is answered; our reply has a plain 20-byte header (RFC 1122 §3.2.2.6)."""
        stack, _, _ = ipv4_stack()
        (out,) = feed(stack, [echo_request(1, 2, b"opts", options=b"\x01\x01\x01\x00")], now=0.0)
        hdr, msg = parse_icmp_output(out)
        assert hdr.header_len == 20 and bytes(msg.data) == b"opts"

    def test_echo_disabled(self):
        """With echo_reply=False a request is dropped and nothing is sent (RFC 1122 §3.2.2.6 made optional)."""
        stack, _, sink = ipv4_stack(echo_reply=False)
        assert feed(stack, [echo_request()], now=0.0) == []
        assert drops(stack) == {("icmp", "echo_disabled"): 1} and sink.received == []

    def test_bad_icmp_checksum_no_reply(self):
        """A request with a bad ICMP checksum is silently discarded (RFC 1122 §3.2.2; checklist IC2)."""
        good = echo_request(data=b"abcd")
        bad = good[:-1] + bytes([good[-1] ^ 0x01])
        stack, _, _ = ipv4_stack()
        assert feed(stack, [bad], now=0.0) == []
        assert drops(stack) == {("icmp", "bad_checksum"): 1}
        assert len(feed(stack, [good], now=0.0)) == 1

    def test_truncated_icmp(self):
        """An ICMP payload shorter than 8 bytes is dropped (RFC 792)."""
        stack, _, _ = ipv4_stack()
        assert feed(stack, [datagram(b"\x08\x00\xf7\xff", proto=PROTO_ICMP)], now=0.0) == []
        assert drops(stack) == {("icmp", "truncated"): 1}

    def test_unknown_type_discarded(self):
        """An unknown ICMP type (42) is silently discarded (RFC 1122 §3.2.2; checklist IC2)."""
        stack, _, sink = ipv4_stack()
        assert feed(stack, [datagram(icmp_message(42, 0, data=b"xyz"), proto=PROTO_ICMP)], now=0.0) == []
        assert drops(stack) == {("icmp", "unknown_type"): 1} and sink.received == []

    def test_unsolicited_echo_reply(self):
        """An echo reply we never asked for is dropped, not answered (RFC 792)."""
        stack, _, _ = ipv4_stack()
        assert feed(stack, [datagram(icmp_message(0, 0, b"\0\1\0\1"), proto=PROTO_ICMP)], now=0.0) == []
        assert drops(stack) == {("icmp", "unsolicited_echo_reply"): 1}

    def test_replies_not_rate_limited(self):
        """The error rate limit does not apply to echo replies (RFC 1122 §3.2.2.6)."""
        stack, _, _ = ipv4_stack(icmp_errors_per_second=0)
        out = feed(stack, [echo_request(seq=i) for i in range(200)], now=0.0)
        assert len(out) == 200
        assert [parse_icmp_output(f)[1].rest[2:] for f in out] == [i.to_bytes(2, "big") for i in range(200)]

    def test_fragmented_4000_byte_echo(self):
        """A fragmented 4000-byte echo request is reassembled and answered in fragments (RFC 1122 §3.2.2.6)."""
        data = bytes((i * 31) & 0xFF for i in range(4000))
        req = IP(src=PEER, dst=OWN, id=0x4242) / ICMP(type="echo-request", id=9, seq=4) / Raw(data)
        frags = [bytes(f) for f in fragment(req, fragsize=1480)]
        assert len(frags) == 3
        stack, _, _ = ipv4_stack()
        out = feed(stack, reversed(frags), now=1.0)
        assert len(out) == 3
        assert all(len(f) <= 1500 for f in out)
        idents = {parse_output(f)[0].ident for f in out}
        assert len(idents) == 1
        (whole,) = defragment([IP(f) for f in out])
        assert (whole.src, whole.dst, whole[ICMP].type, whole[ICMP].id, whole[ICMP].seq) == (OWN, PEER, 0, 9, 4)
        assert whole[Raw].load == data
        assert stack.stats.events["ipv4.reassembled"] == 1 and drops(stack) == {}


# ------------------------------------------------------------------ errors we receive (IC5-IC10)


class TestErrorsReceived:
    def test_port_unreachable_delivered_to_transport(self):
        """ICMP 3/3 quoting our TCP datagram reaches the transport as an icmp_error packet (RFC 9293 MUST-54; IC5)."""
        ours = our_tcp_datagram(b"hello world")
        stack, _, sink = ipv4_stack()
        err = icmp_error_datagram(3, 3, ours[:28], src="192.0.2.1")
        assert feed(stack, [err], now=0.0) == []
        (pkt,) = sink.received
        assert pkt.error is not None
        assert (pkt.error.type, pkt.error.code, pkt.error.is_hard) == (3, 3, True)
        quoted, _ = Ipv4Repr.parse_quoted(memoryview(ours))
        assert pkt.net == quoted
        assert (pkt.net.src, pkt.net.dst, pkt.net.protocol, pkt.net.ident) == (OWN_B, PEER_B, 6, 99)
        assert pkt.payload == ours[20:28] == tcp_segment()[:8]
        assert drops(stack) == {} and stack.stats.events["icmp.errors_received"] == 1

    def test_long_quote_payload_is_quoted_bytes(self):
        """The packet's payload is every quoted transport byte, not just 8 (RFC 1812 §4.3.2.3 quotes more)."""
        ours = our_tcp_datagram(b"x" * 600)
        stack, _, sink = ipv4_stack()
        feed(stack, [icmp_error_datagram(3, 3, ours[:548])], now=0.0)
        (pkt,) = sink.received
        assert pkt.payload == ours[20:548]

    def test_soft_error(self):
        """Host unreachable (3/1) is delivered as a soft error (RFC 9293 §3.9.2.2, MUST-56; IC6)."""
        stack, _, sink = ipv4_stack()
        feed(stack, [icmp_error_datagram(3, 1, our_tcp_datagram()[:28])], now=0.0)
        (pkt,) = sink.received
        assert (pkt.error.code, pkt.error.is_hard, pkt.error.name) == (1, False, "host_unreachable")

    def test_fragmentation_needed_carries_mtu(self):
        """3/4 carries the next-hop MTU for PMTUD (RFC 1191 §4; IC6/IC7)."""
        stack, _, sink = ipv4_stack()
        feed(stack, [icmp_error_datagram(3, 4, our_tcp_datagram()[:28], rest=b"\0\0\x04\xd8")], now=0.0)
        (pkt,) = sink.received
        assert (pkt.error.next_hop_mtu, pkt.error.is_hard) == (1240, True)

    @pytest.mark.parametrize(("type_", "code"), [(11, 0), (11, 1), (12, 0)])
    def test_time_exceeded_and_parameter_problem_soft(self, type_, code):
        """Time Exceeded and Parameter Problem reach the transport as soft errors (RFC 9293 MUST-56)."""
        stack, _, sink = ipv4_stack()
        feed(stack, [icmp_error_datagram(type_, code, our_tcp_datagram()[:28], rest=b"\x08\0\0\0")], now=0.0)
        (pkt,) = sink.received
        assert (pkt.error.type, pkt.error.code, pkt.error.is_hard) == (type_, code, False)
        assert pkt.error.pointer == (8 if type_ == 12 else 0)

    def test_scapy_built_error_with_tcp_quote(self):
        """A port unreachable built by scapy around its own TCP quote is delivered (RFC 792; oracle)."""
        quote = IPerror(src=OWN, dst=PEER, proto=6, id=3) / TCPerror(sport=40000, dport=80, seq=12345)
        err = IP(src="192.0.2.9", dst=OWN) / ICMP(type=3, code=3) / quote
        stack, _, sink = ipv4_stack()
        feed(stack, [bytes(err)], now=0.0)
        (pkt,) = sink.received
        assert (pkt.net.src, pkt.net.ident) == (OWN_B, 3)
        assert struct.unpack("!HHI", pkt.payload[:8]) == (40000, 80, 12345)

    def test_quote_from_another_source(self):
        """An error quoting a datagram we did not send is dropped (RFC 5927 §4.1; foreign_quote)."""
        other = datagram(tcp_segment(), src="10.0.0.5", dst=PEER)
        stack, _, sink = ipv4_stack()
        assert feed(stack, [icmp_error_datagram(3, 3, other[:28])], now=0.0) == []
        assert drops(stack) == {("icmp", "foreign_quote"): 1} and sink.received == []

    def test_quote_of_unclaimed_protocol(self):
        """An error about a protocol nobody above handles (UDP here) is dropped (RFC 9293 MUST-54)."""
        udp = datagram(b"\0" * 16, src=OWN, dst=PEER, proto=17)
        stack, _, sink = ipv4_stack()
        assert feed(stack, [icmp_error_datagram(3, 3, udp)], now=0.0) == []
        assert drops(stack) == {("icmp", "unhandled_error"): 1} and sink.received == []

    def test_quote_with_fewer_than_8_bytes(self):
        """A quote with fewer than 8 transport bytes cannot name a connection (RFC 1122 §3.2.2)."""
        stack, _, sink = ipv4_stack()
        feed(stack, [icmp_error_datagram(3, 3, our_tcp_datagram()[:27])], now=0.0)
        assert drops(stack) == {("icmp", "unhandled_error"): 1} and sink.received == []

    @pytest.mark.parametrize(
        ("quote", "reason"),
        [
            (b"", "quote_truncated"),
            (b"\x45" + b"\0" * 10, "quote_truncated"),
            (b"\x65" + b"\0" * 27, "quote_malformed"),
        ],
    )
    def test_malformed_quote(self, quote, reason):
        """A quote that is not an IPv4 header is dropped (RFC 792)."""
        stack, _, _ = ipv4_stack()
        assert feed(stack, [icmp_error_datagram(3, 3, quote)], now=0.0) == []
        assert drops(stack) == {("icmp", reason): 1}

    def test_source_quench_silently_discarded(self):
        """Source Quench is silently discarded (RFC 6633, RFC 9293 MUST-55; IC8)."""
        stack, _, sink = ipv4_stack()
        assert feed(stack, [icmp_error_datagram(4, 0, our_tcp_datagram()[:28])], now=0.0) == []
        assert drops(stack) == {("icmp", "source_quench"): 1} and sink.received == []

    def test_redirect_discarded(self):
        """Redirects are dropped on our single point-to-point route (RFC 1122 §3.2.2.2; IC10)."""
        stack, _, sink = ipv4_stack()
        err = icmp_error_datagram(5, 1, our_tcp_datagram()[:28], rest=bytes([10, 0, 0, 9]))
        assert feed(stack, [err], now=0.0) == []
        assert drops(stack) == {("icmp", "redirect"): 1} and sink.received == []

    def test_no_error_about_an_error(self):
        """A malformed ICMP error never provokes an ICMP error in return (RFC 1122 §3.2.2; IC3)."""
        stack, _, _ = ipv4_stack()
        bad = icmp_error_datagram(3, 3, b"junk")
        bad_csum = bad[:-1] + bytes([bad[-1] ^ 0xFF])
        assert feed(stack, [bad, bad_csum], now=0.0) == []


# ---------------------------------------------------------------------- errors we send (IP16, IC3, IC4)


class TestErrorsSent:
    def test_protocol_unreachable(self):
        """An unclaimed protocol gets one ICMP 3/2 quoting the datagram unchanged (RFC 1122 §3.2.2.1; IP16, IC4)."""
        offending = datagram(b"ABCDEFGHIJ", proto=PROTO_UNKNOWN, ident=0x3333, tos=4)
        stack, _, sink = ipv4_stack()
        out = feed(stack, [offending], now=0.0)
        assert len(out) == 1
        hdr, msg = parse_icmp_output(out[0])
        assert (hdr.src, hdr.dst) == (OWN_B, PEER_B)
        assert (msg.type, msg.code, msg.rest) == (3, 2, b"\0\0\0\0")
        assert bytes(msg.data) == offending
        assert drops(stack) == {("ipv4", "unknown_protocol"): 1} and sink.received == []
        assert stack.stats.events["icmp.errors_sent"] == 1

    def test_protocol_unreachable_decoded_by_scapy(self):
        """scapy decodes our 3/2 and finds its quoted header intact (RFC 792; oracle)."""
        offending = IP(src=PEER, dst=OWN, proto=253, id=77, ttl=3) / Raw(b"12345678abc")
        stack, _, _ = ipv4_stack()
        (out,) = feed(stack, [bytes(offending)], now=0.0)
        rep = IP(out)
        assert (rep[ICMP].type, rep[ICMP].code) == (3, 2)
        q = rep[IPerror]
        assert (q.src, q.dst, q.proto, q.id, q.ttl, q.chksum) == (PEER, OWN, 253, 77, 3, IP(bytes(offending)).chksum)

    def test_quote_keeps_options_and_is_cut_at_576(self):
        """The quote keeps the header options unchanged and is cut to fit 576 octets (RFC 1812 §4.3.2.3)."""
        offending = datagram(bytes(range(256)) * 4, proto=PROTO_UNKNOWN, options=b"\x94\x04\x00\x00")
        stack, _, _ = ipv4_stack()
        (out,) = feed(stack, [offending], now=0.0)
        _, msg = parse_icmp_output(out)
        assert len(out) == 576 and bytes(msg.data) == offending[:548]

    def test_reassembled_datagram_quoted_with_fragment0_header(self):
        """After reassembly the quote is fragment 0's header, MF/offset cleared, plus the data (RFC 1122 §3.2.2)."""
        opts = b"\x01\x01\x01\x00"
        data = bytes(range(256)) * 4
        first = datagram(data[:512], proto=PROTO_UNKNOWN, ident=7, flags=MF, options=opts)
        rest = [datagram(data[512:], proto=PROTO_UNKNOWN, ident=7, offset=512)]
        stack, _, _ = ipv4_stack()
        (out,) = feed(stack, [first, *rest], now=0.0)
        _, msg = parse_icmp_output(out)
        expected = datagram(data, proto=PROTO_UNKNOWN, ident=7, options=opts)
        assert bytes(msg.data) == expected[:548]
        q = IP(bytes(msg.data))
        assert (q.ihl, q.flags.MF, q.frag, q.len) == (6, False, 0, 24 + 1024)

    def test_reassembled_in_reverse_order_same_quote(self):
        """The quote does not depend on which fragment arrived last (RFC 1122 §3.2.2)."""
        data = b"0123456789abcdef" * 10
        frags = fragment_payload(data, 48, proto=PROTO_UNKNOWN, ident=8)
        stack, _, _ = ipv4_stack()
        (out,) = feed(stack, reversed(frags), now=0.0)
        _, msg = parse_icmp_output(out)
        assert bytes(msg.data) == datagram(data, proto=PROTO_UNKNOWN, ident=8)

    @pytest.mark.parametrize(
        ("dst", "reason"),
        [("10.0.0.255", "broadcast"), ("255.255.255.255", "broadcast"), ("224.0.0.1", "multicast")],
    )
    def test_no_error_for_broadcast_or_multicast(self, dst, reason):
        """No ICMP error about a datagram sent to a broadcast or multicast address (RFC 1122 §3.2.2; IC3)."""
        stack, _, _ = ipv4_stack()
        assert feed(stack, [datagram(b"x" * 8, proto=PROTO_UNKNOWN, dst=dst)], now=0.0) == []
        assert drops(stack) == {("ipv4", reason): 1}

    @pytest.mark.parametrize("src", ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255", "10.0.0.255"])
    def test_no_error_for_invalid_source(self, src):
        """No ICMP error towards a source that is not a single host (RFC 1122 §3.2.2; IC3)."""
        stack, _, _ = ipv4_stack()
        assert feed(stack, [datagram(b"x" * 8, proto=PROTO_UNKNOWN, src=src)], now=0.0) == []
        assert drops(stack) == {("ipv4", "bad_source"): 1}

    def test_rate_limit_burst_then_refill(self):
        """ICMP errors are rate limited: a burst of 50 at one instant, then 50 per second (RFC 1122 §3.2.2)."""
        stack, _, _ = ipv4_stack()
        offending = [datagram(b"x" * 8, proto=PROTO_UNKNOWN, ident=i) for i in range(200)]
        out = feed(stack, offending, now=10.0)
        assert len(out) == 50
        assert stack.stats.events["icmp.errors_rate_limited"] == 150
        assert drops(stack) == {("ipv4", "unknown_protocol"): 200}
        assert feed(stack, offending[:10], now=10.0) == []
        assert len(feed(stack, offending[:10], now=10.125)) == 6  # 0.125 s * 50/s = 6.25 tokens
        assert len(feed(stack, offending, now=100.0)) == 50

    def test_rate_limit_scales_with_setting(self):
        """icmp_errors_per_second sets both the burst and the refill rate (RFC 1122 §3.2.2)."""
        stack, _, _ = ipv4_stack(icmp_errors_per_second=2)
        offending = [datagram(b"x" * 8, proto=PROTO_UNKNOWN, ident=i) for i in range(10)]
        assert len(feed(stack, offending, now=0.0)) == 2
        assert len(feed(stack, offending, now=1.0)) == 2
        assert len(feed(stack, offending, now=1.25)) == 0
        assert len(feed(stack, offending, now=1.5)) == 1

    def test_rate_zero_sends_none(self):
        """icmp_errors_per_second=0 turns ICMP errors off (RFC 1122 §3.2.2 permits limiting)."""
        stack, _, _ = ipv4_stack(icmp_errors_per_second=0)
        for t in range(5):
            assert feed(stack, [datagram(b"x" * 8, proto=PROTO_UNKNOWN)], now=float(t)) == []
        assert drops(stack) == {("ipv4", "unknown_protocol"): 5}
        assert stack.stats.events["icmp.errors_rate_limited"] == 5


class TestSendErrorRules:
    """The guard in ``Ipv4Layer._send_error`` applied directly, for cases the receive path filters earlier."""

    def send_error(self, offending: bytes) -> list[bytes]:
        stack, ip, _ = ipv4_stack()
        hdr, _ = Ipv4Repr.parse_quoted(memoryview(offending))
        ctx = stack.context
        ctx.now = 0.0
        ip._send_error(3, 2, hdr, offending, ctx)
        return stack.frames_to_send(now=0.0)

    def test_sends_for_plain_datagram(self):
        """The baseline: a unicast datagram from a host gets its error (RFC 1122 §3.2.2.1)."""
        assert len(self.send_error(datagram(b"x" * 8, proto=PROTO_UNKNOWN))) == 1

    @pytest.mark.parametrize("type_", sorted(icmp.ERROR_TYPES))
    def test_never_about_an_icmp_error(self, type_):
        """No ICMP error about an ICMP error message (RFC 1122 §3.2.2; IC3)."""
        assert self.send_error(datagram(icmp_message(type_, 0, data=b"q" * 28), proto=PROTO_ICMP)) == []

    @pytest.mark.parametrize("type_", [0, 8, 13])
    def test_icmp_query_may_get_an_error(self, type_):
        """ICMP queries (echo, timestamp) are not errors and may be reported on (RFC 1122 §3.2.2)."""
        assert len(self.send_error(datagram(icmp_message(type_, 0), proto=PROTO_ICMP))) == 1

    def test_never_about_a_non_initial_fragment(self):
        """No ICMP error about a non-initial fragment (RFC 1122 §3.2.2; IC3)."""
        assert self.send_error(datagram(b"x" * 8, proto=PROTO_UNKNOWN, offset=8)) == []

    @pytest.mark.parametrize("dst", ["10.0.0.255", "255.255.255.255", "224.0.0.1", "10.0.0.3"])
    def test_never_about_a_datagram_not_for_us(self, dst):
        """No ICMP error about broadcast, multicast or other hosts' datagrams (RFC 1122 §3.2.2; IC3)."""
        assert self.send_error(datagram(b"x" * 8, proto=PROTO_UNKNOWN, dst=dst)) == []

    @pytest.mark.parametrize("src", ["0.0.0.0", "127.0.0.1", "224.0.0.1", "240.0.0.1"])
    def test_never_to_an_invalid_source(self, src):
        """No ICMP error to a source that is not a single host (RFC 1122 §3.2.2; IC3)."""
        assert self.send_error(datagram(b"x" * 8, proto=PROTO_UNKNOWN, src=src)) == []
