"""The IPv4 layer in a stack (layers/ipv4/handler.py): RFC 791, RFC 1122 §3.2-3.3, RFC 6864.

Checklist rows IP1-IP15 (IP16 and the ICMP rows are in test_icmp.py, IP10-IP12 also in
test_reassembly.py). Every test drives a sans-IO stack from :func:`tests.helpers.ipv4_stack`
(memory link, IPv4 at 10.0.0.2/24, a sink claiming protocol 6) with explicit times.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, defragment
from scapy.packet import Raw

from framework.errors import ConfigError
from framework.packet import Packet
from framework.pipeline import Pipeline
from framework.settings import validate_settings
from layers.ipv4.handler import Ipv4Layer, Ipv4Settings
from layers.ipv4.wire import Ipv4Repr
from tests.helpers import Sink, ipv4_stack
from tests.layers.ipv4.helpers import (
    DF,
    MF,
    OWN,
    OWN_B,
    PEER,
    PEER_B,
    PROTO_TCP,
    datagram,
    drops,
    echo_request,
    feed,
    fix_checksum,
    mtu_stack,
    parse_icmp_output,
    parse_output,
)

SEGMENT = b"\x9c\x40\x00\x50" + bytes(range(16))  # 20 bytes standing in for a TCP segment


def send(stack, sink, payload: bytes, *, dont_frag: bool = True, now: float = 0.0, **hdr: object) -> list[bytes]:
    """Send *payload* as the transport would (pkt.net names destination and protocol)."""
    fields: dict[str, object] = {"src": OWN_B, "dst": PEER_B, "protocol": PROTO_TCP, "dont_frag": dont_frag, **hdr}
    stack.send(sink, Packet(payload, Ipv4Repr(**fields)), now=now)  # type: ignore[arg-type]
    return stack.frames_to_send(now=now)


class TestDelivery:
    def test_delivers_claimed_protocol(self):
        """A valid datagram for us is passed up with its header in pkt.net and its data as payload (RFC 791 §3.1)."""
        stack, _, sink = ipv4_stack()
        assert feed(stack, [datagram(SEGMENT, ident=5, ttl=33, tos=0x20, flags=DF)], now=1.0) == []
        (pkt,) = sink.received
        assert pkt.payload == SEGMENT
        assert pkt.net == Ipv4Repr(PEER_B, OWN_B, PROTO_TCP, len(SEGMENT), 33, 0x20, 5, True, False, 0, 20)
        assert pkt.error is None and drops(stack) == {}

    def test_delivers_scapy_tcp(self):
        """A TCP datagram built by scapy is delivered with its TCP bytes untouched (RFC 791 §3.1; oracle)."""
        raw = bytes(IP(src=PEER, dst=OWN) / TCP(sport=1234, dport=80, flags="S", seq=1000))
        stack, _, sink = ipv4_stack()
        feed(stack, [raw], now=0.0)
        (pkt,) = sink.received
        assert pkt.payload == raw[20:]
        assert TCP(pkt.payload).seq == 1000

    def test_several_protocols_claimed(self):
        """Every protocol a layer above claims is delivered (RFC 1122 §3.2.1)."""
        stack, _, sink = ipv4_stack(sink=Sink(ip_protocols=(6, 17)))
        feed(stack, [datagram(b"udp!", proto=17), datagram(b"tcp!", proto=6)], now=0.0)
        assert [(p.net.protocol, p.payload) for p in sink.received] == [(17, b"udp!"), (6, b"tcp!")]

    def test_empty_frame(self):
        """An empty frame is dropped by the link before IPv4 sees it (RFC 791 §3.1)."""
        stack, _, _ = ipv4_stack()
        assert feed(stack, [b""], now=0.0) == []
        assert drops(stack) == {("link", "empty"): 1}


class TestVersion:
    """IP1: RFC 1122 §3.2.1.1."""

    @pytest.mark.parametrize("version", [0, 5, 6, 15])
    def test_version_not_4_dropped(self, version):
        """A datagram whose version is not 4 is silently discarded (RFC 1122 §3.2.1.1; IP1)."""
        stack, _, sink = ipv4_stack()
        assert feed(stack, [datagram(SEGMENT, version=version)], now=0.0) == []
        assert drops(stack) == {("ipv4", "bad_version"): 1} and sink.received == []

    def test_ipv6_router_solicitation_dropped(self):
        """An IPv6 router solicitation (what Linux sends at link-up) is silently dropped (RFC 1122 §3.2.1.1; IP1)."""
        rs = bytes.fromhex("6000000000103afffe800000000000000000000000000001ff020000000000000000000000000002")
        rs += bytes.fromhex("85000000000000000101020000000001")
        stack, _, sink = ipv4_stack()
        assert feed(stack, [rs], now=0.0) == []
        assert drops(stack) == {("ipv4", "bad_version"): 1} and sink.received == []
        feed(stack, [datagram(SEGMENT)], now=0.0)
        assert len(sink.received) == 1  # the stack keeps running


class TestChecksum:
    """IP2: RFC 1122 §3.2.1.2."""

    def test_bad_checksum_dropped_then_fixed_delivered(self):
        """A bad header checksum is silently discarded; fixed, it is delivered (RFC 1122 §3.2.1.2; IP2)."""
        good = datagram(SEGMENT, ident=1)
        bad = good[:10] + bytes([good[10] ^ 0x80]) + good[11:]
        stack, _, sink = ipv4_stack()
        assert feed(stack, [bad], now=0.0) == []
        assert drops(stack) == {("ipv4", "bad_checksum"): 1} and sink.received == []
        assert feed(stack, [good], now=0.0) == []
        assert len(sink.received) == 1 and drops(stack) == {("ipv4", "bad_checksum"): 1}

    def test_corrupted_header_field(self):
        """A flipped header bit (TTL) without a checksum update is caught (RFC 1122 §3.2.1.2)."""
        good = datagram(SEGMENT)
        stack, _, sink = ipv4_stack()
        feed(stack, [good[:8] + bytes([good[8] ^ 1]) + good[9:]], now=0.0)
        assert drops(stack) == {("ipv4", "bad_checksum"): 1} and sink.received == []

    def test_bad_checksum_echo_not_answered(self):
        """An echo request with a bad IP checksum gets no reply (RFC 1122 §3.2.1.2)."""
        good = echo_request()
        stack, _, _ = ipv4_stack()
        assert feed(stack, [good[:10] + b"\0\0" + good[12:]], now=0.0) == []
        assert drops(stack) == {("ipv4", "bad_checksum"): 1}

    def test_verification_can_be_disabled(self):
        """verify_checksum=False accepts a bad checksum (behind a link that guarantees it)."""
        good = datagram(SEGMENT)
        stack, _, sink = ipv4_stack(verify_checksum=False)
        feed(stack, [good[:10] + b"\0\0" + good[12:]], now=0.0)
        assert len(sink.received) == 1 and drops(stack) == {}


class TestLengthsAndOptions:
    """IP4, IP5: RFC 791 §3.1, RFC 1122 §3.2.1.8."""

    def test_options_skipped(self):
        """8 bytes of options are skipped and the data delivered intact (RFC 791 §3.1; IP4)."""
        opts = b"\x01\x01\x94\x04\x00\x00\x01\x00"  # NOP NOP RouterAlert NOP EOL
        stack, _, sink = ipv4_stack()
        feed(stack, [datagram(SEGMENT, options=opts)], now=0.0)
        (pkt,) = sink.received
        assert (pkt.payload, pkt.net.header_len, pkt.net.payload_len) == (SEGMENT, 28, len(SEGMENT))

    def test_truncated_dropped(self):
        """A datagram shorter than its Total Length is dropped (RFC 791 §3.1; IP4)."""
        stack, _, sink = ipv4_stack()
        assert feed(stack, [datagram(SEGMENT)[:-1]], now=0.0) == []
        assert drops(stack) == {("ipv4", "truncated"): 1} and sink.received == []

    @pytest.mark.parametrize("length", [1, 10, 19])
    def test_short_frame_dropped(self, length):
        """A frame shorter than an IPv4 header is dropped (RFC 791 §3.1)."""
        stack, _, _ = ipv4_stack()
        assert feed(stack, [datagram(SEGMENT)[:length]], now=0.0) == []
        assert drops(stack) == {("ipv4", "truncated"): 1}

    def test_trailing_bytes_ignored(self):
        """Bytes beyond Total Length are ignored (RFC 791 §3.1; IP4)."""
        stack, _, sink = ipv4_stack()
        feed(stack, [datagram(SEGMENT) + b"\0" * 26], now=0.0)
        (pkt,) = sink.received
        assert pkt.payload == SEGMENT and pkt.net.payload_len == len(SEGMENT)

    @pytest.mark.parametrize(
        ("first", "total", "reason"),
        [(0x44, None, "bad_header_length"), (0x45, 19, "bad_total_length"), (0x4F, None, "bad_total_length")],
    )
    def test_bad_lengths(self, first, total, reason):
        """IHL below 5 or a Total Length below the header is rejected (RFC 791 §3.1)."""
        buf = bytearray(datagram(SEGMENT))
        buf[0] = first
        if total is not None:
            buf[2:4] = total.to_bytes(2, "big")
        stack, _, _ = ipv4_stack()
        assert feed(stack, [fix_checksum(buf) if first >= 0x45 else bytes(buf)], now=0.0) == []
        assert drops(stack) == {("ipv4", reason): 1}

    @pytest.mark.parametrize(
        "opts",
        [b"\x07\x00\x00\x00", b"\x07\x01\x00\x00", b"\x07\x09\x00\x00", b"\x01\x01\x01\x44"],
        ids=["length-0", "length-1", "beyond-ihl", "no-length-byte"],
    )
    def test_bad_option_dropped_stack_keeps_running(self, opts):
        """A malformed option length is dropped without looping; the stack goes on (RFC 1122 §3.2.1.8; IP5)."""
        stack, _, sink = ipv4_stack()
        assert feed(stack, [datagram(SEGMENT, options=opts)], now=0.0) == []
        assert drops(stack) == {("ipv4", "bad_option"): 1} and sink.received == []
        feed(stack, [datagram(SEGMENT)], now=0.0)
        assert len(sink.received) == 1

    def test_reserved_flag_dropped(self):
        """The reserved flag bit must be zero (RFC 791 §3.1)."""
        stack, _, _ = ipv4_stack()
        assert feed(stack, [datagram(SEGMENT, flags=0x8000)], now=0.0) == []
        assert drops(stack) == {("ipv4", "reserved_flag"): 1}


class TestDestination:
    """IP6: RFC 1122 §3.2.1.3."""

    @pytest.mark.parametrize(
        ("dst", "reason"),
        [
            ("10.0.0.3", "not_for_us"),
            ("10.0.0.1", "not_for_us"),
            ("10.0.0.0", "not_for_us"),
            ("8.8.8.8", "not_for_us"),
            ("10.0.0.255", "broadcast"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("239.1.2.3", "multicast"),
        ],
    )
    def test_not_for_us_dropped(self, dst, reason):
        """Only datagrams for our own address are accepted; others are dropped by reason (RFC 1122 §3.2.1.3; IP6)."""
        stack, _, sink = ipv4_stack()
        assert feed(stack, [datagram(SEGMENT, dst=dst)], now=0.0) == []
        assert drops(stack) == {("ipv4", reason): 1} and sink.received == []

    @pytest.mark.parametrize("dst", ["10.0.0.3", "10.0.0.255", "255.255.255.255", "224.0.0.1"])
    def test_echo_to_other_address_unanswered(self, dst):
        """An echo request to another address gets no reply (RFC 1122 §3.2.1.3; IP6)."""
        stack, _, _ = ipv4_stack()
        assert feed(stack, [echo_request(dst=dst)], now=0.0) == []

    def test_point_to_point_prefix_has_no_broadcast(self):
        """On a /31 the other address is a host, not a broadcast (RFC 3021 §2.1)."""
        stack, _, _ = ipv4_stack(address="10.0.0.2/31")
        feed(stack, [datagram(SEGMENT, dst="10.0.0.3", src="10.0.0.3")], now=0.0)
        assert drops(stack) == {("ipv4", "not_for_us"): 1}


class TestSource:
    """IP7: RFC 1122 §3.2.1.3."""

    @pytest.mark.parametrize(
        "src",
        [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "224.0.0.1",
            "239.255.255.255",
            "255.255.255.255",
            "240.0.0.1",
            "10.0.0.255",
            OWN,
        ],
    )
    def test_invalid_source_dropped(self, src):
        """Sources 0/8, 127/8, multicast, broadcast, class E, our own (land) are discarded (RFC 1122 §3.2.1.3; IP7)."""
        stack, _, sink = ipv4_stack()
        assert feed(stack, [datagram(SEGMENT, src=src), echo_request(src=src)], now=0.0) == []
        assert drops(stack) == {("ipv4", "bad_source"): 2} and sink.received == []

    @pytest.mark.parametrize("src", ["10.0.0.1", "192.0.2.7", "223.255.255.254", "1.1.1.1"])
    def test_valid_sources_accepted(self, src):
        """Unicast sources on or off the subnet are accepted (RFC 1122 §3.2.1.3)."""
        stack, _, sink = ipv4_stack()
        feed(stack, [datagram(SEGMENT, src=src)], now=0.0)
        assert len(sink.received) == 1


class TestTtl:
    """IP9: RFC 1122 §3.2.1.7, RFC 9293 MUST-49."""

    @pytest.mark.parametrize("ttl", [0, 1])
    def test_low_inbound_ttl_delivered(self, ttl):
        """A host does not drop inbound datagrams for TTL < 2 (RFC 1122 §3.2.1.7; IP9)."""
        stack, _, sink = ipv4_stack()
        feed(stack, [datagram(SEGMENT, ttl=ttl)], now=0.0)
        assert len(sink.received) == 1 and drops(stack) == {}
        assert len(feed(stack, [echo_request(ttl=ttl)], now=0.0)) == 1

    def test_outbound_ttl_follows_setting(self):
        """The TTL we send is the configured one, for transport data and echo replies (RFC 1122 §3.2.1.7; IP9)."""
        stack, _, sink = ipv4_stack(ttl=5)
        (out,) = send(stack, sink, SEGMENT, ttl=200)
        assert parse_output(out)[0].ttl == 5
        (reply,) = feed(stack, [echo_request()], now=0.0)
        assert parse_output(reply)[0].ttl == 5

    def test_default_ttl(self):
        """The default TTL is 64, never 0 (RFC 1122 §3.2.1.7)."""
        stack, _, sink = ipv4_stack()
        (out,) = send(stack, sink, SEGMENT)
        assert out[8] == 64

    def test_ttl_zero_rejected_by_settings(self):
        """A TTL of 0 cannot be configured (RFC 9293 MUST-49)."""
        problems: list[str] = []
        assert validate_settings(Ipv4Settings, {"ttl": 0}, "ipv4", problems) is None
        assert len(problems) == 1 and problems[0].startswith("ipv4.ttl")


class TestSend:
    """IP3, IP8, IP13, IP14, IP15: RFC 791 §3.1-3.2, RFC 1122 §3.2.1.3, §3.3.3, RFC 6864."""

    def test_emits_valid_header(self):
        """Our datagram has IHL 5, the right Total Length and a valid checksum, seen by scapy (RFC 791 §3.1; IP3)."""
        stack, _, sink = ipv4_stack()
        (out,) = send(stack, sink, SEGMENT)
        pkt = IP(out)
        assert (pkt.version, pkt.ihl, pkt.len, pkt.src, pkt.dst, pkt.proto) == (4, 5, 40, OWN, PEER, 6)
        assert bool(pkt.flags.DF) and pkt.frag == 0
        stored = pkt.chksum
        del pkt.chksum
        assert IP(bytes(pkt)).chksum == stored
        assert out[20:] == SEGMENT

    def test_wrong_source_refused(self):
        """A datagram whose source is not our address is never sent (RFC 1122 §3.2.1.3; IP8)."""
        stack, _, sink = ipv4_stack()
        assert send(stack, sink, SEGMENT, src=bytes([10, 0, 0, 9])) == []
        assert drops(stack) == {("ipv4", "bad_source_out"): 1}

    def test_no_header_refused(self):
        """A packet without an IPv4 header from the transport is dropped (RFC 791 §3.1)."""
        stack, _, sink = ipv4_stack()
        stack.send(sink, Packet(SEGMENT), now=0.0)
        assert stack.frames_to_send(now=0.0) == [] and drops(stack) == {("ipv4", "no_header"): 1}

    def test_tos_passed_through(self):
        """The transport's TOS/DSCP is sent as set, default 0 (RFC 1122 §3.2.1.6, RFC 9293 MUST-48; IP15)."""
        stack, _, sink = ipv4_stack()
        (out,) = send(stack, sink, SEGMENT, tos=0xB8)
        assert out[1] == 0xB8
        (out,) = send(stack, sink, SEGMENT)
        assert out[1] == 0

    def test_distinct_ids_without_df(self):
        """Consecutive datagrams with DF=0 carry distinct identifications (RFC 6864 §4.1; IP13)."""
        stack, _, sink = ipv4_stack(ident_seed=None)
        ids = [parse_output(send(stack, sink, SEGMENT, dont_frag=False)[0])[0].ident for _ in range(1000)]
        assert len(set(ids)) == 1000

    def test_ids_distinct_across_wrap(self):
        """The 16-bit identification wraps without repeating within 65536 datagrams (RFC 6864 §4.1; IP13)."""
        stack, _, sink = ipv4_stack(ident_seed=0xFFFE)
        ids = [parse_output(send(stack, sink, SEGMENT, dont_frag=False)[0])[0].ident for _ in range(3)]
        assert ids == [0xFFFF, 0, 1]

    def test_ids_shared_with_replies(self):
        """Echo replies and errors draw from the same counter, so IDs stay distinct (RFC 6864 §4.1)."""
        stack, _, sink = ipv4_stack()
        a = parse_output(send(stack, sink, SEGMENT, dont_frag=False)[0])[0].ident
        (reply,) = feed(stack, [echo_request()], now=0.0)
        b = parse_output(send(stack, sink, SEGMENT, dont_frag=False)[0])[0].ident
        assert len({a, parse_output(reply)[0].ident, b}) == 3

    def test_exactly_mtu_not_fragmented(self):
        """A datagram of exactly the MTU is sent whole (RFC 1122 §3.3.3)."""
        stack, _, sink = ipv4_stack()
        (out,) = send(stack, sink, b"m" * 1480)
        assert len(out) == 1500

    def test_too_big_with_df_dropped(self):
        """Larger than the MTU with DF set: dropped, never sent oversize (RFC 1122 §3.3.3; IP14)."""
        stack, _, sink = ipv4_stack()
        assert send(stack, sink, b"m" * 1481, dont_frag=True) == []
        assert drops(stack) == {("ipv4", "too_big_df"): 1}

    @pytest.mark.parametrize(("mtu", "size"), [(1500, 1481), (1500, 4000), (576, 3000), (1280, 65515 - 8)])
    def test_too_big_without_df_fragmented(self, mtu, size):
        """Over the MTU without DF: fragments of at most the MTU that scapy reassembles (RFC 791 §3.2; IP14)."""
        payload = bytes((i * 13) & 0xFF for i in range(size))
        stack, _, sink = ipv4_stack(mtu=mtu)
        out = send(stack, sink, payload, dont_frag=False)
        assert len(out) > 1
        assert all(len(f) <= mtu for f in out)
        hdrs = [parse_output(f)[0] for f in out]
        assert len({h.ident for h in hdrs}) == 1
        assert [h.more_frags for h in hdrs] == [True] * (len(out) - 1) + [False]
        assert all(h.payload_len % 8 == 0 for h in hdrs[:-1])
        assert [h.frag_offset for h in hdrs] == [sum(h.payload_len for h in hdrs[:i]) for i in range(len(hdrs))]
        assert stack.stats.events["ipv4.fragments_sent"] == len(out)
        (whole,) = defragment([IP(f) for f in out])
        whole = IP(bytes(whole))
        assert (whole.src, whole.dst, whole.proto, whole.len, whole.flags.MF) == (OWN, PEER, 6, 20 + size, False)
        assert bytes(whole)[20:] == payload

    def test_ipv4_mtu_setting_below_link(self):
        """ipv4.mtu below the link MTU limits what we send (RFC 1122 §3.3.3; IP14)."""
        stack, _, sink = mtu_stack(link_mtu=1500, mtu=1280)
        out = send(stack, sink, b"x" * 2000, dont_frag=False)
        assert [len(f) for f in out] == [1276, 764]

    @given(
        st.integers(68, 1500).flatmap(
            # at most 128 fragments: the reassembler's per-datagram limit
            lambda m: st.tuples(st.integers(1, min(9000, 128 * ((m - 20) & ~7))), st.just(m))
        )
    )
    def test_our_fragments_reassemble_in_our_stack(self, size_mtu):
        """What one stack fragments, another reassembles to the original bytes (RFC 791 §3.2)."""
        size, mtu = size_mtu
        payload = bytes(i & 0xFF for i in range(size))
        a, _, a_sink = mtu_stack(link_mtu=1500, mtu=mtu)
        b, _, b_sink = ipv4_stack(address=f"{PEER}/24")
        frames = send(a, a_sink, payload, dont_frag=False)
        assert all(len(f) <= mtu for f in frames)
        feed(b, frames, now=0.0)
        (pkt,) = b_sink.received
        assert pkt.payload == payload and pkt.net.src == OWN_B
        assert drops(b) == {} and len(b.layer("ipv4").reassembler) == 0  # type: ignore[attr-defined]


class TestAssembly:
    def test_mtu_above_link_rejected(self):
        """ipv4.mtu may not exceed the link MTU (RFC 1122 §3.3.3)."""
        with pytest.raises(ConfigError, match="exceeds the link MTU"):
            mtu_stack(link_mtu=1500, mtu=9000)

    def test_no_link_mtu_needs_setting(self):
        """Without a link below, an MTU must be configured (RFC 1122 §3.3.3)."""
        ip = Ipv4Layer("ipv4", Ipv4Settings(ident_seed=0))
        with pytest.raises(ConfigError):
            Pipeline([ip, Sink().node()])
        ip = Ipv4Layer("ipv4", Ipv4Settings(ident_seed=0, mtu=576))
        Pipeline([ip, Sink().node()])
        assert ip.mtu == 576 and ip.protocols == frozenset({6})

    def test_no_timer_when_idle(self):
        """Nothing is scheduled while no fragment is held (RFC 1122 §3.3.2)."""
        stack, _, _ = ipv4_stack()
        feed(stack, [datagram(SEGMENT), echo_request()], now=0.0)
        assert stack.get_timer() is None


class TestScapyInputs:
    def test_scapy_echo_with_options_and_padding(self):
        """A scapy echo with options and trailing padding is answered with identical data (RFC 1122 §3.2.2.6)."""
        from scapy.layers.inet import ICMP

        req = IP(src=PEER, dst=OWN, options=b"\x01\x01\x01\x00") / ICMP(id=1, seq=1) / Raw(b"payload")
        stack, _, _ = ipv4_stack()
        (out,) = feed(stack, [bytes(req) + b"\0" * 5], now=0.0)
        _, msg = parse_icmp_output(out)
        assert bytes(msg.data) == b"payload"

    def test_scapy_fragment_flag_combinations(self):
        """A lone MF=0, offset 0 datagram is not a fragment and is delivered directly (RFC 791 §3.2)."""
        stack, _, sink = ipv4_stack()
        feed(stack, [datagram(SEGMENT, flags=DF), datagram(SEGMENT, flags=0)], now=0.0)
        assert len(sink.received) == 2 and stack.get_timer() is None
        feed(stack, [datagram(SEGMENT[:16], flags=MF)], now=0.0)
        assert sink.received[2:] == [] and stack.get_timer() == 60.0
