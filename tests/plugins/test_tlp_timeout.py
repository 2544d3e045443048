"""The tail loss probe's timeout (RFC 8985 §7.2), sans-IO with explicit time: the FlightSize it
sees includes the segment just sent, so one segment from idle arms PTO = 2*SRTT + WCDelAckT, two
or more arm 2*SRTT, never later than the RTO; the probe goes at that moment (§7.3)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from layers.tcp.connection import TcpConnection
from layers.tcp.policy import TcpOptions
from layers.tcp.rack import WC_DEL_ACK, Rack
from layers.tcp.wire import ACK, SYN, TcpRepr
from tests.layers.tcp.helpers import REMOTE_PORT, REMOTE_SEQ, SEND, LayerHarness

MSS = 1000
SRTT = 0.05  # the handshake's RTT sample: SYN-ACK at 0.0, its ACK at 0.05 (RFC 6298 (2.2))
T0 = 1.0  # the data goes out from idle here


def _connect(min_rto: float) -> tuple[LayerHarness, TcpConnection]:
    features: dict[str, object] = {"sack": {}, "rack_tlp": {}}
    h = LayerHarness(features=features)
    h.tcp.listen(80, options=TcpOptions(features=features, min_rto=min_rto))
    mss_sack = bytes([2, 4, MSS >> 8, MSS & 0xFF, 4, 2, 1, 1])  # MSS 1000, SACK-permitted
    syn = replace(SEND, src_port=REMOTE_PORT, dst_port=80, seq=REMOTE_SEQ, ack=0, flags=SYN, window=65535)
    (synack,) = h.inject(syn, t=0.0, options=mss_sack)
    assert synack.flags == SYN | ACK
    ack = replace(SEND, src_port=REMOTE_PORT, dst_port=80, seq=REMOTE_SEQ + 1, ack=synack.seq + 1, window=65535)
    assert h.inject(ack, t=SRTT) == []
    conn = next(iter(h.tcp.connections.values()))
    assert conn.rtt.srtt == pytest.approx(SRTT) and conn.snd_mss == MSS
    assert isinstance(conn.loss_detector, Rack)
    return h, conn


def _send(h: LayerHarness, conn: TcpConnection, size: int) -> list[TcpRepr]:
    conn.send(b"x" * size, T0)
    h.user(conn)
    out = h.output(t=T0)
    assert sum(len(s.payload) for s in out) == size
    return out


def _probe_at(conn: TcpConnection) -> float | None:
    rack = conn.loss_detector
    assert isinstance(rack, Rack)
    return rack.probe.at


def test_one_segment_from_idle_arms_2_srtt_plus_wcdelackt() -> None:
    """RFC 8985 §7.2: FlightSize is one segment: PTO = 2*SRTT + WCDelAckT (the RTO, 1 s, is later)."""
    h, conn = _connect(min_rto=1.0)
    (seg,) = _send(h, conn, MSS)
    pto = 2 * SRTT + WC_DEL_ACK
    assert _probe_at(conn) == pytest.approx(T0 + pto)
    assert conn.timers.rto == pytest.approx(T0 + 1.0)
    assert h.advance(T0 + pto - 1e-6) == []
    # §7.3: no new data to send: the probe is the last segment again, at the PTO, not the RTO.
    ((t, probe),) = h.advance(T0 + pto)
    assert t == pytest.approx(T0 + pto)
    assert (probe.seq, probe.payload) == (seg.seq, seg.payload)
    assert conn.loss_detector.probes == 1  # type: ignore[union-attr]
    assert conn.retransmits == 1 and conn.timers.rto == pytest.approx(T0 + pto + 1.0)  # §7.3: RTO restarts


@pytest.mark.parametrize("segments", [2, 3])
def test_two_or_more_segments_arm_2_srtt(segments: int) -> None:
    """RFC 8985 §7.2: FlightSize above one segment: PTO = 2*SRTT, no WCDelAckT."""
    h, conn = _connect(min_rto=1.0)
    out = _send(h, conn, segments * MSS)
    assert len(out) == segments
    pto = 2 * SRTT
    assert _probe_at(conn) == pytest.approx(T0 + pto)
    assert h.advance(T0 + pto - 1e-6) == []
    ((t, probe),) = h.advance(T0 + pto)
    assert t == pytest.approx(T0 + pto)
    assert (probe.seq, probe.payload) == (out[-1].seq, out[-1].payload)  # §7.3: the last segment


def test_the_probe_timeout_is_never_later_than_the_rto() -> None:
    """RFC 8985 §7.2: if Now() + PTO is past the RTO's expiry, PTO = RTO expiry - Now(). Here
    2*SRTT + WCDelAckT = 0.3 s, the RTO 0.2 s (min_rto): the probe goes at the RTO's time, in its place."""
    h, conn = _connect(min_rto=0.2)
    (seg,) = _send(h, conn, MSS)
    assert conn.timers.rto == pytest.approx(T0 + 0.2)
    assert _probe_at(conn) == pytest.approx(T0 + 0.2)
    ((t, probe),) = h.advance(T0 + 0.2)
    assert t == pytest.approx(T0 + 0.2) and (probe.seq, probe.payload) == (seg.seq, seg.payload)
    assert conn.loss_detector.probes == 1  # type: ignore[union-attr]


def test_without_srtt_the_probe_timeout_is_one_second() -> None:
    """RFC 8985 §7.2 TLP_calc_PTO: no SRTT yet (the SYN-ACK was retransmitted, so Karn's rule
    leaves the handshake without a sample): PTO = 1 s, no WCDelAckT even for a lone segment (the
    lost SYN-ACK leaves a one-segment cwnd, RFC 5681 §3.1); the RTO is 3 s (RFC 6298 (5.7))."""
    features: dict[str, object] = {"sack": {}, "rack_tlp": {}}
    h = LayerHarness(features=features)
    h.tcp.listen(80, options=TcpOptions(features=features))
    syn = replace(SEND, src_port=REMOTE_PORT, dst_port=80, seq=REMOTE_SEQ, ack=0, flags=SYN, window=65535)
    (synack,) = h.inject(syn, t=0.0, options=bytes([2, 4, MSS >> 8, MSS & 0xFF, 4, 2, 1, 1]))
    assert [s.flags for _, s in h.advance(1.5)] == [SYN | ACK]  # the SYN-ACK again, at 1 s
    ack = replace(SEND, src_port=REMOTE_PORT, dst_port=80, seq=REMOTE_SEQ + 1, ack=synack.seq + 1, window=65535)
    assert h.inject(ack, t=1.6) == []
    conn = next(iter(h.tcp.connections.values()))
    assert conn.rtt.srtt is None
    t0 = 2.0
    conn.send(b"x" * MSS, t0)
    h.user(conn)
    out = h.output(t=t0)
    assert len(out) == 1
    assert _probe_at(conn) == pytest.approx(t0 + 1.0) and conn.timers.rto == pytest.approx(t0 + 3.0)
    assert h.advance(t0 + 1.0 - 1e-6) == []
    ((t, probe),) = h.advance(t0 + 1.0)
    assert t == pytest.approx(t0 + 1.0) and (probe.seq, probe.payload) == (out[-1].seq, out[-1].payload)


def test_a_new_segment_sent_as_the_probe_arms_the_rto_not_another_probe() -> None:
    """RFC 8985 §7.3: the probe is a new segment when one may go (one beyond cwnd); behind it the
    RTO runs, restarted at the probe, not a second PTO (which would find cwnd full, send nothing
    and push the RTO back)."""
    h, conn = _connect(min_rto=1.0)
    out = _send(h, conn, 10 * MSS)  # the initial window: ten segments
    conn.send(b"y" * (10 * MSS), T0)  # more waits behind cwnd
    h.user(conn)
    assert h.output(t=T0) == []
    pto = 2 * SRTT
    assert _probe_at(conn) == pytest.approx(T0 + pto)
    ((t, probe),) = h.advance(T0 + pto)
    assert t == pytest.approx(T0 + pto) and probe.seq == (out[-1].seq + MSS) & 0xFFFFFFFF  # new data
    assert _probe_at(conn) is None and conn.timers.rto == pytest.approx(T0 + pto + 1.0)
    ((t, rto),) = h.advance(T0 + pto + 1.0)  # the RTO: the first segment again
    assert t == pytest.approx(T0 + pto + 1.0) and rto.seq == out[0].seq
    assert conn.loss_detector.probes == 1  # type: ignore[union-attr]
