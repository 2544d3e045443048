"""A FIN in the tail loss probe, sans-IO with explicit time (RFC 8985 §7.3): after a probe no new PTO
is armed until an ACK of new data arrives (the RTO, restarted at the probe, takes over), whether the
probe is new data, the last segment again, our FIN sent again, or a new FIN; and a FIN not yet sent
when the probe fires is the probe (a previously unsent segment), alone."""

from __future__ import annotations

import pytest

from layers.tcp.wire import FIN
from tests.plugins.test_tlp_timeout import MSS, SRTT, T0, _connect, _probe_at, _send

PTO = 2 * SRTT  # more than one segment in flight (RFC 8985 §7.2)
RTO = 1.0  # min_rto


def test_a_new_fin_riding_on_the_probe_segment_arms_no_pto() -> None:
    """The probe is the last new segment (§7.3), and the FIN queued behind it rides on it: the RTO runs
    behind the probe, not a new PTO (which would send a second probe before any ACK)."""
    h, conn = _connect(min_rto=RTO)
    out = _send(h, conn, 10 * MSS)  # the initial window
    conn.send(b"y" * MSS, T0)  # waits for cwnd
    conn.close(T0)  # our FIN waits behind it
    h.user(conn)
    assert h.output(t=T0) == []
    ((t, probe),) = h.advance(T0 + PTO)
    assert t == pytest.approx(T0 + PTO)
    assert probe.seq == (out[-1].seq + MSS) & 0xFFFFFFFF and len(probe.payload) == MSS
    assert probe.flags & FIN
    assert _probe_at(conn) is None and conn.timers.rto == pytest.approx(T0 + PTO + RTO)
    assert h.advance(T0 + PTO + RTO - 1e-6) == []  # no second probe
    ((t, rto),) = h.advance(T0 + PTO + RTO)
    assert t == pytest.approx(T0 + PTO + RTO) and rto.seq == out[0].seq and conn.loss_detector.probes == 1  # type: ignore[union-attr]


def test_a_fin_not_yet_sent_is_the_probe_and_arms_no_pto() -> None:
    """The application closes as the PTO fires: the FIN is a previously unsent segment, so it is the
    probe (§7.3), alone, not the last segment again followed by the FIN; and it arms no PTO."""
    h, conn = _connect(min_rto=RTO)
    out = _send(h, conn, 2 * MSS)
    conn.close(T0 + PTO)  # queued; it goes out with the timer's output
    ((t, probe),) = h.advance(T0 + PTO)
    assert t == pytest.approx(T0 + PTO)
    assert probe.flags & FIN and not probe.payload and probe.seq == (out[-1].seq + MSS) & 0xFFFFFFFF
    assert conn.retransmits == 0
    assert _probe_at(conn) is None and conn.timers.rto == pytest.approx(T0 + PTO + RTO)
    assert h.advance(T0 + PTO + RTO - 1e-6) == []


def test_our_fin_sent_again_as_the_probe_arms_no_pto() -> None:
    """Data and FIN out, all unacknowledged: the probe is the last segment with the FIN again (§7.3);
    nothing but the RTO runs behind it."""
    h, conn = _connect(min_rto=RTO)
    conn.send(b"x" * (2 * MSS), T0)
    conn.close(T0)
    h.user(conn)
    out = h.output(t=T0)
    assert len(out) == 2 and out[-1].flags & FIN
    ((t, probe),) = h.advance(T0 + PTO)
    assert t == pytest.approx(T0 + PTO)
    assert (probe.seq, probe.payload) == (out[-1].seq, out[-1].payload) and probe.flags & FIN
    assert _probe_at(conn) is None and conn.timers.rto == pytest.approx(T0 + PTO + RTO)
    assert h.advance(T0 + PTO + RTO - 1e-6) == []


def test_a_fin_sent_after_the_probe_and_before_any_ack_arms_no_pto() -> None:
    """The probe was new data; the application closes before any ACK: its FIN is new, but a probe is
    out (§7.2: no PTO while a loss probe is outstanding), so the RTO stays in charge."""
    h, conn = _connect(min_rto=RTO)
    _send(h, conn, 10 * MSS)
    conn.send(b"y" * MSS, T0)
    h.user(conn)
    assert h.output(t=T0) == []
    ((t, probe),) = h.advance(T0 + PTO)
    assert t == pytest.approx(T0 + PTO)
    assert len(probe.payload) == MSS and not probe.flags & FIN
    t1 = T0 + PTO + 0.01
    conn.close(t1)
    h.user(conn)
    (fin,) = h.output(t=t1)
    assert fin.flags & FIN
    assert _probe_at(conn) is None and conn.timers.rto == pytest.approx(T0 + PTO + RTO)
    assert h.advance(T0 + PTO + RTO - 1e-6) == []
