"""Retransmission timeout estimation (RFC 6298).

All times are seconds as floats. The minimum RTO is configurable: RFC 6298 (2.4) says 1 s
("SHOULD"); many stacks (Linux: 200 ms) use less, and the configuration documents the choice.
"""

from __future__ import annotations

RTO_INITIAL = 1.0  # RFC 6298 (2.1)
RTO_AFTER_SYN_TIMEOUT = 3.0  # RFC 6298 (5.7)
ALPHA = 1 / 8  # RFC 6298 (2.3)
BETA = 1 / 4
K = 4
CLOCK_GRANULARITY = 0.001  # G: our clock is a float of seconds; 1 ms is what we claim


class RttEstimator:
    """SRTT, RTTVAR and RTO with exponential backoff (RFC 6298 §2, §5)."""

    __slots__ = ("backoff", "latest", "max_rto", "min_rto", "min_rtt", "rto", "rttvar", "samples", "srtt")

    def __init__(self, *, min_rto: float = 1.0, max_rto: float = 60.0, initial: float = RTO_INITIAL) -> None:
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = max(min_rto, min(initial, max_rto))
        self.backoff = 0
        self.samples = 0
        self.min_rtt: float | None = None
        self.latest: float | None = None

    def sample(self, r: float) -> None:
        """Take one RTT measurement *r* (never from a retransmitted segment: Karn, RFC 6298 §3)."""
        if r < 0:
            return
        self.samples += 1
        self.latest = r
        if self.min_rtt is None or r < self.min_rtt:
            self.min_rtt = r
        if self.srtt is None:
            # RFC 6298 (2.2): first measurement.
            self.srtt = r
            self.rttvar = r / 2
        else:
            # RFC 6298 (2.3): RTTVAR before SRTT, with the old SRTT.
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - r)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * r
        self.backoff = 0  # RFC 6298 (5.7) note: a new sample ends the backoff
        self._update()

    def _update(self) -> None:
        if self.srtt is None:
            return
        rto = self.srtt + max(CLOCK_GRANULARITY, K * self.rttvar)
        # RFC 6298 (2.4) lower bound, (2.5) optional upper bound.
        self.rto = min(max(rto, self.min_rto), self.max_rto)

    def current(self) -> float:
        """The RTO to arm now, with the backoff applied (RFC 6298 (5.5)), capped at max."""
        return min(self.rto * (1 << self.backoff), self.max_rto)

    def back_off(self) -> None:
        """RFC 6298 (5.5): double the RTO on every retransmission timeout."""
        if self.rto * (1 << self.backoff) < self.max_rto:
            self.backoff += 1

    def reset_after_syn_timeout(self) -> None:
        """RFC 6298 (5.7): if the SYN or SYN-ACK timed out and no sample exists yet, use 3 s
        once data transmission begins."""
        if self.srtt is None:
            self.rto = max(self.rto, min(RTO_AFTER_SYN_TIMEOUT, self.max_rto))
        self.backoff = 0
