"""Property-based fuzzing of the IPv4 layer through the whole stack: RFC 1122 §1.2.2 (robustness), RFC 1858.

Random bytes and mutated valid frames (echo, TCP, fragments, ICMP errors, options) are fed to a
sans-IO stack. Properties, for every frame:

- ``receive_frame`` never raises and ``("stack", "internal_error")`` stays 0;
- the frame is accounted for: counted as a drop, delivered to the sink, answered, or held as a
  fragment;
- every frame sent is a valid IPv4 datagram (our parser, checksums verified) from 10.0.0.2 to a
  unicast host, of at most the MTU;
- the reassembler stays within its limits.

``CI=1`` runs at least 10,000 examples of the main fuzz tests.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from scapy.layers.inet import ICMP, IP, TCP, fragment
from scapy.packet import Raw

from framework.errors import WireError
from framework.stack import Stack
from layers.ipv4.icmp import IcmpRepr
from layers.ipv4.reassembly import Reassembler
from layers.ipv4.wire import Ipv4Repr, is_invalid_source, is_multicast
from tests.helpers import Sink, ipv4_stack
from tests.layers.ipv4.helpers import (
    DF,
    MF,
    OWN,
    PEER,
    PROTO_ICMP,
    PROTO_UNKNOWN,
    datagram,
    echo_request,
    fix_checksum,
    fragment_payload,
    icmp_message,
    parse_output,
    rfc1071,
)

FUZZ_EXAMPLES = 10_000 if os.environ.get("CI") else 500
SEQUENCE_EXAMPLES = 1_000 if os.environ.get("CI") else 100  # each example is a whole sequence


@pytest.fixture(autouse=True, scope="module")
def quiet_drop_logs() -> Iterator[None]:
    """Drops log at debug level; rendering millions of them would dominate the fuzz time."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        yield
    finally:
        structlog.reset_defaults()


def _our_tcp(payload: bytes) -> bytes:
    return datagram(struct.pack("!HHI", 40000, 80, 1) + payload, src=OWN, dst=PEER, ident=9, flags=DF)


_BIG_ECHO = IP(src=PEER, dst=OWN, id=0x99) / ICMP(type="echo-request", id=1, seq=1) / Raw(bytes(range(256)) * 12)

FRAGMENT_GROUPS: list[list[bytes]] = [
    fragment_payload(bytes(range(100)), 32, ident=5),
    fragment_payload(icmp_message(8, 0, b"\0\1\0\1", bytes(200)), 64, proto=PROTO_ICMP, ident=6),
    fragment_payload(b"?" * 60, 24, proto=PROTO_UNKNOWN, ident=7),
    [bytes(f) for f in fragment(_BIG_ECHO, fragsize=1480)],
]
#: Every fragment but the first of each group: fed first, a mutated fragment 0 completes them.
PREFILL = [f for group in FRAGMENT_GROUPS for f in group[1:]]

SEEDS: list[bytes] = [
    echo_request(0x1234, 1, b"hello, world"),
    echo_request(0x1, 2, b"", options=b"\x01\x01\x01\x00"),
    datagram(b"\x9c\x40\x00\x50" + bytes(16)),
    datagram(b"opts" * 5, options=b"\x94\x04\x00\x00\x07\x07\x04\x00\x00\x00\x00\x00"),
    datagram(b"unknown protocol", proto=PROTO_UNKNOWN),
    datagram(icmp_message(3, 3, data=_our_tcp(b"")[:28]), proto=PROTO_ICMP),
    datagram(icmp_message(3, 4, b"\0\0\x05\x00", _our_tcp(b"x" * 40)), proto=PROTO_ICMP),
    datagram(icmp_message(11, 1, data=_our_tcp(b"")), proto=PROTO_ICMP),
    datagram(icmp_message(4, 0, data=_our_tcp(b"")), proto=PROTO_ICMP),
    datagram(icmp_message(42, 0, data=b"?"), proto=PROTO_ICMP),
    *(f for group in FRAGMENT_GROUPS for f in group),
    bytes(IP(src=PEER, dst=OWN) / TCP(sport=1, dport=2, flags="S")),
    bytes(IP(src=PEER, dst=OWN, flags="MF", frag=8190, id=3) / Raw(bytes(16))),
]

INTERESTING_ADDRESSES = [OWN, PEER, "10.0.0.255", "255.255.255.255", "224.0.0.1", "127.0.0.1", "0.0.0.0", "240.0.0.1"]


def _set(buf: bytearray, offset: int, value: bytes) -> None:
    if len(buf) >= offset + len(value):
        buf[offset : offset + len(value)] = value


_OPS = 13  # number of mutation kinds below


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """A valid seed frame with a few random mutations, its checksums often made valid again.

    Each mutation is drawn as plain integers (kind, 16-bit argument, byte), which keeps
    generation cheap enough for 10,000 examples.
    """
    buf = bytearray(draw(st.sampled_from(SEEDS)))
    ops = draw(st.lists(st.tuples(st.integers(0, _OPS - 1), st.integers(0, 0xFFFF), st.integers(0, 255)), max_size=4))
    for kind, arg, byte in ops:
        if kind == 0 and buf:  # flip bits of one byte
            buf[arg % len(buf)] ^= byte or 0x80
        elif kind == 1:  # truncate
            del buf[arg % (len(buf) + 1) :]
        elif kind == 2:  # extend with up to 64 bytes
            buf += arg.to_bytes(2, "big") * (byte % 32 + 1)
        elif kind == 3 and buf:  # IHL
            buf[0] = (buf[0] & 0xF0) | (byte & 0x0F)
        elif kind == 4 and buf:  # version
            buf[0] = (buf[0] & 0x0F) | (byte & 0xF0)
        elif kind == 5:  # Total Length
            _set(buf, 2, arg.to_bytes(2, "big"))
        elif kind == 6:  # flags and fragment offset
            _set(buf, 6, arg.to_bytes(2, "big"))
        elif kind == 7 and len(buf) >= 8:  # toggle MF
            buf[6] ^= 0x20
        elif kind == 8 and len(buf) >= 8:  # fragment offset, flags kept
            _set(buf, 6, ((buf[6] & 0xE0) << 8 | (arg & 0x1FFF)).to_bytes(2, "big"))
        elif kind == 9:  # identification: a few values, so fragments of different seeds meet
            _set(buf, 4, (arg % 4).to_bytes(2, "big"))
        elif kind == 10:  # protocol
            _set(buf, 9, bytes([(0, 1, 6, 17, 253, 255)[byte % 6]]))
        elif kind == 11:  # TTL
            _set(buf, 8, bytes([byte]))
        elif kind == 12:  # source or destination: an interesting address
            addr = INTERESTING_ADDRESSES[byte % len(INTERESTING_ADDRESSES)]
            _set(buf, 12 if arg & 1 else 16, bytes(map(int, addr.split("."))))
    if draw(st.booleans()):
        buf = bytearray(_fix_checksums(bytes(buf)))
    return bytes(buf)


def _fix_checksums(frame: bytes) -> bytes:
    """Make the header checksum (and an unfragmented ICMP checksum) valid where the lengths allow."""
    if len(frame) < 20:
        return frame
    ihl = (frame[0] & 0x0F) * 4
    if not 20 <= ihl <= len(frame):
        return frame
    frame = fix_checksum(frame)
    total = int.from_bytes(frame[2:4], "big")
    flags = int.from_bytes(frame[6:8], "big")
    if frame[9] == PROTO_ICMP and ihl + 8 <= total <= len(frame) and not flags & 0x3FFF:
        msg = bytearray(frame[ihl:total])
        msg[2:4] = b"\0\0"
        msg[2:4] = rfc1071(bytes(msg)).to_bytes(2, "big")
        frame = frame[:ihl] + bytes(msg) + frame[total:]
    return frame


def check_output(frame: bytes, mtu: int) -> None:
    """An output frame is a valid datagram of ours, within the MTU, to a unicast host."""
    assert len(frame) <= mtu
    hdr, payload = parse_output(frame)  # checksum verified, src == 10.0.0.2
    assert hdr.header_len == 20 and hdr.ttl == 64
    assert not is_invalid_source(hdr.dst) and not is_multicast(hdr.dst) and hdr.dst != bytes([10, 0, 0, 255])
    assert hdr.protocol == PROTO_ICMP  # the only protocol the IPv4 layer originates here
    if not hdr.is_fragment:
        msg = IcmpRepr.parse(memoryview(payload))  # ICMP checksum verified
        assert msg.type in (0, 3, 11)
        if msg.type != 0:
            # An error: it quotes a datagram that was for us, and is never about an ICMP error.
            quoted, _ = Ipv4Repr.parse_quoted(memoryview(bytes(msg.data)))
            assert quoted.dst == bytes([10, 0, 0, 2]) and quoted.frag_offset == 0
            assert len(frame) <= 576


class Harness:
    """A stack plus the bookkeeping to check that each frame is accounted for."""

    def __init__(self, stack: Stack, sink: Sink, mtu: int) -> None:
        self.stack, self.sink, self.mtu = stack, sink, mtu
        self.ip = stack.layer("ipv4")

    def feed(self, frame: bytes, now: float) -> list[bytes]:
        stats = self.stack.stats
        drops = stats.total_drops()
        delivered = len(self.sink.received)
        held = stats.events["ipv4.fragments_held"]
        self.stack.receive_frame(frame, now=now)
        out = self.stack.frames_to_send(now=now)
        assert stats.drops[("stack", "internal_error")] == 0
        accounted = (
            stats.total_drops() > drops
            or len(self.sink.received) > delivered
            or bool(out)
            or stats.events["ipv4.fragments_held"] > held
        )
        assert accounted, f"frame neither dropped, delivered, answered nor held: {frame.hex()}"
        for f in out:
            check_output(f, self.mtu)
        self.check_limits()
        return out

    def timers(self, now: float) -> list[bytes]:
        self.stack.handle_timer(now=now)
        out = self.stack.frames_to_send(now=now)
        assert self.stack.stats.drops[("stack", "internal_error")] == 0
        for f in out:
            check_output(f, self.mtu)
        self.check_limits()
        return out

    def check_limits(self) -> None:
        r: Reassembler = self.ip.reassembler  # type: ignore[attr-defined]
        assert len(r) <= r.max_datagrams
        assert 0 <= r.bytes_held <= r.max_bytes
        assert r.bytes_held == sum(len(d) for p in r._partial.values() for _, d in p.frags)
        assert (r.poll_at() is None) == (len(r) == 0)


def harness(mtu: int = 1500, **ipv4: object) -> Harness:
    stack, _, sink = ipv4_stack(mtu=mtu, **ipv4)
    return Harness(stack, sink, mtu)


class TestFuzzFrames:
    @settings(max_examples=FUZZ_EXAMPLES)
    @given(frame=st.binary(max_size=1600))
    def test_random_bytes(self, frame):
        """Random bytes never crash the stack and are always accounted for (RFC 1122 §1.2.2)."""
        harness().feed(frame, now=0.0)

    @settings(max_examples=FUZZ_EXAMPLES)
    @given(frame=st.binary(min_size=20, max_size=1600))
    def test_random_bytes_with_valid_ipv4_start(self, frame):
        """Random bytes with version 4, our addresses and a fixed checksum reach deeper checks (RFC 1122 §1.2.2)."""
        buf = bytearray(frame)
        buf[0] = 0x40 | (buf[0] & 0x0F)
        buf[12:16] = bytes([10, 0, 0, 1])
        buf[16:20] = bytes([10, 0, 0, 2])
        harness().feed(_fix_checksums(bytes(buf)), now=0.0)

    @settings(max_examples=FUZZ_EXAMPLES)
    @given(frame=mutated_frames(), prefill=st.booleans())
    def test_mutated_valid_frames(self, frame, prefill):
        """Mutated echo/TCP/fragment/ICMP-error frames never crash; outputs stay valid (RFC 1122 §1.2.2)."""
        h = harness()
        if prefill:  # partial datagrams waiting, so a mutated fragment can complete or corrupt one
            for f in PREFILL:
                h.feed(f, now=0.0)
        h.feed(frame, now=1.0)

    @settings(max_examples=SEQUENCE_EXAMPLES)
    @given(
        frames=st.lists(st.tuples(mutated_frames(), st.floats(0.0, 30.0)), min_size=1, max_size=20),
        mtu=st.sampled_from([576, 1500]),
    )
    def test_mutated_sequences_with_time(self, frames, mtu):
        """Mutated frame sequences over time keep every invariant and reassembly bounded (RFC 1122 §3.3.2)."""
        h = harness(mtu=mtu, reassembly_max_datagrams=3, reassembly_max_bytes=65535, reassembly_timeout=30.0)
        now = 0.0
        for frame, dt in frames:
            now += dt
            if (t := h.stack.get_timer()) is not None and t <= now:
                h.timers(now)
            h.feed(frame, now)
        h.timers(now + 1000.0)
        assert len(h.ip.reassembler) == 0  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- stateful reassembly

KEYS = [(PEER, 1, 6), (PEER, 1, 1), (PEER, 2, 6), ("10.0.0.7", 1, 6), ("10.0.0.7", 3, 253)]


class ReassemblyThroughStack(RuleBasedStateMachine):
    """Random fragments of a few datagrams interleaved with timer advances, through the stack."""

    @initialize(
        max_datagrams=st.integers(1, 4),
        timeout=st.sampled_from([1.0, 10.0, 60.0]),
        mtu=st.sampled_from([576, 1500]),
    )
    def setup(self, max_datagrams, timeout, mtu):
        self.h = harness(
            mtu=mtu, reassembly_max_datagrams=max_datagrams, reassembly_max_bytes=65535, reassembly_timeout=timeout
        )
        self.now = 0.0

    @rule(
        key=st.sampled_from(KEYS),
        start_units=st.integers(0, 24),
        size=st.one_of(st.integers(1, 12).map(lambda n: 8 * n), st.integers(1, 100)),
        more=st.booleans(),
        fill=st.integers(0, 255),
    )
    def fragment(self, key, start_units, size, more, fill):
        src, ident, proto = key
        payload = bytes([fill]) * size
        if proto == PROTO_ICMP and start_units == 0 and size >= 8:
            payload = icmp_message(8, 0, b"\0\1\0\1", bytes(size - 8))  # a plausible echo start
        frame = datagram(payload, src=src, ident=ident, proto=proto, flags=MF if more else 0, offset=8 * start_units)
        self.h.feed(frame, self.now)

    @rule(frame=mutated_frames())
    def noise(self, frame):
        self.h.feed(frame, self.now)

    @rule(dt=st.floats(0.0, 40.0))
    def advance(self, dt):
        self.now += dt
        if (t := self.h.stack.get_timer()) is not None and t <= self.now:
            self.h.timers(self.now)
        t = self.h.stack.get_timer()
        assert t is None or t > self.now

    @invariant()
    def bounded(self):
        if hasattr(self, "h"):
            self.h.check_limits()


TestReassemblyThroughStack = ReassemblyThroughStack.TestCase
TestReassemblyThroughStack.settings = settings(
    max_examples=SEQUENCE_EXAMPLES, stateful_step_count=30, suppress_health_check=[HealthCheck.too_slow]
)


class ReassemblerLimits(RuleBasedStateMachine):
    """The Reassembler alone with tiny limits: every operation keeps the accounting exact."""

    @initialize(
        max_datagrams=st.integers(1, 3), max_fragments=st.integers(1, 6), max_bytes=st.sampled_from([64, 200, 1000])
    )
    def setup(self, max_datagrams, max_fragments, max_bytes):
        self.r = Reassembler(
            timeout=10.0, max_datagrams=max_datagrams, max_fragments=max_fragments, max_bytes=max_bytes
        )
        self.now = 0.0

    @rule(
        ident=st.integers(0, 3),
        start_units=st.integers(0, 16),
        size=st.integers(1, 80),
        more=st.booleans(),
    )
    def add(self, ident, start_units, size, more):
        raw = datagram(bytes([ident]) * size, ident=ident, flags=MF if more else 0, offset=8 * start_units)
        hdr, payload = Ipv4Repr.parse(memoryview(raw))
        try:
            whole = self.r.add(hdr, payload, memoryview(raw), now=self.now)
        except WireError as exc:
            assert exc.reason in {
                "bad_fragment",
                "too_big",
                "inconsistent",
                "duplicate_fragment",
                "overlap",
                "too_many_fragments",
                "reassembly_full",
            }
            return
        if whole is not None:
            head, dgram = whole
            assert dgram[20:] == bytes([ident]) * head.payload_len
            parsed, data = Ipv4Repr.parse(memoryview(dgram))
            assert (parsed.more_frags, parsed.frag_offset, len(data)) == (False, 0, head.payload_len)

    @rule(dt=st.floats(0.0, 8.0))
    def advance(self, dt):
        self.now += dt
        for gone in self.r.expire(self.now):
            assert gone.first is None or gone.first[:1] == b"\x45"
        poll = self.r.poll_at()
        assert poll is None or poll > self.now

    @invariant()
    def bounded(self):
        if hasattr(self, "r"):
            r = self.r
            assert len(r) <= r.max_datagrams and 0 <= r.bytes_held <= r.max_bytes
            assert r.bytes_held == sum(p.held for p in r._partial.values())
            assert r.bytes_held == sum(len(d) for p in r._partial.values() for _, d in p.frags)
            for p in r._partial.values():
                assert 0 < len(p.frags) <= r.max_fragments
                assert p.starts == sorted(p.starts) == [s for s, _ in p.frags]
                ends = [s + len(d) for s, d in p.frags]
                assert all(e <= s for e, s in zip(ends, p.starts[1:], strict=False))  # no overlaps held
            deadlines = [p.deadline for p in r._partial.values()]
            assert deadlines == sorted(deadlines)


TestReassemblerLimits = ReassemblerLimits.TestCase
TestReassemblerLimits.settings = settings(max_examples=SEQUENCE_EXAMPLES, stateful_step_count=50)
