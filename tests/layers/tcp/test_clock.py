"""The stack's clock never runs backwards (framework/stack.py, ``Stack._clock``), and why it must not:
RACK orders segments by their send times (RFC 8985 §6.2), so a segment stamped earlier than one sent
before it is judged "sent before the most recently delivered segment" and called lost.

The I/O driver can hand the stack a time ahead of its clock: uvloop's timers fire up to a millisecond
early, and the driver then tells the stack the deadline itself when it is at most 0.1 ms away
(tcpstack/io/driver.py ``_on_timer``); the next call with the real time is then earlier. Over TUN in a
namespace, where the RTT is ~0.1-0.3 ms, that made the stack retransmit the last segment of a burst
(and cut cwnd) although nothing was lost: tests/integration/test_plugins_wire2.py
``test_ecn_congestion_echo_and_response`` saw it about 1 run in 8, compiled."""

from __future__ import annotations

import struct
from dataclasses import replace

from layers.tcp.connection import TcpConnection
from layers.tcp.wire import ACK
from tests.layers.tcp.helpers import REMOTE_SEQ, SEND, LayerHarness, TcpRepr

PORT = 80
MSS = 1000
# MSS (RFC 9293 §3.2) and SACK-permitted (RFC 2018 §2), padded to a word.
SYN_OPTIONS = struct.pack("!BBH", 2, 4, MSS) + bytes([4, 2, 1, 1])


def _open() -> tuple[LayerHarness, TcpConnection]:
    h = LayerHarness(features={"sack": {}, "rack_tlp": {}})
    h.tcp.listen(PORT)
    conn, _ = h.handshake(PORT, t=1.0, window=60_000, options=SYN_OPTIONS)
    assert conn.snd_mss == MSS
    assert conn.scoreboard is not None and conn.loss_detector is not None  # SACK and RACK in use
    conn.cc.cwnd = 100 * MSS
    return h, conn


def _write(h: LayerHarness, conn: TcpConnection, n: int, t: float) -> None:
    conn.send(bytes(n * MSS), t)
    h.user(conn)


def _ack(h: LayerHarness, conn: TcpConnection, segs: int, t: float) -> list[TcpRepr]:
    ack = replace(SEND, dst_port=PORT, seq=REMOTE_SEQ + 1, ack=(conn.iss + 1 + segs * MSS) & 0xFFFFFFFF, flags=ACK)
    return h.inject(replace(ack, window=60_000), t=t)


def test_a_time_behind_the_clock_is_taken_as_the_clock() -> None:
    h, _ = _open()
    h.stack.handle_timer(now=1.5)
    assert h.stack.context.now == 1.5
    h.stack.frames_to_send(now=1.4)  # behind: the stack keeps its clock
    assert h.stack.context.now == 1.5
    h.stack.receive_frame(b"", now=1.45)
    assert h.stack.context.now == 1.5
    h.stack.frames_to_send(now=1.6)
    assert h.stack.context.now == 1.6
    assert h.stack.stats.events["stack.clock_behind"] == 2


def test_a_segment_sent_after_a_timer_that_ran_early_is_not_called_lost() -> None:
    """Segment A goes out from a timer run at its deadline, 1.00023, while the real time was earlier;
    segment X follows at the real time, 1.00021. The peer acknowledges A (delaying its ACK of X, as
    Linux does for an odd segment): nothing was lost, so nothing is sent again, and cwnd stays."""
    h, conn = _open()
    _write(h, conn, 3, 1.0)
    assert len(h.output(t=1.0)) == 3
    assert _ack(h, conn, 2, 1.0001) == []  # an RTT sample of 0.1 ms
    _write(h, conn, 1, 1.0002)
    h.stack.handle_timer(now=1.00023)  # the driver's early timer, told its deadline
    a = h.output(t=1.00023)
    _write(h, conn, 1, 1.0002)
    x = h.output(t=1.00021)  # the real time
    assert [len(s.payload) for s in a + x] == [MSS, MSS]
    cwnd = conn.cc.cwnd
    sent = _ack(h, conn, 4, 1.00026)  # everything but X
    sent += [s for _, s in h.advance(1.05)]
    assert [s for s in sent if s.payload] == [], [str(s) for s in sent]
    assert conn.retransmits == 0 and conn.recoveries == 0 and conn.cc.cwnd >= cwnd
