"""Differential tests: the compiled built-in hooks (layers/tcp/builtin_hooks.py) against the
interpreted implementations they replaced (tests/layers/tcp/builtin_hooks_reference.py).

Random sequences (hypothesis) drive a reference object and the new one side by side with the
same inputs, and after every step compare what they return, what they did to the segment and to
the connection, and every field they keep:

- timestamps: options on SYNs and on every other segment (RFC 7323 §3.2), the TSval clock
  (§5.4), PAWS decisions (§5.3, §5.5), TS.Recent (§4.3) and RTTM samples (§4.1), across
  sequence-number and TSval wrap and 24-day idle periods;
- SACK: the D-SACK and SACK blocks of every ACK (RFC 2018 §4, RFC 2883 §4) over a real receive
  buffer fed in-order, out-of-order, duplicate and partly duplicate segments, and the fast
  path's :meth:`Sack.in_order` against the full ``check`` on every predicted segment;
- delayed ACK: every ACK deadline or "ACK now" (RFC 1122 §4.2.3.2, RFC 9293 §3.8.6.3) and
  every decision log line.

The suite runs against both builds, so in the compiled run these compare compiled code with the
reference; in the pure run the same source interpreted.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.lazylog import debug_enabled
from framework.plugins import hookimpl
from layers.tcp import builtin_hooks
from layers.tcp.buffers import ReceiveBuffer
from layers.tcp.builtin_hooks import PAWS_IDLE, DelayedAck, Sack, Timestamps
from layers.tcp.policy import TcpSetup, decision_log, overrides
from layers.tcp.seq import MASK
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, PSH, RST, TcpRepr
from plugins.delayed_ack import DelayedAckSettings
from tcpstack.testing.pair import StackPair
from tests.layers.tcp.builtin_hooks_reference import ReferenceDelayedAck, ReferenceSack, ReferenceTimestamps


class Recorder:
    """A decision log that keeps every call (what the plugins log through)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def debug(self, event: str, /, **kw: object) -> object:
        self.events.append((event, kw))
        return None


class FakeConn:
    """The part of a ConnectionView the three hooks read and call."""

    def __init__(self, iss: int, state: TcpState, rcv_nxt: int = 0, capacity: int = 1 << 16) -> None:
        self.iss = iss
        self.state = state
        self.snd_mss = 1460
        self.local_mss = 1460
        self.last_ack_sent = 0
        self.snd_una = 0
        self.rcv_nxt = rcv_nxt
        self.rcvbuf = ReceiveBuffer(capacity)
        self.acks_requested = 0
        self.rtt_samples: list[float] = []
        self.tsval_at: Any = None
        self.scoreboards = 0

    def request_ack(self) -> None:
        self.acks_requested += 1

    def sample_rtt(self, rtt: float) -> None:
        self.rtt_samples.append(rtt)

    def time_rtt_by_timestamps(self, tsval_at: Any) -> None:
        self.tsval_at = tsval_at

    def set_send_mss(self, mss: int) -> None:
        self.snd_mss = mss

    def start_sack_scoreboard(self) -> None:
        self.scoreboards += 1

    def record(self) -> tuple[object, ...]:
        return (self.acks_requested, self.rtt_samples, self.snd_mss, self.scoreboards)


def fields(obj: object, names: str) -> dict[str, object]:
    return {n: getattr(obj, n) for n in names.split()}


TS_FIELDS = "active offset peer_offered ts_recent ts_recent_at strict paws_drops no_option_drops samples"
SACK_FIELDS = "active peer_offered report_dsack last dsack recent blocks_sent"


def seg_of(seq: int, ack: int, flags: int, payload: bytes = b"", ts: tuple[int, int] | None = None) -> TcpRepr:
    seg = TcpRepr(1000, 2000, seq & MASK, ack & MASK, flags, 65535, payload)
    seg.ts = ts
    return seg


# ====================================================================== timestamps

# TSval offsets from TS.Recent: equal, a little newer or older, and the edges of the half-space
# that decides "older" (RFC 7323 §5.3, modulo 2^32).
TS_DELTAS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([(1 << 31) - 1, 1 << 31, (1 << 31) + 1, -(1 << 31), 1000, -1000]),
    st.integers(0, MASK),
)
TS_STEPS = st.one_of(
    st.tuples(st.just("time"), st.sampled_from([0.0, 0.001, 0.25, 30.0, PAWS_IDLE, PAWS_IDLE + 1.0])),
    st.tuples(
        st.just("segment"),
        st.tuples(
            TS_DELTAS,  # TSval - TS.Recent
            st.one_of(st.just(0), st.integers(-50, 5000)),  # TSecr: none (0), or our clock less some ms
            st.booleans(),  # carries the option
            st.sampled_from([ACK, ACK | PSH, RST, RST | ACK, 0]),
            st.integers(-3, 3),  # SEG.SEQ - Last.ACK.sent
            st.integers(-2, 2),  # SEG.ACK - SND.UNA
        ),
    ),
    st.tuples(st.just("decorate"), st.just(None)),
    st.tuples(st.just("window"), st.tuples(st.integers(-2, 2), st.integers(-2, 2))),
)


@settings(max_examples=300, deadline=None)
@given(
    iss=st.integers(0, MASK),
    passive=st.booleans(),
    peer_ts=st.one_of(st.none(), st.integers(0, MASK)),
    strict=st.booleans(),
    start=st.sampled_from([0.0, 1.5, 4_294_967.0]),  # 4_294_967 s: the 1 ms clock wraps
    steps=st.lists(TS_STEPS, max_size=40),
)
def test_timestamps_match_the_reference(
    iss: int, passive: bool, peer_ts: int | None, strict: bool, start: float, steps: list[tuple[str, Any]]
) -> None:
    """Options, PAWS decisions, TS.Recent, RTT samples and the clock of the compiled Timestamps
    equal the interpreted ones on random sequences (RFC 7323 §3-5)."""
    state = TcpState.SYN_RECEIVED if passive else TcpState.SYN_SENT
    ref, new = ReferenceTimestamps(strict=strict), Timestamps(strict=strict)
    rconn, nconn = FakeConn(iss, state), FakeConn(iss, state)
    now = start
    if not passive:
        a, b = seg_of(iss, 0, 0), seg_of(iss, 0, 0)
        ref.syn_options(rconn, a, now)  # type: ignore[arg-type]
        new.syn_options(nconn, b, now)  # type: ignore[arg-type]
        assert a.ts == b.ts
    syn = seg_of(12345, iss + 1, ACK, ts=None if peer_ts is None else (peer_ts, 0))
    ref.on_peer_syn(rconn, syn, now)  # type: ignore[arg-type]
    new.on_peer_syn(nconn, syn, now)  # type: ignore[arg-type]
    if passive:
        a, b = seg_of(iss, 0, 0), seg_of(iss, 0, 0)
        ref.syn_options(rconn, a, now)  # type: ignore[arg-type]
        new.syn_options(nconn, b, now)  # type: ignore[arg-type]
        assert a.ts == b.ts
    assert fields(ref, TS_FIELDS) == fields(new, TS_FIELDS) and rconn.record() == nconn.record()
    for conn in (rconn, nconn):
        conn.state = TcpState.ESTABLISHED
        conn.last_ack_sent = conn.snd_una = 77
    for kind, arg in steps:
        if kind == "time":
            now += arg
        elif kind == "window":
            for conn in (rconn, nconn):
                conn.last_ack_sent = (conn.last_ack_sent + arg[0]) & MASK
                conn.snd_una = (conn.snd_una + arg[1]) & MASK
        elif kind == "decorate":
            a, b = seg_of(1, 2, ACK), seg_of(1, 2, ACK)
            ref.decorate(rconn, a, now)  # type: ignore[arg-type]
            new.decorate(nconn, b, now)  # type: ignore[arg-type]
            assert a.ts == b.ts
        else:
            dts, ecr_back, has_ts, flags, dseq, dack = arg
            ts = ((ref.ts_recent + dts) & MASK, (ref.tsval(now) - ecr_back) & MASK if ecr_back else 0)
            seg = seg_of(rconn.last_ack_sent + dseq, rconn.snd_una + dack, flags, ts=ts if has_ts else None)
            # The connection calls check, then (if it passed and the segment is acceptable) accepted.
            ok = ref.check(rconn, seg, now)  # type: ignore[arg-type]
            assert new.check(nconn, seg, now) == ok  # type: ignore[arg-type]
            if ok:
                ref.accepted(rconn, seg, now)  # type: ignore[arg-type]
                new.accepted(nconn, seg, now)  # type: ignore[arg-type]
        assert fields(ref, TS_FIELDS) == fields(new, TS_FIELDS)
        assert rconn.record() == nconn.record()
        assert ref.tsval(now) == new.tsval(now)
        if rconn.tsval_at is not None:
            assert rconn.tsval_at(now) == nconn.tsval_at(now)


# ====================================================================== SACK

SACK_STEPS = st.one_of(
    # A data segment: offset from RCV.NXT in 100-byte units (negative: old data), length.
    st.tuples(st.just("segment"), st.tuples(st.integers(-30, 60), st.integers(1, 15))),
    st.tuples(st.just("segment"), st.tuples(st.just(0), st.integers(1, 15))),  # in order, often
    st.tuples(st.just("segment"), st.tuples(st.just(0), st.integers(1, 15))),
    st.tuples(st.just("ack"), st.tuples(st.booleans(), st.sampled_from([0, 0, 100, 1400]))),
    st.tuples(st.just("read"), st.integers(0, 4000)),
)


@settings(max_examples=300, deadline=None)
@given(
    irs=st.sampled_from([0, 1000, MASK - 2500, MASK]),
    dsack=st.booleans(),
    offered=st.booleans(),
    steps=st.lists(SACK_STEPS, max_size=60),
)
def test_sack_matches_the_reference(irs: int, dsack: bool, offered: bool, steps: list[tuple[str, Any]]) -> None:
    """The SACK and D-SACK blocks of every ACK, and the blocks kept between ACKs, equal the
    interpreted implementation's (RFC 2018 §4, RFC 2883 §4, §4.1.1); on every predicted in-order
    segment the fast path's in_order() leaves the same state as the full check()."""
    rlog, nlog, flog = Recorder(), Recorder(), Recorder()
    ref, new, fast = ReferenceSack(dsack=dsack, log=rlog), Sack(dsack=dsack, log=nlog), Sack(dsack=dsack, log=flog)
    conn = FakeConn(0, TcpState.SYN_RECEIVED, rcv_nxt=irs, capacity=8000)
    syn = seg_of(irs, 0, 0)
    syn.sack_perm = offered
    for ext in (ref, new, fast):
        ext.on_peer_syn(conn, syn, 0.0)  # type: ignore[arg-type]
    assert conn.scoreboards == (3 if offered else 0)
    assert rlog.events == nlog.events == flog.events
    conn.state = TcpState.ESTABLISHED
    predicted = 0
    for kind, arg in steps:
        buf = conn.rcvbuf
        if kind == "segment":
            off, units = arg
            offset, size = off * 100, units * 100
            seg = seg_of(conn.rcv_nxt + offset, 1, ACK, bytes(size))
            ref.check(conn, seg, 1.0)  # type: ignore[arg-type]
            new.check(conn, seg, 1.0)  # type: ignore[arg-type]
            if offset == 0 and not buf.has_gaps:  # what the fast path predicts
                fast.in_order(buf.nxt, buf.nxt + size)
                predicted += 1
            else:
                fast.check(conn, seg, 1.0)  # type: ignore[arg-type]
            # Store what fits the window, as receive_text does (the buffer trims the left edge).
            room = buf.window - offset
            if room > 0:
                gained = buf.insert(buf.nxt + offset, seg.payload[:room])
                if gained > 0:
                    conn.rcv_nxt = (conn.rcv_nxt + gained) & MASK
        elif kind == "read":
            buf.consume(min(arg, len(buf)))
        else:
            with_ts, plen = arg
            acks = [seg_of(5, conn.rcv_nxt, ACK, bytes(plen)) for _ in range(3)]
            for ext, ack in zip((ref, new, fast), acks, strict=True):
                if with_ts:
                    ack.ts = (1, 2)
                ext.decorate(conn, ack, 1.0)  # type: ignore[arg-type]
            assert acks[0].sack == acks[1].sack == acks[2].sack
        assert fields(ref, SACK_FIELDS) == fields(new, SACK_FIELDS) == fields(fast, SACK_FIELDS)
        assert rlog.events == nlog.events == flog.events


@pytest.mark.parametrize("idle", [PAWS_IDLE - 1.0, PAWS_IDLE, PAWS_IDLE + 1.0])
@pytest.mark.parametrize("cls", [ReferenceTimestamps, Timestamps])
def test_paws_at_the_24_day_edge(cls: Any, idle: float) -> None:
    """RFC 7323 §5.5: TS.Recent is valid for 24 days: an older TSval after exactly 24 days idle
    is still dropped (and ACKed); a day more and it is accepted and becomes TS.Recent."""
    ext, conn = cls(strict=True), FakeConn(1, TcpState.SYN_RECEIVED)
    ext.on_peer_syn(conn, seg_of(5, 2, ACK, ts=(1000, 0)), 10.0)
    conn.state = TcpState.ESTABLISHED
    seg = seg_of(0, 0, ACK, ts=(999, 0))
    ok = ext.check(conn, seg, 10.0 + idle)
    assert ok is (idle > PAWS_IDLE) and conn.acks_requested == (0 if ok else 1)
    if ok:
        ext.accepted(conn, seg, 10.0 + idle)
        assert ext.ts_recent == 999


def test_sack_in_order_is_what_check_does_on_a_predicted_segment() -> None:
    """A fixed case of the property above: in-order data with nothing held records the latest
    block and nothing else (RFC 2018 §4)."""
    conn = FakeConn(0, TcpState.ESTABLISHED, rcv_nxt=MASK - 99)
    ref, new = ReferenceSack(dsack=True, log=Recorder()), Sack(dsack=True, log=Recorder())
    ref.check(conn, seg_of(MASK - 99, 1, ACK, bytes(300)), 1.0)  # type: ignore[arg-type]
    new.in_order(0, 300)
    assert ref.last == new.last == (0, 300) and ref.dsack is new.dsack is None


# ====================================================================== delayed ACK

DA_STEPS = st.one_of(
    st.tuples(st.just("data"), st.tuples(st.integers(1, 3000), st.sampled_from([0.0, 0.001, 0.05]))),
    st.tuples(st.just("data"), st.tuples(st.sampled_from([1448, 1460, 536]), st.just(0.0))),
    st.tuples(st.just("fill"), st.integers(-1, 1)),  # up to the threshold, one byte either side
    st.tuples(st.just("ack_sent"), st.just(None)),
)


@settings(max_examples=200, deadline=None)
@given(
    timeout=st.sampled_from([0.001, 0.04, 0.2, 0.499]),
    segments=st.integers(1, 16),
    mss=st.sampled_from([88, 536, 1460, 9000]),
    steps=st.lists(DA_STEPS, max_size=40),
)
def test_delayed_ack_matches_the_reference(
    timeout: float, segments: int, mss: int, steps: list[tuple[str, Any]]
) -> None:
    """Every ACK deadline, "ACK now" and decision log line of the compiled DelayedAck equals the
    interpreted one's (RFC 1122 §4.2.3.2, RFC 9293 §3.8.6.3)."""
    cfg = DelayedAckSettings(timeout=timeout, segments=segments)
    rlog, nlog = Recorder(), Recorder()
    ref, new = ReferenceDelayedAck(cfg, mss, rlog), DelayedAck(cfg, mss, nlog)
    now = 10.0
    for kind, arg in steps:
        if kind == "data" or (kind == "fill" and ref.threshold - ref._unacked + arg > 0):
            n, dt = arg if kind == "data" else (ref.threshold - ref._unacked + arg, 0.0)
            now += dt
            assert new.on_data(n, now) == ref.on_data(n, now)
        elif kind == "fill":
            continue
        else:
            ref.on_ack_sent()
            new.on_ack_sent()
        assert (new._unacked, new.decisions, new.threshold, new.timeout) == (
            ref._unacked,
            ref.decisions,
            ref.threshold,
            ref.timeout,
        )
        assert nlog.events == rlog.events


@pytest.mark.parametrize("debug", [True, False])
def test_delayed_ack_logs_the_same_lines_through_a_lazy_log(debug: bool) -> None:
    """With the stack's own (lazy) decision log, the compiled policy asks whether debug is on
    before it builds a line; the lines emitted, debug on, and the decisions, debug off, are the
    reference's."""
    from tcpstack.testing import capture_logs

    cfg = DelayedAckSettings()
    ref = ReferenceDelayedAck(cfg, 1460, decision_log("c", "delayed_ack"))
    new = DelayedAck(cfg, 1460, decision_log("c", "delayed_ack"))
    sizes = [1448, 100, 1448, 1448, 1448, 10, 1448]

    def run(policy: Any) -> tuple[list[object], list[dict[str, Any]]]:
        with capture_logs(logging.DEBUG if debug else logging.INFO) as cap:
            assert debug_enabled() is debug
            out = [policy.on_data(n, 1.0 + i / 100) for i, n in enumerate(sizes)]
        return out, cap.entries

    r_out, r_lines = run(ref)
    n_out, n_lines = run(new)
    assert n_out == r_out and n_lines == r_lines
    assert (len(n_lines) == len(sizes)) is debug


# ====================================================================== wiring


def test_sack_accepted_is_never_called_per_segment() -> None:
    """Sack has no accepted() work: listed in noop_hooks, the connection leaves it out, as it left
    out the no-op the interpreted class inherited from Extension."""
    assert not overrides(Sack(dsack=True), "accepted") and not overrides(ReferenceSack(dsack=True), "accepted")
    assert overrides(Sack(dsack=True), "check") and overrides(Sack(dsack=True), "decorate")
    assert all(overrides(Timestamps(strict=True), m) for m in ("check", "accepted", "decorate"))


def test_plugins_install_the_compiled_classes() -> None:
    """The plugins are the registrars: they install (and re-export) the classes of
    layers/tcp/builtin_hooks.py, which the fast path recognises."""
    import plugins.delayed_ack
    import plugins.sack
    import plugins.timestamps

    assert plugins.timestamps.Timestamps is builtin_hooks.Timestamps
    assert plugins.sack.Sack is builtin_hooks.Sack
    assert plugins.delayed_ack.DelayedAck is builtin_hooks.DelayedAck


def test_a_plugin_can_still_subclass_delayed_ack() -> None:
    """DelayedAck stays open to interpreted subclasses (examples/tcpstack-example-quickack), in
    both builds: the override runs, and super() reaches the compiled body."""

    class Quick(DelayedAck):
        __slots__ = ("left",)

        def __init__(self, settings: DelayedAckSettings, mss: int) -> None:
            super().__init__(settings, mss, Recorder())
            self.left = 1

        def on_data(self, seg_len: int, now: float) -> float | None:
            if self.left:
                self.left -= 1
                return None
            return super().on_data(seg_len, now)

    q = Quick(DelayedAckSettings(timeout=0.04), 1460)
    assert q.on_data(100, 1.0) is None and q.on_data(100, 1.0) == pytest.approx(1.04) and q.decisions == 1


# ====================================================================== end to end


class UseReference:
    """A plugin that replaces the built-in objects the plugins installed with the reference
    implementations (same settings), after every other ``tcp_connection_setup`` ran."""

    @hookimpl(trylast=True)
    def tcp_connection_setup(self, setup: TcpSetup) -> None:
        out: list[Any] = []
        for ext in setup.extensions:
            if isinstance(ext, Timestamps):
                out.append(ReferenceTimestamps(strict=ext.strict))
            elif isinstance(ext, Sack):
                out.append(ReferenceSack(dsack=ext.report_dsack, log=ext.log))
            else:
                out.append(ext)
        setup.extensions[:] = out
        policy = setup.ack_policy
        if type(policy) is DelayedAck:
            ref = ReferenceDelayedAck(DelayedAckSettings(timeout=policy.timeout), setup.info.mss, policy.log)
            ref.threshold = policy.threshold
            setup.ack_policy = ref


def _wire_trace(reference: bool) -> tuple[list[tuple[object, ...]], StackPair]:
    # A bottleneck with a short queue: drops, so SACK blocks, D-SACKs and recovery; data both ways.
    pair = StackPair(
        extra=[UseReference()] if reference else [],
        default_features=True,
        bandwidth=2_000_000,
        queue_limit=12,
        delay=0.01,
    )
    conn = pair.open()
    conn.send(bytes(range(256)) * 1200)
    conn.reply(b"x" * 40_000)
    assert pair.run_for(60.0, condition=lambda: len(conn.server.received) == 307_200)
    assert len(conn.client.received) == 40_000
    trace = [
        (t, s.src_port, s.seq, s.ack, s.flags, s.window, len(s.payload), s.ts, s.sack, s.sack_perm)
        for t, _, s in pair.sim.tap
    ]
    return trace, pair


def test_a_lossy_transfer_is_the_same_on_the_wire_with_the_reference_hooks() -> None:
    """End to end, default features over a lossy bottleneck: every segment both stacks send (time,
    sequence numbers, window, timestamps, SACK blocks, so every PAWS decision, RTT sample and
    delayed ACK) is the same with the compiled built-in hooks as with the reference ones."""
    new, new_pair = _wire_trace(reference=False)
    ref, ref_pair = _wire_trace(reference=True)
    kinds = {type(e).__name__ for e in ref_pair.connections[0].client_conn.extensions}
    assert {"ReferenceTimestamps", "ReferenceSack"} <= kinds  # the swap happened
    assert type(ref_pair.connections[0].server_conn.ack_policy) is ReferenceDelayedAck
    assert type(new_pair.connections[0].server_conn.ack_policy) is DelayedAck
    assert any(row[8] for row in new)  # SACK blocks were sent: the run exercised them
    assert len(new) == len(ref)
    assert new == ref
