"""The tail loss probe's floor (the ``rack_tlp`` feature's ``pto_min``), sans-IO with explicit time:
with SRTT below a millisecond (namespace and TUN paths) RFC 8985 §7.2's 2*SRTT is under timer and
scheduling granularity, so the PTO is at least ``pto_min`` (10 ms by default), and still never
later than the RTO (§7.2)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from framework.errors import ConfigError
from layers.tcp.connection import TcpConnection
from layers.tcp.policy import TcpOptions
from layers.tcp.rack import PTO_MIN, WC_DEL_ACK, Rack
from layers.tcp.wire import ACK, SYN, TcpRepr
from tests.layers.tcp.helpers import REMOTE_PORT, REMOTE_SEQ, SEND, LayerHarness

MSS = 1000
SRTT = 0.0003  # 300 µs: the handshake's RTT sample (SYN-ACK at 0.0, its ACK at SRTT)
T0 = 1.0


def _connect(rack: dict[str, object], min_rto: float = 1.0) -> tuple[LayerHarness, TcpConnection]:
    features: dict[str, object] = {"sack": {}, "rack_tlp": rack}
    h = LayerHarness(features=features)
    h.tcp.listen(80, options=TcpOptions(features=features, min_rto=min_rto))
    syn = replace(SEND, src_port=REMOTE_PORT, dst_port=80, seq=REMOTE_SEQ, ack=0, flags=SYN, window=65535)
    (synack,) = h.inject(syn, t=0.0, options=bytes([2, 4, MSS >> 8, MSS & 0xFF, 4, 2, 1, 1]))
    assert synack.flags == SYN | ACK
    ack = replace(SEND, src_port=REMOTE_PORT, dst_port=80, seq=REMOTE_SEQ + 1, ack=synack.seq + 1, window=65535)
    assert h.inject(ack, t=SRTT) == []
    conn = next(iter(h.tcp.connections.values()))
    assert conn.rtt.srtt == pytest.approx(SRTT) and isinstance(conn.loss_detector, Rack)
    return h, conn


def _send(h: LayerHarness, conn: TcpConnection, segments: int) -> list[TcpRepr]:
    conn.send(b"x" * (segments * MSS), T0)
    h.user(conn)
    out = h.output(t=T0)
    assert len(out) == segments
    return out


def _probe_at(conn: TcpConnection) -> float | None:
    rack = conn.loss_detector
    assert isinstance(rack, Rack)
    return rack.probe.at


def test_below_a_millisecond_of_srtt_the_probe_waits_for_the_floor() -> None:
    """2*SRTT = 0.6 ms: without a floor the probe would go 0.6 ms after the data, before the ACK of
    a path this short could have been read and processed; it goes at PTO_MIN (10 ms)."""
    h, conn = _connect({})
    out = _send(h, conn, 3)
    assert PTO_MIN == 0.01
    assert _probe_at(conn) == pytest.approx(T0 + PTO_MIN)
    assert h.advance(T0 + PTO_MIN - 1e-6) == []  # nothing at 2*SRTT
    ((t, probe),) = h.advance(T0 + PTO_MIN)
    assert t == pytest.approx(T0 + PTO_MIN) and (probe.seq, probe.payload) == (out[-1].seq, out[-1].payload)


def test_the_floor_is_a_setting() -> None:
    """``pto_min`` sets the floor: 2 ms (Linux's 2 jiffies at HZ=1000)."""
    h, conn = _connect({"pto_min": 0.002})
    _send(h, conn, 3)
    assert _probe_at(conn) == pytest.approx(T0 + 0.002)


def test_without_a_floor_the_probe_timeout_is_2_srtt() -> None:
    """``pto_min = 0``: RFC 8985 §7.2's PTO = 2*SRTT as it stands."""
    h, conn = _connect({"pto_min": 0.0})
    _send(h, conn, 3)
    assert _probe_at(conn) == pytest.approx(T0 + 2 * SRTT)


def test_one_segment_adds_wcdelackt_above_the_floor() -> None:
    """FlightSize of one segment: 2*SRTT + WCDelAckT (200.6 ms) is above the floor and stays."""
    h, conn = _connect({})
    _send(h, conn, 1)
    assert _probe_at(conn) == pytest.approx(T0 + 2 * SRTT + WC_DEL_ACK)


def test_the_floor_never_puts_the_probe_after_the_rto() -> None:
    """RFC 8985 §7.2: a PTO later than the RTO yields to it. A floor of 0.5 s against an RTO of 0.2 s
    (min_rto): the probe goes at the RTO's time, in its place."""
    h, conn = _connect({"pto_min": 0.5}, min_rto=0.2)
    out = _send(h, conn, 3)
    assert conn.timers.rto == pytest.approx(T0 + 0.2)
    assert _probe_at(conn) == pytest.approx(T0 + 0.2)
    ((t, probe),) = h.advance(T0 + 0.2)
    assert t == pytest.approx(T0 + 0.2) and (probe.seq, probe.payload) == (out[-1].seq, out[-1].payload)
    assert conn.loss_detector.probes == 1  # type: ignore[union-attr]


def test_a_floor_outside_its_range_is_refused() -> None:
    """The setting is checked: a negative floor or one above a second is a configuration error."""
    with pytest.raises(ConfigError, match=r"rack_tlp\.pto_min: -0\.001 is out of range"):
        _connect({"pto_min": -0.001})
