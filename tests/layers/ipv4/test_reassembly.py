"""Fragment reassembly (layers/ipv4/reassembly.py, and through the IPv4 layer): RFC 791 §3.2, RFC 1122 §3.3.2, RFC 1858.

Checklist rows IP10 (reassemble), IP11 (timeout, Time Exceeded) and IP12 (robustness).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framework.errors import WireError
from layers.ipv4.reassembly import Reassembler
from layers.ipv4.wire import Ipv4Repr
from tests.helpers import ipv4_stack
from tests.layers.ipv4.helpers import (
    DF,
    MF,
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
    run_timers,
)

DATA = bytes((i * 37 + 11) & 0xFF for i in range(100))  # 100 bytes: fragments of 32, 32, 32, 4


def frag(start: int, data: bytes, *, more: bool, ident: int = 1, **ip: object) -> bytes:
    """One fragment: *data* at byte offset *start* of datagram *ident* (peer -> us, TCP by default)."""
    return datagram(data, ident=ident, flags=MF if more else 0, offset=start, **ip)  # type: ignore[arg-type]


def add(r: Reassembler, raw: bytes, *, now: float = 0.0) -> tuple[Ipv4Repr, bytes] | None:
    """Parse *raw* as the IPv4 layer does and hand it to the reassembler."""
    hdr, payload = Ipv4Repr.parse(memoryview(raw))
    return r.add(hdr, payload, memoryview(raw)[: hdr.header_len + len(payload)], now=now)


def rejected(r: Reassembler, raw: bytes, *, now: float = 0.0) -> str:
    with pytest.raises(WireError) as exc:
        add(r, raw, now=now)
    assert exc.value.layer == "ipv4"
    return exc.value.reason


def held_bytes(r: Reassembler) -> int:
    """Recount the payload bytes held, independently of the reassembler's own counter."""
    return sum(len(d) for p in r._partial.values() for _, d in p.frags)


# ------------------------------------------------------------------------- the Reassembler alone


class TestReassemblerOrder:
    def test_in_order(self):
        """Fragments in order are held, then the whole datagram is returned once (RFC 791 §3.2; IP10)."""
        r = Reassembler()
        frags = fragment_payload(DATA, 32, ident=9)
        assert [add(r, f) for f in frags[:-1]] == [None, None, None]
        assert len(r) == 1 and r.bytes_held == 96
        hdr, dgram = add(r, frags[-1])
        assert dgram == datagram(DATA, ident=9)
        assert (hdr.src, hdr.dst, hdr.protocol, hdr.ident, hdr.payload_len) == (PEER_B, OWN_B, PROTO_TCP, 9, 100)
        assert (hdr.more_frags, hdr.frag_offset, hdr.header_len) == (False, 0, 20)
        assert (len(r), r.bytes_held, r.poll_at()) == (0, 0, None)

    def test_reverse_order(self):
        """Fragments in reverse order reassemble to the same datagram (RFC 791 §3.2; IP10)."""
        r = Reassembler()
        frags = fragment_payload(DATA, 32, ident=9)
        results = [add(r, f) for f in reversed(frags)]
        assert results[:-1] == [None] * 3
        assert results[-1][1] == datagram(DATA, ident=9)

    @given(
        data=st.binary(min_size=9, max_size=2000),
        unit=st.integers(1, 64),
        order=st.randoms(use_true_random=False),
    )
    def test_any_order_delivers_once(self, data, unit, order):
        """Any arrival order delivers the datagram exactly once, with the original bytes (RFC 791 §3.2; IP10)."""
        unit = min(unit, (len(data) - 1) // 8)  # at least two fragments
        frags = fragment_payload(data, unit * 8, ident=3)
        order.shuffle(frags)
        r = Reassembler()
        results = [add(r, f, now=float(i)) for i, f in enumerate(frags)]
        assert results[:-1] == [None] * (len(frags) - 1)
        hdr, dgram = results[-1]
        assert dgram == datagram(data, ident=3) and hdr.payload_len == len(data)
        assert (len(r), r.bytes_held) == (0, 0)

    def test_first_fragment_header_kept(self):
        """The reassembled header is fragment 0's: TTL, TOS, DF and options (RFC 791 §3.2)."""
        r = Reassembler()
        opts = b"\x94\x04\x00\x00"
        add(r, frag(32, DATA[32:], more=False, ttl=3, tos=1))
        hdr, dgram = add(r, datagram(DATA[:32], ident=1, flags=MF, ttl=7, tos=0x48, options=opts))
        assert (hdr.ttl, hdr.tos, hdr.header_len, hdr.payload_len) == (7, 0x48, 24, 100)
        assert dgram == datagram(DATA, ident=1, ttl=7, tos=0x48, options=opts)

    def test_keys_separate_datagrams(self):
        """Fragments are keyed by source, destination, protocol and identification (RFC 791 §3.2)."""
        r = Reassembler()
        variants = [{}, {"src": "10.0.0.7"}, {"proto": 17}, {"ident": 2}]
        for kw in variants:
            kw.setdefault("ident", 1)
            assert add(r, frag(0, DATA[:32], more=True, **kw)) is None
        assert len(r) == 4
        for kw in variants:
            _, dgram = add(r, frag(32, DATA[32:], more=False, **kw))
            assert dgram[20:] == DATA
        assert len(r) == 0


class TestReassemblerRobustness:
    def test_exact_duplicate_ignored(self):
        """An exact duplicate fragment is ignored and the datagram still completes (RFC 791 §3.2; IP12)."""
        r = Reassembler()
        frags = fragment_payload(DATA, 32)
        add(r, frags[0])
        add(r, frags[1])
        assert rejected(r, frags[1]) == "duplicate_fragment"
        assert rejected(r, frags[0]) == "duplicate_fragment"
        assert r.duplicates == 2 and r.bytes_held == 64
        add(r, frags[2])
        assert add(r, frags[3])[1][20:] == DATA

    def test_same_place_different_bytes_discards(self):
        """Same offset and length but different bytes is an overlap: the datagram is discarded (RFC 1858 §4)."""
        r = Reassembler()
        frags = fragment_payload(DATA, 32)
        add(r, frags[0])
        add(r, frags[1])
        assert rejected(r, frag(32, b"X" * 32, more=True)) == "overlap"
        assert (len(r), r.bytes_held) == (0, 0)
        assert add(r, frags[2]) is None and add(r, frags[3]) is None  # a fresh, incomplete datagram

    @pytest.mark.parametrize(
        ("first", "second"),
        [
            pytest.param((0, 48, True), (8, 16, True), id="contained-teardrop"),
            pytest.param((16, 32, True), (0, 24, True), id="overlaps-start"),
            pytest.param((0, 32, True), (24, 32, True), id="overlaps-end"),
            pytest.param((8, 8, True), (0, 32, True), id="spans"),
            pytest.param((0, 16, True), (0, 32, True), id="same-start-longer"),
            pytest.param((0, 32, True), (0, 16, True), id="same-start-shorter"),
        ],
    )
    def test_overlap_discards_datagram(self, first, second):
        """Any overlap other than an exact duplicate discards the datagram (teardrop; RFC 1858 §4; IP12)."""
        r = Reassembler()
        s1, n1, m1 = first
        s2, n2, m2 = second
        add(r, frag(s1, DATA[s1 : s1 + n1], more=m1))
        assert rejected(r, frag(s2, DATA[s2 : s2 + n2], more=m2)) == "overlap"
        assert (len(r), r.bytes_held) == (0, 0)

    def test_overlap_among_many(self):
        """An overlap with a neighbour in the middle of a held list is found (RFC 1858 §4)."""
        r = Reassembler()
        for start in (0, 32, 96):
            add(r, frag(start, bytes(32), more=True))
        assert rejected(r, frag(56, bytes(48), more=True)) == "overlap"
        assert len(r) == 0

    def test_ping_of_death(self):
        """A fragment ending past 65535 - 20 octets discards the datagram (RFC 791 §3.1; IP12)."""
        r = Reassembler()
        add(r, frag(0, bytes(64), more=True))
        assert rejected(r, frag(65528, bytes(16), more=False)) == "too_big"
        assert (len(r), r.bytes_held) == (0, 0)

    def test_largest_datagram_boundary(self):
        """Data ending exactly at 65515 is accepted; one octet more is too big (RFC 791 §3.1)."""
        r = Reassembler()
        assert add(r, frag(65512, b"abc", more=False)) is None
        assert rejected(Reassembler(), frag(65512, b"abcd", more=False)) == "too_big"

    def test_largest_datagram_reassembles(self):
        """A 65535-octet datagram (65515 data octets) reassembles (RFC 791 §3.1)."""
        r = Reassembler()
        data = bytes(i & 0xFF for i in range(65515))
        frags = fragment_payload(data, 8192)
        assert len(frags) == 8
        results = [add(r, f) for f in frags]
        hdr, dgram = results[-1]
        assert hdr.payload_len == 65515 and len(dgram) == 65535 and dgram[20:] == data

    def test_options_pushing_total_past_65535(self):
        """Fragment 0's 40 option octets plus 65515 data octets exceed Total Length: too big (RFC 791 §3.1)."""
        r = Reassembler()
        data = bytes(65515)
        first = datagram(data[:8192], flags=MF, ident=1, options=b"\x01" * 40)
        rest = fragment_payload(data, 8192, ident=1)[1:]
        for f in rest:
            assert add(r, f) is None
        assert rejected(r, first) == "too_big"
        assert (len(r), r.bytes_held) == (0, 0)

    def test_options_within_65535(self):
        """Fragment 0 with options still reassembles when header + data fit 65535 (RFC 791 §3.1)."""
        r = Reassembler()
        data = bytes(65535 - 24)
        add(r, datagram(data[:8192], flags=MF, ident=1, options=b"\x01\x01\x01\x00"))
        results = [add(r, f) for f in fragment_payload(data, 8192, ident=1)[1:]]
        hdr, dgram = results[-1]
        assert len(dgram) == 65535 and hdr.header_len == 24
        assert Ipv4Repr.parse(memoryview(dgram))[0].payload_len == 65511

    @pytest.mark.parametrize("size", [1, 7, 9, 31])
    def test_non_last_fragment_not_multiple_of_8(self, size):
        """Every fragment but the last carries a multiple of 8 octets (RFC 791 §3.2; IP12)."""
        r = Reassembler()
        assert rejected(r, frag(0, bytes(size), more=True)) == "bad_fragment"
        assert len(r) == 0

    @pytest.mark.parametrize("more", [True, False])
    def test_zero_length_fragment(self, more):
        """A fragment without data is dropped (RFC 791 §3.2)."""
        r = Reassembler()
        assert rejected(r, frag(8, b"", more=more)) == "bad_fragment"
        assert len(r) == 0

    def test_two_different_last_fragments(self):
        """A second last fragment with another end discards the datagram (RFC 791 §3.2)."""
        r = Reassembler()
        add(r, frag(32, bytes(8), more=False))
        assert rejected(r, frag(48, bytes(8), more=False)) == "inconsistent"
        assert len(r) == 0

    @pytest.mark.parametrize(
        ("held", "last"),
        [
            pytest.param((64, 32), (16, 8), id="before-held"),
            pytest.param((0, 48), (24, 4), id="teardrop-contained-last"),
        ],
    )
    def test_last_fragment_before_held_data(self, held, last):
        """A last fragment ending before held data is inconsistent; the datagram goes (RFC 1858 §3)."""
        r = Reassembler()
        add(r, frag(held[0], bytes(held[1]), more=True))
        assert rejected(r, frag(last[0], bytes(last[1]), more=False)) == "inconsistent"
        assert (len(r), r.bytes_held) == (0, 0)

    def test_fragment_past_known_end(self):
        """A fragment past the end set by the last fragment is inconsistent (RFC 791 §3.2)."""
        r = Reassembler()
        add(r, frag(32, bytes(8), more=False))
        assert rejected(r, frag(40, bytes(8), more=True)) == "inconsistent"
        assert len(r) == 0

    def test_too_many_fragments(self):
        """More than max_fragments pieces discards the datagram (bounded work per datagram; IP12)."""
        r = Reassembler(max_fragments=4)
        for i in range(4):
            add(r, frag(16 * i, bytes(8), more=True))
        assert rejected(r, frag(104, bytes(8), more=True)) == "too_many_fragments"
        assert (len(r), r.bytes_held) == (0, 0)


class TestReassemblerTimeout:
    def test_deadline_is_first_arrival_plus_timeout(self):
        """The timer starts at the first fragment and is not restarted by later ones (RFC 1122 §3.3.2; IP11)."""
        r = Reassembler(timeout=30.0)
        add(r, frag(0, DATA[:32], more=True), now=100.0)
        add(r, frag(64, DATA[64:96], more=True), now=125.0)
        assert r.poll_at() == 130.0
        assert r.expire(129.999) == []
        (gone,) = r.expire(130.0)
        assert gone.key == (PEER_B, OWN_B, PROTO_TCP, 1)
        assert gone.first == frag(0, DATA[:32], more=True) and gone.first_header_len == 20
        assert (len(r), r.bytes_held, r.poll_at()) == (0, 0, None)

    def test_expired_without_fragment_0(self):
        """A datagram whose fragment 0 never arrived expires with nothing to quote (RFC 1122 §3.3.2)."""
        r = Reassembler(timeout=10.0)
        add(r, frag(32, DATA[32:], more=False), now=0.0)
        (gone,) = r.expire(10.0)
        assert gone.first is None

    def test_expires_oldest_only(self):
        """Only datagrams whose own deadline passed are discarded (RFC 1122 §3.3.2)."""
        r = Reassembler(timeout=10.0)
        add(r, frag(0, bytes(8), more=True, ident=1), now=0.0)
        add(r, frag(0, bytes(8), more=True, ident=2), now=5.0)
        assert [g.key[3] for g in r.expire(10.0)] == [1]
        assert r.poll_at() == 15.0 and len(r) == 1


class TestReassemblerLimits:
    def test_oldest_evicted_beyond_max_datagrams(self):
        """Past max_datagrams partial datagrams the oldest is evicted (bounded memory; IP12)."""
        r = Reassembler(max_datagrams=3)
        for ident in range(4):
            add(r, frag(0, bytes(8), more=True, ident=ident), now=float(ident))
        assert (len(r), r.evicted) == (3, 1)
        assert r.poll_at() == 61.0  # datagram 0 is gone
        assert add(r, frag(8, bytes(8), more=False, ident=0)) is None  # cannot complete any more

    def test_bytes_limit(self):
        """Past max_bytes held the oldest partial datagrams are evicted (bounded memory; IP12)."""
        r = Reassembler(max_bytes=100)
        for ident in range(3):
            add(r, frag(0, bytes(48), more=True, ident=ident))
        assert (len(r), r.evicted, r.bytes_held) == (2, 1, 96)
        assert r.bytes_held == held_bytes(r)

    def test_datagram_larger_than_budget(self):
        """A single datagram larger than the whole budget is dropped, not held (bounded memory)."""
        r = Reassembler(max_bytes=64)
        add(r, frag(0, bytes(32), more=True))
        assert rejected(r, frag(32, bytes(40), more=True)) == "reassembly_full"
        assert (len(r), r.bytes_held, r.evicted) == (0, 0, 1)

    def test_growing_datagram_keeps_itself(self):
        """The datagram being added to is not the one evicted while older ones exist (bounded memory)."""
        r = Reassembler(max_bytes=100)
        add(r, frag(0, bytes(48), more=True, ident=1))
        add(r, frag(0, bytes(48), more=True, ident=2))
        add(r, frag(48, bytes(48), more=True, ident=1))  # ident 1 is oldest; ident 2 goes
        assert list(r._partial) == [(PEER_B, OWN_B, PROTO_TCP, 1)] and r.bytes_held == 96

    def test_ten_thousand_partial_datagrams(self):
        """10,000 partial datagrams keep memory bounded (RFC 1858; IP12)."""
        r = Reassembler()
        for ident in range(10_000):
            add(r, frag(0, bytes(64), more=True, ident=ident & 0xFFFF, src=f"10.1.{ident >> 8}.{ident & 0xFF}"))
            assert len(r) <= r.max_datagrams and r.bytes_held <= r.max_bytes
        assert (len(r), r.evicted) == (64, 10_000 - 64)
        assert r.bytes_held == held_bytes(r) == 64 * 64


# ------------------------------------------------------------------------ through the IPv4 layer


class TestThroughStack:
    def test_three_fragments_out_of_order_delivered_once(self):
        """A segment split into 3 out-of-order fragments is delivered once (RFC 1122 §3.3.2; IP10)."""
        seg = bytes(range(60))
        frags = fragment_payload(seg, 24, ident=0x77)
        stack, _, sink = ipv4_stack()
        assert feed(stack, [frags[2], frags[0], frags[1]], now=1.0) == []
        (pkt,) = sink.received
        assert pkt.payload == seg
        assert (pkt.net.ident, pkt.net.payload_len, pkt.net.more_frags, pkt.net.frag_offset) == (0x77, 60, False, 0)
        assert stack.stats.events["ipv4.fragments_held"] == 2 and stack.stats.events["ipv4.reassembled"] == 1
        assert drops(stack) == {} and stack.get_timer() is None

    def test_duplicate_counted(self):
        """A duplicate fragment is counted and ignored; the datagram is delivered once (RFC 791 §3.2; IP12)."""
        frags = fragment_payload(DATA, 32)
        stack, _, sink = ipv4_stack()
        feed(stack, [frags[0], frags[1], frags[1], frags[2], frags[3], frags[3]], now=0.0)
        assert [p.payload for p in sink.received] == [DATA]
        assert drops(stack) == {("ipv4", "duplicate_fragment"): 1}
        assert len(stack.layer("ipv4").reassembler) == 1  # the late duplicate of the last starts a new one

    def test_overlap_drops_datagram(self):
        """An overlapping fragment discards the datagram; later fragments do not complete it (RFC 1858 §4; IP12)."""
        frags = fragment_payload(DATA, 32)
        stack, _, sink = ipv4_stack()
        feed(stack, [frags[0], frag(16, bytes(32), more=True), frags[1], frags[2], frags[3]], now=0.0)
        assert sink.received == []
        assert drops(stack) == {("ipv4", "overlap"): 1}
        assert stack.frames_to_send(now=0.0) == []

    def test_teardrop(self):
        """The teardrop pair and an inner overlap are dropped and the stack lives on (RFC 1858 §3; IP12)."""
        stack, _, sink = ipv4_stack()
        feed(stack, [frag(0, bytes(48), more=True, ident=5), frag(24, bytes(4), more=False, ident=5)], now=0.0)
        feed(stack, [frag(0, bytes(48), more=True, ident=6), frag(24, bytes(8), more=True, ident=6)], now=0.0)
        assert drops(stack) == {("ipv4", "inconsistent"): 1, ("ipv4", "overlap"): 1} and sink.received == []
        assert stack.stats.drops[("stack", "internal_error")] == 0
        assert len(stack.layer("ipv4").reassembler) == 0

    def test_ping_of_death(self):
        """An echo whose last fragment ends past 65535 is dropped, not answered (RFC 791 §3.1; IP12)."""
        echo = icmp_message(8, 0, b"\0\1\0\1", bytes(1472))
        stack, _, _ = ipv4_stack()
        out = feed(
            stack,
            [
                datagram(echo[:1480], proto=PROTO_ICMP, ident=3, flags=MF),
                datagram(bytes(400), proto=PROTO_ICMP, ident=3, offset=65528 - 392),
            ],
            now=0.0,
        )
        assert out == [] and drops(stack) == {("ipv4", "too_big"): 1}
        assert len(stack.layer("ipv4").reassembler) == 0

    def test_bad_fragment_size(self):
        """A non-last fragment of 13 octets is dropped (RFC 791 §3.2)."""
        stack, _, _ = ipv4_stack()
        assert feed(stack, [frag(0, bytes(13), more=True)], now=0.0) == []
        assert drops(stack) == {("ipv4", "bad_fragment"): 1}

    def test_fragment_for_another_host_not_held(self):
        """Fragments not for us are dropped before reassembly (RFC 1122 §3.2.1.3)."""
        stack, _, _ = ipv4_stack()
        feed(stack, [frag(0, bytes(8), more=True, dst="10.0.0.3")], now=0.0)
        assert drops(stack) == {("ipv4", "not_for_us"): 1} and stack.get_timer() is None

    def test_df_on_fragment_0_kept(self):
        """The reassembled header carries fragment 0's flags except MF (RFC 791 §3.2)."""
        stack, _, sink = ipv4_stack()
        feed(stack, [datagram(DATA[:32], flags=MF | DF, ident=1), frag(32, DATA[32:], more=False)], now=0.0)
        (pkt,) = sink.received
        assert (pkt.net.dont_frag, pkt.net.more_frags) == (True, False)


class TestTimeoutThroughStack:
    def test_only_first_fragment_time_exceeded(self):
        """Fragment 0 alone: discarded at first arrival + timeout, one ICMP 11/1 quotes it (RFC 1122 §3.3.2; IP11)."""
        first = frag(0, DATA[:32], more=True, ident=0x55)
        stack, ip, sink = ipv4_stack(reassembly_timeout=30.0)
        assert feed(stack, [first], now=10.0) == []
        assert feed(stack, [frag(64, DATA[64:96], more=True, ident=0x55)], now=25.0) == []
        assert stack.get_timer() == 40.0  # not restarted by the later fragment
        stack.handle_timer(now=39.5)
        assert stack.frames_to_send(now=39.5) == []
        stack.handle_timer(now=40.0)
        (out,) = stack.frames_to_send(now=40.0)
        hdr, msg = parse_icmp_output(out)
        assert (hdr.dst, msg.type, msg.code, msg.rest) == (PEER_B, 11, 1, b"\0\0\0\0")
        assert bytes(msg.data) == first
        assert drops(stack) == {("ipv4", "reassembly_timeout"): 1}
        assert (len(ip.reassembler), ip.reassembler.bytes_held, stack.get_timer()) == (0, 0, None)
        assert sink.received == []
        stack.handle_timer(now=1000.0)
        assert stack.frames_to_send(now=1000.0) == []

    def test_default_timeout_60s(self):
        """The default reassembly timeout is a fixed 60 s (RFC 1122 §3.3.2)."""
        stack, _, _ = ipv4_stack()
        feed(stack, [frag(0, bytes(8), more=True)], now=7.0)
        assert stack.get_timer() == 67.0
        assert len(run_timers(stack, until=67.0)) == 1

    def test_long_fragment_0_quote_cut(self):
        """A 1500-byte fragment 0 is quoted up to 576 octets of error datagram (RFC 1812 §4.3.2.3)."""
        first = frag(0, bytes(range(256)) * 5 + bytes(200), more=True)
        stack, _, _ = ipv4_stack()
        feed(stack, [first], now=0.0)
        (out,) = run_timers(stack, until=60.0)
        assert len(out) == 576 and bytes(parse_icmp_output(out)[1].data) == first[:548]

    def test_no_time_exceeded_without_fragment_0(self):
        """No Time Exceeded when fragment 0 never arrived (RFC 1122 §3.3.2; IP11)."""
        stack, _, _ = ipv4_stack()
        feed(stack, [frag(32, DATA[32:64], more=True), frag(96, DATA[96:], more=False)], now=0.0)
        assert run_timers(stack, until=120.0) == []
        assert drops(stack) == {("ipv4", "reassembly_timeout"): 1}

    def test_no_time_exceeded_about_icmp_error(self):
        """Fragment 0 of an ICMP error timing out provokes no ICMP error (RFC 1122 §3.2.2; IC3)."""
        quote = datagram(bytes(100), src="10.0.0.2", dst=PEER)
        err = icmp_message(3, 3, data=quote)
        stack, _, _ = ipv4_stack()
        feed(stack, [datagram(err[:64], proto=PROTO_ICMP, flags=MF, ident=4)], now=0.0)
        assert run_timers(stack, until=60.0) == []
        assert drops(stack) == {("ipv4", "reassembly_timeout"): 1}

    def test_time_exceeded_about_echo_fragment(self):
        """Fragment 0 of an echo request (a query, not an error) does get Time Exceeded (RFC 1122 §3.3.2)."""
        req = echo_request(data=bytes(100))
        first = datagram(req[20:84], proto=PROTO_ICMP, flags=MF)
        stack, _, _ = ipv4_stack()
        feed(stack, [first], now=0.0)
        (out,) = run_timers(stack, until=60.0)
        assert bytes(parse_icmp_output(out)[1].data) == first

    def test_time_exceeded_rate_limited(self):
        """Time Exceeded messages share the ICMP error rate limit (RFC 1122 §3.2.2)."""
        stack, _, _ = ipv4_stack(icmp_errors_per_second=0)
        feed(stack, [frag(0, bytes(8), more=True)], now=0.0)
        assert run_timers(stack, until=60.0) == []
        assert drops(stack) == {("ipv4", "reassembly_timeout"): 1}

    def test_one_time_exceeded_per_datagram(self):
        """Each expired datagram with fragment 0 gets its own Time Exceeded quoting it (RFC 1122 §3.3.2)."""
        firsts = [frag(0, bytes([i]) * 8, more=True, ident=i) for i in range(3)]
        stack, _, _ = ipv4_stack()
        for i, f in enumerate(firsts):
            feed(stack, [f], now=float(i))
        out = run_timers(stack, until=100.0)
        assert [bytes(parse_icmp_output(o)[1].data) for o in out] == firsts
        assert drops(stack) == {("ipv4", "reassembly_timeout"): 3}

    def test_completes_just_before_deadline(self):
        """A datagram completed before its deadline is delivered and no timer remains (RFC 1122 §3.3.2)."""
        frags = fragment_payload(DATA, 32)
        stack, _, sink = ipv4_stack()
        feed(stack, frags[:3], now=0.0)
        feed(stack, frags[3:], now=59.999)
        assert [p.payload for p in sink.received] == [DATA] and stack.get_timer() is None


class TestLimitsThroughStack:
    def test_max_datagrams_evicts_oldest(self):
        """More partial datagrams than reassembly_max_datagrams evicts the oldest (IP12)."""
        stack, ip, sink = ipv4_stack(reassembly_max_datagrams=4)
        for ident in range(5):
            feed(stack, [frag(0, DATA[:32], more=True, ident=ident)], now=float(ident))
        assert drops(stack) == {("ipv4", "reassembly_evicted"): 1}
        assert len(ip.reassembler) == 4 and stack.get_timer() == 61.0
        feed(stack, [frag(32, DATA[32:], more=False, ident=0)], now=5.0)
        feed(stack, [frag(32, DATA[32:], more=False, ident=4)], now=5.0)
        assert [p.net.ident for p in sink.received] == [4]

    def test_bytes_limit(self):
        """Past reassembly_max_bytes the oldest partial datagrams are evicted (IP12)."""
        stack, ip, _ = ipv4_stack(reassembly_max_bytes=65535)
        for ident in range(50):
            feed(stack, [frag(0, bytes(1480), more=True, ident=ident)], now=0.0)
            assert ip.reassembler.bytes_held <= 65535
        assert drops(stack) == {("ipv4", "reassembly_evicted"): 50 - 65535 // 1480}
        assert len(ip.reassembler) == 65535 // 1480

    def test_ten_thousand_partial_datagrams(self):
        """10,000 partial datagrams through the stack: no crash, memory bounded, no output (RFC 1858; IP12)."""
        stack, ip, sink = ipv4_stack()
        r = ip.reassembler
        for n in range(10_000):
            stack.receive_frame(
                frag(0, bytes(64), more=True, ident=n & 0xFFFF, src=f"10.9.{n >> 8}.{n & 0xFF}"), now=n / 1000
            )
            assert len(r) <= r.max_datagrams and r.bytes_held <= r.max_bytes
        assert stack.frames_to_send(now=10.0) == [] and sink.received == []
        assert drops(stack) == {("ipv4", "reassembly_evicted"): 10_000 - 64}
        assert stack.stats.drops[("stack", "internal_error")] == 0
        stack.handle_timer(now=200.0)  # all 64 expire at once: Time Exceeded up to the rate limit burst
        assert len(stack.frames_to_send(now=200.0)) == 50
        assert (len(r), r.bytes_held) == (0, 0)

    def test_proto_253_reassembled_gets_unreachable(self):
        """A fragmented datagram of an unknown protocol is reassembled, then answered with 3/2 (RFC 1122 §3.2.2.1)."""
        frags = fragment_payload(DATA, 32, proto=PROTO_UNKNOWN)
        stack, _, _ = ipv4_stack()
        (out,) = feed(stack, frags, now=0.0)
        _, msg = parse_icmp_output(out)
        assert (msg.type, msg.code, bytes(msg.data)) == (3, 2, datagram(DATA, proto=PROTO_UNKNOWN, ident=1))
        assert drops(stack) == {("ipv4", "unknown_protocol"): 1}

    def test_sources_do_not_mix(self):
        """Same identification from two sources: two datagrams, each delivered intact (RFC 791 §3.2)."""
        a = fragment_payload(DATA, 32, ident=7)
        b = fragment_payload(DATA[::-1], 32, ident=7, src="10.0.0.9")
        stack, _, sink = ipv4_stack()
        feed(stack, [x for pair in zip(a, b, strict=True) for x in pair], now=0.0)
        assert sorted(p.payload for p in sink.received) == sorted([DATA, DATA[::-1]])
        assert {p.net.src for p in sink.received} == {PEER_B, bytes([10, 0, 0, 9])}
        assert PEER == "10.0.0.1"
