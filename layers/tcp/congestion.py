"""Congestion control (RFC 5681, with RFC 6582 NewReno's recovery point and RFC 3465 byte
counting), the default algorithm every connection gets.

The connection decides *when* things happen (new data ACKed, duplicate ACK, loss detected by
three duplicates or by the retransmission timer); this class decides what that does to
``cwnd`` and ``ssthresh``. Both are in bytes (RFC 5681 §3). Other algorithms subclass it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from framework._compiled import mypyc_attr

if TYPE_CHECKING:
    from layers.tcp.policy import DecisionLog


def initial_window(mss: int, rule: str = "rfc5681") -> int:
    """The initial congestion window in bytes.

    - ``"rfc5681"``: RFC 5681 §3.1 (from RFC 3390): ``min(4*MSS, max(2*MSS, 4380))``;
    - ``"rfc6928"``: RFC 6928 §2 (Experimental; Linux's default): ``min(10*MSS, max(2*MSS, 14600))``.
    """
    if rule == "rfc6928":
        return min(10 * mss, max(2 * mss, 14600))
    return min(4 * mss, max(2 * mss, 4380))


class _NoLog:
    def debug(self, *args: Any, **kw: Any) -> None:
        return None


NO_LOG = _NoLog()
"""The log of a controller nobody gave one yet (the TCP layer's setup and the connection give
every controller its connection's decision log: docs/observability.md needs every decision
in a :class:`~framework.lazylog.LazyLog`)."""


class CongestionControlProtocol(Protocol):
    """What the connection needs of a congestion-control algorithm (the ``setup.congestion``
    slot). The connection decides *when* each event happened; the algorithm what it does to
    ``cwnd`` and ``ssthresh`` (bytes, RFC 5681 §3). :class:`CongestionControl` is the default
    and the base class of the built-in algorithms; the events are described there."""

    name: str
    mss: int
    cwnd: int
    ssthresh: int
    log: DecisionLog
    """Where window reductions are logged; the layer sets it to the connection's decision log."""

    def set_mss(self, mss: int) -> None: ...
    def set_initial_window_rule(self, rule: str) -> None: ...
    def on_ack(self, acked: int, in_flight: int, now: float, rtt: float | None = None) -> None: ...
    def on_loss(self, in_flight: int, now: float) -> None: ...
    def on_ecn(self, in_flight: int, now: float) -> None: ...
    def on_dup_ack_in_recovery(self) -> None: ...
    def on_partial_ack(self, acked: int) -> None: ...
    def on_recovery_end(self, in_flight: int) -> None: ...
    def on_timeout(self, in_flight: int, now: float) -> None: ...
    def on_idle_restart(self) -> None: ...


@mypyc_attr(allow_interpreted_subclasses=True)  # plugins (Cubic) subclass it, compiled or not
class CongestionControl:
    """RFC 5681 slow start, congestion avoidance, fast retransmit and fast recovery."""

    name = "reno"

    __slots__ = ("_ca_acked", "cwnd", "iw_rule", "log", "mss", "ssthresh")

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.log: DecisionLog = NO_LOG
        self.iw_rule = "rfc5681"
        self.cwnd = initial_window(mss)
        self.ssthresh = 1 << 30  # RFC 5681 §3.1: "arbitrarily high"
        self._ca_acked = 0

    def set_mss(self, mss: int) -> None:
        """The effective MSS became known (after the handshake) or changed (PMTU)."""
        if self.cwnd == initial_window(self.mss, self.iw_rule):
            self.cwnd = initial_window(mss, self.iw_rule)
        self.mss = mss

    def set_initial_window_rule(self, rule: str) -> None:
        """Choose the IW rule (before any data was sent)."""
        self.iw_rule = rule
        self.cwnd = initial_window(self.mss, rule)

    def on_ack(self, acked: int, in_flight: int, now: float, rtt: float | None = None) -> None:
        """*acked* bytes of new data were cumulatively acknowledged outside recovery."""
        mss = self.mss
        if self.cwnd < self.ssthresh:
            # RFC 5681 §3.1 (eq. 2) with RFC 3465 byte counting, L = 2*SMSS.
            self.cwnd += min(acked, 2 * mss)
        else:
            # RFC 5681 §3.1 (eq. 3) by bytes acked: one SMSS per cwnd of ACKed data.
            self._ca_acked += acked
            if self._ca_acked >= self.cwnd:
                self._ca_acked -= self.cwnd
                self.cwnd += mss

    def on_loss(self, in_flight: int, now: float) -> None:
        """Three duplicate ACKs: RFC 5681 §3.2 step 2 (eq. 4) and step 3."""
        self.ssthresh = max(in_flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh + 3 * self.mss
        self.decided("loss", "RFC 5681 §3.2", now)

    def decided(self, reason: str, rfc: str, now: float) -> None:
        """Log a window reduction as a decision event (debug level)."""
        self.log.debug(
            "tcp.decision",
            decision="cwnd reduced",
            reason=reason,
            rfc=rfc,
            cwnd=self.cwnd,
            ssthresh=self.ssthresh,
            t=now,
        )

    def on_ecn(self, in_flight: int, now: float) -> None:
        """An ECN echo (RFC 3168 §6.1.2): reduce as for a loss, without retransmitting and
        without fast-recovery inflation."""
        self.ssthresh = max(in_flight // 2, 2 * self.mss)
        self.cwnd = max(self.ssthresh, self.mss)
        self._ca_acked = 0
        self.decided("ECN echo", "RFC 3168 §6.1.2", now)

    def on_dup_ack_in_recovery(self) -> None:
        """RFC 5681 §3.2 step 4: inflate by one SMSS per further duplicate."""
        self.cwnd += self.mss

    def on_partial_ack(self, acked: int) -> None:
        """RFC 6582 §3.2 step 5: deflate by the amount acked, add back one SMSS if >= SMSS."""
        self.cwnd = max(self.cwnd - acked, self.mss)
        if acked >= self.mss:
            self.cwnd += self.mss

    def on_recovery_end(self, in_flight: int) -> None:
        """RFC 6582 §3.2 step 3 (full ACK), option (1): deflate to
        min(ssthresh, max(FlightSize, SMSS) + SMSS), so cwnd is never below 2 SMSS here."""
        self.cwnd = min(self.ssthresh, max(in_flight, self.mss) + self.mss)
        self._ca_acked = 0

    def on_timeout(self, in_flight: int, now: float) -> None:
        """RFC 5681 §3.1 eq. 4 and the rule after it: cwnd = 1 SMSS (RFC 6298 (5.4)-(5.6) resend from SND.UNA)."""
        self.ssthresh = max(in_flight // 2, 2 * self.mss)
        self.cwnd = self.mss
        self._ca_acked = 0
        self.decided("retransmission timeout", "RFC 5681 §3.1", now)

    def on_idle_restart(self) -> None:
        """RFC 5681 §4.1: after an idle period longer than the RTO, restart from IW."""
        self.cwnd = min(self.cwnd, initial_window(self.mss, self.iw_rule))
