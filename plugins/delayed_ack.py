"""Delayed ACK (RFC 1122 §4.2.3.2; RFC 9293 §3.8.6.3, SHLD-18, MUST-40, SHLD-19), as a
per-connection ACK policy (:class:`~layers.tcp.policy.AckPolicyProtocol`).

An ACK for in-order data waits at most ``timeout`` seconds (always under 0.5 s, MUST-40), and
is sent at once when at least two full-sized segments are unacknowledged (SHLD-19). The
connection itself acknowledges at once, whatever the policy, out-of-order data, data that
fills a hole (RFC 5681 §4.2) and window updates that matter (RFC 9293 §3.8.6.2.2).

The policy object, :class:`DelayedAck`, lives in :mod:`layers.tcp.builtin_hooks`, compiled with
the rest of the per-segment path (plugins may still subclass it, as
``examples/tcpstack-example-quickack`` does); this plugin registers the feature and installs it.

Enable per connection with ``features={"delayed_ack": {"timeout": 0.04}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.builtin_hooks import DelayedAck
from layers.tcp.extensions import add_feature
from layers.tcp.policy import TcpSetup, decision_log

NAME = "delayed_ack"


def _below_half_second(value: float) -> str | None:
    return None if 0 < value < 0.5 else "must be more than 0 and less than 0.5 s (RFC 1122 §4.2.3.2)"


@dataclass(slots=True)
class DelayedAckSettings:
    timeout: float = field(default=0.04, metadata={"check": _below_half_second})
    """Longest an ACK may wait, in seconds (RFC 1122: under 0.5 s; Linux uses 40-200 ms)."""

    segments: int = field(default=2, metadata={"min": 1, "max": 16})
    """Acknowledge at once when this many full-sized segments are unacknowledged (SHLD-19: 2)."""


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


__all__ = ["NAME", "DelayedAck", "DelayedAckSettings"]
