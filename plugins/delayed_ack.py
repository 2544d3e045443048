"""Delayed ACK (RFC 1122 §4.2.3.2; RFC 9293 §3.8.6.3, SHLD-18, MUST-40, SHLD-19), as a
per-connection :class:`~layers.tcp.policy.AckPolicy`.

An ACK for in-order data waits at most ``timeout`` seconds (always under 0.5 s, MUST-40), and
is sent at once when at least two full-sized segments are unacknowledged (SHLD-19). The
connection itself acknowledges at once, whatever the policy, out-of-order data, data that
fills a hole (RFC 5681 §4.2) and window updates that matter (RFC 9293 §3.8.6.2.2).

Enable per connection with ``features={"delayed_ack": {"timeout": 0.04}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.extensions import add_feature
from layers.tcp.policy import AckPolicy, DecisionLog, TcpSetup, decision_log
from layers.tcp.wire import MAX_OPTION_BYTES

NAME = "delayed_ack"


def _below_half_second(value: float) -> str | None:
    return None if 0 < value < 0.5 else "must be more than 0 and less than 0.5 s (RFC 1122 §4.2.3.2)"


@dataclass(slots=True)
class DelayedAckSettings:
    timeout: float = field(default=0.04, metadata={"check": _below_half_second})
    """Longest an ACK may wait, in seconds (RFC 1122: under 0.5 s; Linux uses 40-200 ms)."""

    segments: int = field(default=2, metadata={"min": 1, "max": 16})
    """Acknowledge at once when this many full-sized segments are unacknowledged (SHLD-19: 2)."""


class DelayedAck(AckPolicy):
    """Delay ACKs for in-order data up to a deadline or a byte count."""

    __slots__ = ("_unacked", "decisions", "log", "threshold", "timeout")

    def __init__(self, settings: DelayedAckSettings, mss: int, log: DecisionLog | None = None) -> None:
        self.log = log if log is not None else decision_log("?", NAME)
        self.timeout = settings.timeout
        # RFC 5681 §2 and RFC 6691 §2: a full-sized segment from the peer holds our MSS less the
        # options it carries on every segment (12 bytes of timestamps), so a segment counts as
        # full from MSS - 40 bytes; with MSS itself two timestamped segments (2 x 1448 < 2 x 1460)
        # would wait for the timer, against SHLD-19.
        self.threshold = settings.segments * max(mss - MAX_OPTION_BYTES, 1)
        self._unacked = 0
        self.decisions = 0

    def on_data(self, seg_len: int, now: float) -> float | None:
        self._unacked += seg_len
        # RFC 9293 §3.8.6.3 (SHLD-19): an ACK for at least every second full-sized segment.
        if self._unacked >= self.threshold:
            self.log.debug(
                "tcp.decision", decision="ACK now", reason="two full-sized segments", rfc="RFC 9293 §3.8.6.3", t=now
            )
            return None
        self.decisions += 1
        deadline = now + self.timeout  # MUST-40: the delay is below 0.5 s
        self.log.debug("tcp.decision", decision="ACK delayed", rfc="RFC 1122 §4.2.3.2", deadline=deadline, t=now)
        return deadline

    def on_ack_sent(self) -> None:
        self._unacked = 0


@hookimpl
def stack_register(registry: Registry) -> None:
    add_feature(registry, NAME, DelayedAckSettings, doc="delay ACKs up to a deadline (RFC 1122 §4.2.3.2)")


@hookimpl
def tcp_connection_setup(setup: TcpSetup) -> None:
    settings = setup.feature(NAME, DelayedAckSettings)
    if settings is None:  # not enabled on this connection
        return
    setup.claim("ack_policy", by=NAME)
    setup.ack_policy = DelayedAck(settings, setup.info.mss, decision_log(setup.info.label, NAME))
