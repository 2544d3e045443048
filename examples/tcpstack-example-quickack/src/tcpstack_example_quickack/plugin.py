"""The ``quickack`` feature: acknowledge the first data segments of a connection at once, then
delay ACKs like RFC 1122 §4.2.3.2 allows (what Linux calls quick-ACK mode).

At the start of a connection the peer's congestion window grows with every ACK it gets
(slow start, RFC 5681 §3.1), so delaying those first ACKs slows the peer down for nothing.
This policy ACKs the first ``quick`` in-order data segments immediately; after that it is the
built-in ``delayed_ack`` policy, which it extends by subclassing: an ACK waits at most
``timeout`` seconds (under 0.5 s, RFC 1122 §4.2.3.2 and RFC 9293 MUST-40) and leaves at once
when two full-sized segments are unacknowledged (RFC 9293 §3.8.6.3, SHLD-19).
Out-of-order data is acknowledged at once by the connection itself whatever the policy says
(RFC 5681 §4.2).

Off unless a connection, a listener or the stack's ``features`` table names it:
``open_connection(host, port, features={"quickack": {"quick": 4}, "delayed_ack": False})``. It installs an ACK
policy, so it cannot be combined with ``delayed_ack`` on the same connection (both claim the
``ack_policy`` slot; tcpstack reports the clash instead of picking one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tcpstack.plugin import (
    DecisionLog,
    DelayedAck,
    DelayedAckSettings,
    Registry,
    TcpSetup,
    add_feature,
    decision_log,
    hookimpl,
)

NAME = "quickack"


@dataclass(slots=True)
class QuickAckSettings(DelayedAckSettings):
    """``timeout`` and ``segments`` as for ``delayed_ack``, plus the length of the quick phase."""

    quick: int = field(default=8, metadata={"min": 0, "max": 1000})
    """In-order data segments acknowledged at once at the start of the connection."""


class QuickAck(DelayedAck):
    """ACK the first ``quick`` data segments at once, then behave as ``delayed_ack``: an ACK
    waits at most ``timeout`` and leaves at once every ``segments`` full-sized segments."""

    __slots__ = ("quick_left",)

    def __init__(self, settings: QuickAckSettings, mss: int, log: DecisionLog | None = None) -> None:
        super().__init__(settings, mss, log if log is not None else decision_log("?", NAME))
        self.quick_left = settings.quick

    def on_data(self, seg_len: int, now: float) -> float | None:
        if self.quick_left > 0:
            # The peer is in slow start (RFC 5681 §3.1): every ACK opens its window, so send it now.
            self.quick_left -= 1
            self.log.debug("tcp.decision", decision="ACK now", reason="quick-ACK phase", rfc="RFC 5681 §3.1", t=now)
            return None
        return super().on_data(seg_len, now)  # RFC 1122 §4.2.3.2, RFC 9293 §3.8.6.3


@hookimpl
def stack_register(registry: Registry) -> None:
    add_feature(registry, NAME, QuickAckSettings, doc="ACK the first segments at once, then delay ACKs")


@hookimpl
def tcp_connection_setup(setup: TcpSetup) -> None:
    settings = setup.feature(NAME, QuickAckSettings)
    if settings is None:  # not enabled on this connection: change nothing
        return
    setup.claim("ack_policy", by=NAME)
    setup.ack_policy = QuickAck(settings, setup.info.mss, decision_log(setup.info.label, NAME))
