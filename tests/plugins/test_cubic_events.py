"""CUBIC's responses to congestion events other than duplicate ACKs (RFC 9438 §4.6, §4.8)."""

from __future__ import annotations

import pytest

from plugins.congestion.cubic import BETA, Cubic

MSS = 1000


def grown(cwnd: int) -> Cubic:
    c = Cubic(MSS)
    c.ssthresh = 1000  # in congestion avoidance
    c.cwnd = cwnd
    return c


def test_ecn_echo_reduces_by_beta_and_starts_a_new_epoch() -> None:
    """RFC 9438 §4.6 / RFC 3168 §6.1.2: an ECN echo is a congestion event: cwnd = ssthresh = beta * cwnd, and
    the next ACK starts a new epoch from there instead of the old curve."""
    c = grown(100_000)
    c.on_ack(MSS, 100_000, 0.0, rtt=0.05)  # an epoch is running
    cwnd = c.cwnd
    c.on_ecn(100_000, 1.0)
    assert c.cwnd == c.ssthresh == int(cwnd * BETA)
    assert c.epoch_start is None
    before = c.cwnd
    c.on_ack(MSS, c.cwnd, 1.01, rtt=0.05)
    assert before <= c.cwnd < before + 2 * MSS  # no jump back to the old window


def test_first_epoch_after_a_timeout_has_k_zero() -> None:
    """RFC 9438 §4.8: in the first congestion avoidance after a timeout, K = 0 and W_max is the window at its
    beginning."""
    c = grown(100_000)
    c.on_timeout(100_000, 0.0)
    assert c.cwnd == MSS
    c.cwnd = c.ssthresh  # slow start has brought it back to ssthresh
    c.on_ack(MSS, c.cwnd, 5.0, rtt=0.05)
    assert c.k == 0.0
    assert c.w_max == pytest.approx(c.ssthresh / MSS, rel=0.01)
