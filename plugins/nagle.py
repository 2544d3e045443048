"""The Nagle algorithm (RFC 896; RFC 9293 §3.7.4, SHLD-7, MUST-17) and a cork mode, as a
per-connection :class:`~layers.tcp.policy.SendPolicy`.

While data is unacknowledged, a segment shorter than the effective send MSS waits until the
outstanding data is acknowledged or a full segment can be sent. The comparison is against the
effective MSS, which already accounts for TCP options such as timestamps, so timestamped
full segments are full and Nagle never degrades into stop-and-wait (the PyTCP 3.0 bug).

Disabling the feature on a connection is what ``TCP_NODELAY`` does elsewhere (MUST-17).
``cork = true`` holds every short segment, even with nothing in flight, until a full
segment can go or the sender SWS override timer (``sws_override``, 0.2 s) fires, like Linux's
``TCP_CORK``.
"""

from __future__ import annotations

from dataclasses import dataclass

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.extensions import add_feature
from layers.tcp.policy import DecisionLog, SendPolicy, TcpSetup, decision_log

NAME = "nagle"


@dataclass(slots=True)
class NagleSettings:
    cork: bool = False
    """Hold short segments even when nothing is in flight (TCP_CORK), up to ``sws_override``."""


class Nagle(SendPolicy):
    """RFC 896: at most one short segment in flight."""

    __slots__ = ("cork", "held", "log")

    def __init__(self, settings: NagleSettings, log: DecisionLog | None = None) -> None:
        self.cork = settings.cork
        self.held = 0
        self.log = log if log is not None else decision_log("?", NAME)

    def may_send_small(self, size: int, in_flight: int, now: float) -> bool:
        if self.cork or in_flight > 0:
            self.held += 1
            self.log.debug(
                "tcp.decision",
                decision="segment held",
                rfc="RFC 896; RFC 9293 §3.7.4",
                size=size,
                in_flight=in_flight,
                cork=self.cork,
                t=now,
            )
            return False
        return True


@hookimpl
def stack_register(registry: Registry) -> None:
    add_feature(registry, NAME, NagleSettings, doc="Nagle algorithm and cork mode (RFC 896, RFC 9293 §3.7.4)")


@hookimpl
def tcp_connection_setup(setup: TcpSetup) -> None:
    settings = setup.feature(NAME, NagleSettings)
    if settings is None:  # off on this connection: what TCP_NODELAY does elsewhere (MUST-17)
        return
    setup.claim("send_policy", by=NAME)
    setup.send_policy = Nagle(settings, decision_log(setup.info.label, NAME))
