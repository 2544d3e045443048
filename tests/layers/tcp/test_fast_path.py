"""Header prediction (layers/tcp/fastpath.py) is proven equal to the general path (RFC 9293
§3.10.7.4): the same frames fed to a stack with ``fast_path`` on and to one with it off give
the same frames out, the same events, the same counters (besides the fast-path ones) and the
same connection state, after every step. The sequences are random (hypothesis), biased
towards in-order traffic, and mix in what the prediction must refuse: out-of-order and
duplicate data, window changes, old timestamps (PAWS), SACK blocks, FIN, RST, URG, bad
checksums, segments without timestamps, zero windows, reads and writes of the application.
Each example asserts the fast path was taken, so a fast path that is never taken fails.

The peer's frames are packed with struct (tests/layers/tcp/helpers.py), never with the code
under test's emitters."""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework.checksum import internet_checksum
from framework.stack import Stack
from layers.tcp import fastpath
from layers.tcp.connection import TcpConnection
from layers.tcp.events import TcpEvent
from layers.tcp.wire import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, TcpRepr
from tcpstack.testing import capture_logs
from tests.layers.tcp.helpers import LOCAL_PORT, MASK, REMOTE_ADDR, REMOTE_PORT, decode, frame, make_stack, tcp_layer

IRS = 0xFFFF_F000  # the peer's ISN: its data crosses the 2**32 wrap early
FAST = ("tcp.fast_path", "tcp.fast_ack", "tcp.early_demux", "tcp.early_demux_slow")

FEATURES: dict[str, dict[str, Any]] = {
    "none": {},
    "default": {
        "window_scaling": {},
        "timestamps": {},
        "sack": {},
        "rack_tlp": {},
        "delayed_ack": {},
        "nagle": {},
    },
    "ecn+keepalive": {"timestamps": {}, "sack": {}, "ecn": {}, "keepalive": {}, "delayed_ack": {"timeout": 0.1}},
}


# ====================================================================== the peer


@dataclass
class Peer:
    """A peer that plays TCP with struct-packed frames (as Linux lays out its options)."""

    seq: int = (IRS + 1) & MASK  # SND.NXT
    ack: int = 0  # what it acknowledges of our data (our ISS + 1 after the handshake)
    high: int = 0  # the end of the highest segment we sent
    tsval: int = 1000
    ts_recent: int = 0
    ts: bool = False
    sack: bool = False
    wscale: int = 0
    window: int = 0x2000

    def options(self, *, ts: bool = True, tsval: int | None = None, sack: list[tuple[int, int]] | None = None) -> bytes:
        out = b""
        if self.ts and ts:
            out += struct.pack("!BBBBII", 1, 1, 8, 10, (self.tsval if tsval is None else tsval) & MASK, self.ts_recent)
        if sack:
            out += struct.pack("!BBBB", 1, 1, 5, 2 + 8 * len(sack))
            for left, right in sack:
                out += struct.pack("!II", left & MASK, right & MASK)
        return out

    def segment(self, seq: int, flags: int, payload: bytes = b"", *, window: int | None = None) -> TcpRepr:
        w = self.window if window is None else window
        return TcpRepr(REMOTE_PORT, LOCAL_PORT, seq & MASK, self.ack if flags & ACK else 0, flags, w, payload)

    def saw(self, frames: list[bytes]) -> None:
        """Learn from what the stack sent: the highest sequence sent, the TSval to echo."""
        for frm in frames:
            _, seg = decode(frm)
            end = (seg.seq + seg.seg_len) & MASK
            if ((end - self.high) & MASK) < 1 << 31:
                self.high = end
            if seg.ts is not None:
                self.ts_recent = seg.ts[0]


def payload(n: int, start: int) -> bytes:
    return bytes((start + i) % 251 for i in range(n))


# ====================================================================== one stack, recorded


class Recorder:
    """The application: records every event, reads when told to."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def handle_event(self, conn: TcpConnection, event: TcpEvent) -> None:
        self.events.append(repr(event))


class Side:
    def __init__(self, features: dict[str, Any], fast: bool) -> None:
        self.stack: Stack = make_stack(
            features=features, fast_path=fast, recv_buffer=6000, send_buffer=20000, initial_sequence=5000
        )
        self.tcp = tcp_layer(self.stack)
        self.tcp.listen(LOCAL_PORT)
        self.app = Recorder()
        self.conn: TcpConnection | None = None
        self.read: list[bytes] = []
        self.decisions = 0  # "tcp.decision" log events while this side processed input

    def feed(self, frm: bytes, now: float) -> list[bytes]:
        self.stack.receive_frame(frm, now=now)
        return self.output(now)

    def output(self, now: float) -> list[bytes]:
        out = self.stack.frames_to_send(now=now)
        if self.conn is None:
            self.conn = self.tcp.connections.get((REMOTE_ADDR, REMOTE_PORT, LOCAL_PORT))
            if self.conn is not None:
                self.conn.listener = self.app
        self.stack.dispatch_events()
        return out + self.stack.frames_to_send(now=now)

    def tick(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        while (t := self.stack.get_timer()) is not None and t <= now:
            self.stack.handle_timer(now=t)
            out += self.output(t)
        return out

    def user(self, action: str, n: int, now: float) -> list[bytes]:
        conn = self.conn
        if conn is None:
            return []
        try:
            if action == "write":
                conn.send(payload(n, 7), now)
            elif action == "read":
                self.read.append(conn.read(n))
            elif action == "shutdown":
                conn.shutdown(now)
        except Exception as exc:  # an InvalidStateError is part of the behaviour compared
            self.app.events.append(f"error {type(exc).__name__}: {exc}")
        self.tcp.touch(conn)
        return self.output(now)

    def counters(self) -> tuple[dict[Any, int], dict[str, int]]:
        stats = self.stack.stats
        return dict(stats.drops), {k: v for k, v in stats.events.items() if k not in FAST}


_SKIP = frozenset({"fast_path", "_log", "log", "setup", "listener", "listener_ref", "tsval_at", "info", "pool"})


def snapshot(obj: object, depth: int = 0) -> object:
    """Every field of the connection (and of its buffers, timers, policies and extensions),
    as plain values that two stacks can be compared by."""
    if obj is None or isinstance(obj, int | float | str | bool):
        return obj
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj)
    if isinstance(obj, list | tuple | deque):
        return [snapshot(v, depth + 1) for v in obj]
    if isinstance(obj, dict):
        return {k: snapshot(v, depth + 1) for k, v in obj.items() if not callable(v)}
    if hasattr(obj, "value") and type(obj).__name__ == "TcpState":
        return obj.value  # type: ignore[attr-defined]
    if depth > 4 or callable(obj):
        return type(obj).__name__
    names: list[str] = []
    for cls in type(obj).__mro__:
        names.extend(getattr(cls, "__slots__", ()))
    if hasattr(obj, "__dict__"):
        names.extend(vars(obj))
    return {
        "type": type(obj).__name__,
        **{n: snapshot(getattr(obj, n, None), depth + 1) for n in sorted(set(names)) if n not in _SKIP},
    }


# ====================================================================== the actions

Action = tuple[str, int, int]

# Weighted towards in-order data and ACKs of our data, as a bulk transfer is.
KINDS = (
    ["data"] * 10
    + ["ack"] * 6
    + ["write"] * 4
    + ["read"] * 3
    + ["tick", "ooo", "dup", "window", "old_ts", "no_ts", "sack", "badsum", "push", "urg", "ahead", "dupack"]
    + ["ce", "ece", "fin", "rst", "rst_near", "syn", "shutdown"]
)
actions = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(1, 1448), st.integers(0, 3000)), min_size=1, max_size=40
)


def build(peer: Peer, action: Action, now: float) -> bytes | None:
    """The frame the peer sends for *action* (``None``: the action is the application's)."""
    kind, n, k = action
    peer.tsval += 1
    data = payload(n, peer.seq)
    if kind in ("data", "push", "no_ts", "badsum", "urg"):
        flags = ACK | (PSH if kind == "push" else 0) | (URG if kind == "urg" else 0)
        seg = peer.segment(peer.seq, flags, data)
        if kind == "urg":
            seg.urgent = 1
        opts = peer.options(ts=kind != "no_ts")
        if kind == "badsum":
            return frame(seg, options=opts, checksum=0x1234 if k % 2 else 0)
        peer.seq = (peer.seq + n) & MASK
        return frame(seg, options=opts)
    if kind == "ce":  # RFC 3168 §5: in-order data whose datagram a router marked CE
        seg = peer.segment(peer.seq, ACK, data)
        peer.seq = (peer.seq + n) & MASK
        return with_tos(frame(seg, options=peer.options()), 0b11)
    if kind == "ece":  # RFC 3168 §6.1.2: an ACK echoing congestion
        return frame(peer.segment(peer.seq, ACK | ECE), options=peer.options())
    if kind == "ooo":
        return frame(peer.segment(peer.seq + 1 + k, ACK, data), options=peer.options())
    if kind == "dup":
        return frame(peer.segment(peer.seq - 1 - k % 2000, ACK, data), options=peer.options())
    if kind == "old_ts":
        seg = peer.segment(peer.seq, ACK, data if k % 2 else b"")
        return frame(seg, options=peer.options(tsval=peer.tsval - 5000))
    if kind == "ack":
        outstanding = (peer.high - peer.ack) & MASK
        if outstanding < 1 << 31:
            peer.ack = (peer.ack + max(1, outstanding * (k % 101) // 100)) & MASK if outstanding else peer.ack
        return frame(peer.segment(peer.seq, ACK), options=peer.options())
    if kind == "dupack":
        return frame(peer.segment(peer.seq, ACK), options=peer.options())
    if kind == "window":
        peer.window = 0 if k < 300 else k * 8
        return frame(peer.segment(peer.seq, ACK), options=peer.options())
    if kind == "ahead":
        seg = peer.segment(peer.seq, ACK)
        seg.ack = (peer.high + 1 + k) & MASK
        return frame(seg, options=peer.options())
    if kind == "sack":
        left = (peer.ack + 1 + k % 500) & MASK
        blocks = [(left, (left + n) & MASK)] if peer.sack else None
        return frame(peer.segment(peer.seq, ACK), options=peer.options(sack=blocks))
    if kind == "fin":
        seg = peer.segment(peer.seq, ACK | FIN, data if k % 2 else b"")
        peer.seq = (peer.seq + len(seg.payload) + 1) & MASK
        return frame(seg, options=peer.options())
    if kind == "rst":
        return frame(peer.segment(peer.seq, RST | ACK))
    if kind == "rst_near":
        return frame(peer.segment(peer.seq + 1 + k % 100, RST))
    if kind == "syn":
        return frame(peer.segment(peer.seq + k, SYN), options=peer.options())
    return None


def with_tos(frm: bytes, tos: int) -> bytes:
    """*frm* with the IPv4 TOS byte (DSCP and ECN) set, its header checksum redone."""
    hdr = bytearray(frm[:20])
    hdr[1] = tos
    hdr[10:12] = b"\0\0"
    hdr[10:12] = internet_checksum(bytes(hdr)).to_bytes(2, "big")
    return bytes(hdr) + frm[20:]


def handshake(sides: list[Side], peer: Peer, now: float) -> None:
    syn = TcpRepr(REMOTE_PORT, LOCAL_PORT, IRS, 0, SYN | ECE | CWR, 0xFFFF)  # an ECN-setup SYN
    # MSS 1460, SACK-permitted, timestamps, NOP + window scale 7: what Linux sends.
    opts = struct.pack("!BBHBBBBIIBBBB", 2, 4, 1460, 4, 2, 8, 10, peer.tsval, 0, 1, 3, 3, 7)
    outs = [s.feed(frame(syn, options=opts), now) for s in sides]
    assert outs[0] == outs[1]
    _, synack = decode(outs[0][0])
    assert synack.flags & (SYN | ACK) == SYN | ACK
    peer.ts = synack.ts is not None
    peer.sack = synack.sack_perm
    peer.wscale = 7 if synack.wscale is not None else 0
    peer.window = 0x2000 >> peer.wscale if peer.wscale else 0x2000
    peer.ack = (synack.seq + 1) & MASK
    peer.high = peer.ack
    peer.saw(outs[0])
    ack = frame(peer.segment(peer.seq, ACK), options=peer.options())
    outs = [s.feed(ack, now) for s in sides]
    assert outs[0] == outs[1]
    for s in sides:
        assert s.conn is not None and s.conn.state.value == "ESTABLISHED"


def compare(fast: Side, slow: Side, step: str) -> None:
    assert fast.app.events == slow.app.events, step
    assert fast.read == slow.read, step
    assert fast.counters() == slow.counters(), step
    assert fast.conn is not None and slow.conn is not None
    assert snapshot(fast.conn) == snapshot(slow.conn), step


def run(features: dict[str, Any], script: list[Action]) -> Side:
    """Feed *script* to a fast and a slow stack in lockstep, comparing after every step; return
    the fast side."""
    with capture_logs() as logs:  # every debug event: the decision logs must fire alike
        fast, slow = Side(features, True), Side(features, False)
        peer = Peer()
        now = 1.0
        handshake([fast, slow], peer, now)
        for i, action in enumerate(script):
            now += 0.001 * (1 + action[2] % 7)
            kind = action[0]
            step = f"step {i}: {action}"
            frm = None if kind in ("tick", "write", "read", "shutdown") else build(peer, action, now)
            outs = []
            logged = []
            for s in (fast, slow):
                start = len(logs.entries)
                if kind == "tick":
                    outs.append(s.tick(now + action[2] / 1000))
                elif frm is None:
                    outs.append(s.user(kind, action[1] * (1 + action[2] % 4), now))
                else:
                    outs.append(s.feed(frm, now) + s.tick(now))
                logged.append(logs.entries[start:])
                s.decisions += sum(1 for e in logged[-1] if e.get("event") == "tcp.decision")
            if kind == "tick":
                now += action[2] / 1000
            assert outs[0] == outs[1], step
            assert logged[0] == logged[1], step
            peer.saw(outs[0])
            compare(fast, slow, step)
    for s in (slow,):
        assert not any(s.stack.stats.events[name] for name in FAST), "the switch did not turn the fast path off"
    return fast


def taken(side: Side) -> tuple[int, int]:
    events = side.stack.stats.events
    return events["tcp.fast_path"], events["tcp.fast_ack"]


# Every example starts with a prefix the prediction must take (in-order data, a write our
# peer then acknowledges), so each one asserts the fast path ran at least this often.
PREFIX: list[Action] = [("data", 1000, 0), ("data", 1448, 0), ("write", 700, 0), ("ack", 1, 100)]


@pytest.mark.parametrize("name", sorted(FEATURES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=actions)
def test_fast_and_slow_paths_agree(name: str, script: list[Action]) -> None:
    fast = run(FEATURES[name], PREFIX + script)
    data, acks = taken(fast)
    assert data >= 2 and acks >= 1, (data, acks)


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_bulk_receive_takes_the_fast_path_for_every_segment(name: str) -> None:
    """In-order data read as it arrives: every data segment is predicted (as in a bulk
    transfer from Linux), and the ACKs out are those of the general path."""
    script: list[Action] = []
    for _ in range(40):
        script += [("data", 1448, 0), ("read", 3000, 0)]
    fast = run(FEATURES[name], script)
    assert taken(fast) == (40, 0)
    if "delayed_ack" in FEATURES[name]:
        assert fast.decisions >= 40  # the ACK policy's decision log fired for every segment


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_bulk_send_takes_the_fast_path_for_every_ack(name: str) -> None:
    """Our data acknowledged piece by piece: every pure ACK that advances SND.UNA is predicted."""
    script: list[Action] = [("write", 1448, 3)]
    for _ in range(30):
        script += [("ack", 1, 50), ("write", 1000, 0)]
    fast = run(FEATURES[name], script)
    data, acks = taken(fast)
    assert data == 0 and acks == 30, (data, acks)


def test_the_unpredicted_are_left_to_the_general_path() -> None:
    """Out-of-order data, a duplicate, a window probe's answer, SACK, FIN, RST and a bad
    checksum are never taken by the fast path; data after a gap waits until the gap is filled."""
    fast = run(
        FEATURES["default"],
        [
            ("data", 100, 0),
            ("ooo", 100, 50),
            ("data", 100, 0),  # fills part of the gap while out-of-order data is held: general path
            ("dup", 100, 10),
            ("badsum", 100, 1),
            ("sack", 100, 0),
            ("dupack", 1, 0),
            ("urg", 10, 0),
            ("rst_near", 1, 5),
            ("fin", 1, 0),
            ("data", 100, 0),
        ],
    )
    assert taken(fast) == (1, 0)
    assert fast.stack.stats.drops[("tcp", "bad_checksum")] == 1


def test_a_bad_checksum_on_a_predicted_segment_is_a_counted_drop() -> None:
    """MUST-3 on the fast path: the checksum is verified before anything changes."""
    fast = run(FEATURES["none"], [("badsum", 500, 1), ("badsum", 500, 0), ("data", 500, 0)])
    assert fast.stack.stats.drops[("tcp", "bad_checksum")] == 2
    assert taken(fast) == (1, 0)
    assert fast.conn is not None and fast.conn.bytes_received == 500


def test_paws_still_drops_on_the_fast_path() -> None:
    """RFC 7323 §5.3: an old TSval on a segment that is otherwise predicted is dropped (and
    answered with an ACK) by the timestamps plugin's check, which the fast path calls."""
    fast = run(FEATURES["default"], [("data", 500, 0), ("old_ts", 500, 1), ("data", 500, 0)])
    conn = fast.conn
    assert conn is not None
    ts = next(e for e in conn.extensions if e.name == "timestamps")
    assert ts.paws_drops == 1  # type: ignore[attr-defined]
    assert conn.bytes_received == 1000
    assert taken(fast) == (3, 0)


def test_the_switch_is_per_connection() -> None:
    """``conn.fast_path`` (set from ``TcpSettings.fast_path``) turns prediction off for one
    connection."""
    side = Side(FEATURES["none"], True)
    peer = Peer()
    handshake([side, Side(FEATURES["none"], True)], peer, 1.0)
    assert side.conn is not None and side.conn.fast_path
    side.conn.fast_path = False
    side.feed(build(peer, ("data", 100, 0), 1.1) or b"", 1.1)
    assert taken(side) == (0, 0) and side.conn.bytes_received == 100
    side.conn.fast_path = True
    side.feed(build(peer, ("data", 100, 0), 1.2) or b"", 1.2)
    assert taken(side) == (1, 0) and side.conn.bytes_received == 200


def test_prediction_constants_match_the_wire() -> None:
    assert fastpath.SLOW == 0 and fastpath.DATA and fastpath.PURE_ACK and fastpath.BAD_CHECKSUM
    assert len({fastpath.SLOW, fastpath.DATA, fastpath.PURE_ACK, fastpath.BAD_CHECKSUM}) == 4
