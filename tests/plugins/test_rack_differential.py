"""RACK-TLP in layers/tcp/rack.py (a queue in xmit order, compiled) answers exactly as the state
machine the plugin had before (tests/plugins/rack_reference.py: a SortedList of every waiting
segment, the probe armed per segment): the same loss marks in the same order, the same
RACK.xmit_ts/end_seq/rtt and reordering window, the same reorder-timer and TLP deadlines, first
on random send/ACK/SACK/time sequences against a stand-in connection, then between two
simulated stacks with random loss, reordering and duplication, frame for frame."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import plugins.rack_tlp
from framework.simulation import Simulation, _Direction
from layers.tcp.policy import TcpOptions
from layers.tcp.rack import Rack
from tests.layers.tcp.helpers import data, make_stack, tcp_layer
from tests.plugins import rack_reference
from tests.plugins.rack_reference import Rack as OldRack

SEG = 10


@dataclass
class _Rtt:
    srtt: float | None = None
    min_rtt: float | None = None
    rto: float = 1.0

    def current(self) -> float:
        return self.rto


@dataclass
class _Conn:
    """The connection fields and verbs RACK-TLP uses (layers/tcp/view.py), with its calls recorded."""

    snd_una: int = 0
    snd_max: int = 0
    snd_nxt: int = 0
    snd_mss: int = SEG
    in_recovery: bool = False
    retransmit_at: float | None = None
    rtt: _Rtt = field(default_factory=_Rtt)
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def in_flight(self) -> int:
        return self.snd_max - self.snd_una

    def mark_lost(self, start: int, end: int) -> None:
        self.calls.append(("lost", start, end))

    def start_loss_recovery(self, now: float) -> None:
        self.calls.append(("recovery", now))

    def request_tail_probe(self, now: float) -> None:
        self.calls.append(("probe", now))


def _state(rack: Any) -> tuple[Any, ...]:
    return (
        rack.xmit_ts,
        rack.end,
        rack.rtt,
        rack.reordering_seen,
        rack.reo_wnd_mult,
        rack.lost_marked,
        rack.probes,
        rack.reorder_at,
        rack.probe.at,
        rack.probe.sent,
        [rack.reo_wnd(m, s, in_recovery=r) for m in (None, 0.004) for s in (None, 0.003) for r in (False, True)],
        {s: (g.end, g.xmit_ts, g.rexmit, g.delivered, g.lost) for s, g in rack.by_start.items()},
        [(g.start, g.end) for g in rack.order],
    )


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.sampled_from([0, 0, 0, 1, 2, 5, 20, 200])),
        st.tuples(st.just("send"), st.integers(1, 4)),
        st.tuples(st.just("resend"), st.integers(0, 12), st.integers(0, 3)),
        st.tuples(
            st.just("ack"),
            st.sampled_from([0, 0, 1, 1, 2, 3]),
            st.lists(st.tuples(st.integers(0, 14), st.integers(1, 4)), max_size=3),
        ),
        st.tuples(st.just("fire"), st.just(0)),
        st.tuples(st.just("detect"), st.booleans()),
        st.tuples(st.just("recovery"), st.booleans()),
        st.tuples(st.just("dsack"), st.just(0)),
        st.tuples(st.just("rto"), st.just(0)),
        st.tuples(st.just("rtt"), st.sampled_from([None, 0.001, 0.004, 0.03])),
    ),
    max_size=80,
)


def _send(r: Any, c: _Conn, start: int, now: float) -> None:
    """New data, one segment at a time as the send loop does (§6.1, §7.2)."""
    if c.retransmit_at is None:
        c.retransmit_at = now + c.rtt.current()
    c.snd_max = start + SEG  # note_sent moves SND.MAX before the hook (RFC 8985 §7.2 FlightSize)
    r.on_transmit(c, start, start + SEG, now, False)
    c.snd_nxt = start + SEG


def _ack(r: Any, c: _Conn, una: int, blocks: list[tuple[int, int]], now: float) -> None:
    advanced = una > c.snd_una
    c.snd_una = una
    if advanced:
        c.retransmit_at = now + c.rtt.current() if c.snd_una < c.snd_max else None
        r.on_progress(c, now)  # §7.2, before the loss check as recovery.process_ack
    r.on_ack_received(c, una, blocks, now)


def _fire(r: Any, c: _Conn, now: float) -> None:
    """The due timers, the probe first (§7.3)."""
    for timer, _ in sorted(r.timers, key=lambda tb: not tb[1]):
        t = timer.deadline()
        if t is not None and t <= now:
            timer.on_timer(c, now)


def _recovery(r: Any, c: _Conn, on: bool) -> None:
    c.in_recovery = on
    if on:
        r.on_recovery()


def _rtt(r: Any, c: _Conn, srtt: float | None) -> None:
    c.rtt.srtt = srtt
    c.rtt.min_rtt = None if srtt is None else srtt / 2


def _run(ops: list[tuple[Any, ...]], tlp: bool, fraction: float) -> None:
    new, old = Rack(fraction, tlp=tlp), OldRack(fraction, tlp=tlp)
    cn, co = _Conn(), _Conn()
    now = 0.0

    def both(fn: Any, *args: Any) -> None:
        fn(new, cn, *args)
        fn(old, co, *args)

    for op in ops:
        kind = op[0]
        if kind == "tick":
            now += op[1] / 1000
        elif kind == "send":
            for _ in range(op[1]):
                both(_send, cn.snd_max, now)
        elif kind == "resend":  # a retransmission, now and then off the segment boundaries or longer
            start = cn.snd_una + SEG * op[1] + (3 if op[2] == 3 else 0)
            end = start + SEG * (2 if op[2] == 2 else 1)
            if end > cn.snd_max:
                continue
            both(lambda r, c, *a: r.on_transmit(c, *a), start, end, now, True)
        elif kind == "ack":
            una = min(cn.snd_una + SEG * op[1], cn.snd_max)
            both(_ack, una, [(una + SEG * s, una + SEG * (s + n)) for s, n in op[2]], now)
        elif kind == "fire":  # advance to the earliest of the two timers
            due = [t for t in (new.probe.at, new.reorder_at) if t is not None]
            if not due:
                continue
            now = max(now, min(due))
            both(_fire, now)
        elif kind == "detect":
            got = [rack.detect_loss(now, 0.004, 0.003, in_recovery=op[1]) for rack in (new, old)]
            assert [(s.start, s.end) for s in got[0][0]] == [(s.start, s.end) for s in got[1][0]]
            assert got[0][1] == got[1][1]
        elif kind == "recovery":
            both(_recovery, op[1])
        elif kind == "dsack":
            both(lambda r, c: r.on_dsack())
        elif kind == "rto":
            both(lambda r, c: r.on_rto())
        else:
            both(_rtt, op[1])
        assert cn.calls == co.calls, op
        assert _state(new) == _state(old), op


@settings(max_examples=400, deadline=None)
@given(_ops, st.booleans(), st.sampled_from([0.25, 0.0, 1.0]))
def test_the_same_marks_windows_and_deadlines_as_before(ops: list[tuple[Any, ...]], tlp: bool, fraction: float) -> None:
    """RFC 8985 §6.1, §6.2 steps 1-5, §7.2-§7.3: every call of the loss detector's interface, on
    random sends, retransmissions, ACKs, SACK blocks, timers and clock steps (often none, so bursts
    share one ``now`` and retransmissions land below the last key queued)."""
    _run(ops, tlp, fraction)


@pytest.mark.parametrize("seed", range(6))
def test_long_sequences_past_the_queue_compaction(seed: int) -> None:
    """Thousands of segments (the queue drops its dead front every 1024 slots) with SACK holes,
    retransmissions in the same ``now`` as new data, and timers, against the reference."""
    rnd = random.Random(seed)
    ops: list[tuple[Any, ...]] = []
    for _ in range(3000):
        r = rnd.random()
        if r < 0.35:
            ops.append(("send", rnd.randint(1, 6)))
        elif r < 0.6:
            blocks = [(rnd.randint(0, 40), rnd.randint(1, 5)) for _ in range(rnd.randint(0, 3))]
            ops.append(("ack", rnd.choice([0, 1, 2, 4]), blocks))
        elif r < 0.7:
            ops.append(("resend", rnd.randint(0, 20), rnd.randint(0, 3)))
        elif r < 0.9:
            ops.append(("tick", rnd.choice([0, 0, 1, 2, 3])))
        elif r < 0.95:
            ops.append(("fire", 0))
        else:
            ops.append(("recovery", rnd.random() < 0.5))
    ops.insert(0, ("rtt", 0.004))
    _run(ops, tlp=True, fraction=0.25)


def test_the_queue_and_the_sorted_list_are_both_used() -> None:
    """The structures the differential tests exercise: a retransmission in the same ``now`` below
    the last transmission goes to the sorted list, and a loss found there is marked in key order
    with those from the queue, by (xmit_ts, end) (RFC 8985 §6.2 step 5)."""
    for rack in (Rack(0.25), OldRack(0.25)):
        for i in range(4):
            rack.on_sent(SEG * i, SEG * i + SEG, 0.0, False)
        rack.on_sent(0, SEG, 0.0, True)  # same now, lower in sequence space than the last one queued
        if isinstance(rack, Rack):
            assert len(rack._aside) == 1 and rack._run[0].slot == -1  # the old slot is dead
        rack.on_ack(0, [(3 * SEG, 4 * SEG)], 0.01, min_rtt=0.01)
        lost, again = rack.detect_loss(0.02, min_rtt=0.01, srtt=0.01)
        assert [(s.start, s.end) for s in lost] == [(0, SEG), (SEG, 2 * SEG), (2 * SEG, 3 * SEG)]
        assert again is None


class _Recorder(Simulation):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[tuple[float, bytes]] = []

    def _send(self, d: _Direction, frame: bytes) -> None:
        self.frames.append((self.now, bytes(frame)))
        super()._send(d, frame)


def _transfer(fault: dict[str, object], rack: dict[str, object]) -> tuple[list[tuple[float, bytes]], tuple[int, int]]:
    sim = _Recorder()
    a = make_stack("10.0.0.1/24", fault=fault)
    b = make_stack("10.0.0.2/24", fault={**fault, "seed": int(fault["seed"]) + 100})  # type: ignore[call-overload]
    sim.wire(a, b, delay=0.01, bandwidth=5e6, queue_limit=40)
    ta, tb = tcp_layer(a), tcp_layer(b)
    features = {"sack": {}, "timestamps": {}, "rack_tlp": rack}
    opts = TcpOptions(features=features, recv_buffer=1 << 18)
    listener = tb.listen(80, options=opts)
    conn = ta.connect(bytes([10, 0, 0, 2]), 80, now=0.0, options=opts)
    sim.run(condition=lambda: bool(listener.accept_queue), until=5.0)
    server = listener.accept()
    assert server is not None
    size = 300_000
    payload = data(size)
    conn.send(payload, sim.now)
    ta.touch(conn)
    got = bytearray()

    def step() -> bool:
        chunk = server.read()
        if chunk:
            got.extend(chunk)
            tb.touch(server)
        return len(got) == size

    sim.run(condition=step, until=200.0)
    assert bytes(got) == payload
    ld = conn.loss_detector  # type: ignore[attr-defined]
    return sim.frames, (ld.lost_marked, ld.probes)


@pytest.mark.parametrize(
    ("fault", "rack"),
    [
        ({"seed": 1, "drop": 0.02}, {}),
        ({"seed": 2, "drop": 0.05, "reorder": 0.05}, {}),
        ({"seed": 3, "reorder": 0.1, "duplicate": 0.02}, {}),
        ({"seed": 4, "drop": 0.03, "reorder": 0.03, "delay": 0.02, "delay_time": 0.03}, {"tlp": False}),
        ({"seed": 5, "drop": 0.08}, {"reo_wnd_fraction": 0.5}),
    ],
)
def test_the_same_frames_between_two_stacks(
    fault: dict[str, object], rack: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 8985 end to end: 300 KB over a lossy, reordering path give, frame for frame and at the
    same times, what the reference state machine gave, and the run did mark losses."""
    new, new_counts = _transfer(fault, rack)
    monkeypatch.setattr(plugins.rack_tlp, "Rack", rack_reference.Rack)
    old, old_counts = _transfer(fault, rack)
    assert new_counts == old_counts and new_counts[0] > 0
    assert len(new) == len(old)
    assert new == old
