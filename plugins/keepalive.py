"""TCP keep-alive (RFC 1122 §4.2.3.6; RFC 9293 §3.8.4, MAY-5, MUST-24..29, SHLD-12, MAY-6).

Off by default (MUST-25): a connection gets it only when ``features={"keepalive": {...}}`` (or
the configuration, or ``--feature keepalive``) asks (MUST-24). After ``idle`` seconds in which
nothing arrived from the peer and nothing of ours is outstanding (MUST-26), the connection
sends a probe with sequence number SND.UNA - 1 and no data (SHLD-12; one garbage octet with
``garbage_octet``, MAY-6), which a live peer answers with an ACK. Probes repeat every
``interval``; anything arriving from the peer starts the count again, so a lost ACK is not
fatal (MUST-29). After ``count`` unanswered probes the connection is aborted and the
application sees ``TimeoutError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.extensions import add_feature
from layers.tcp.policy import TcpSetup

NAME = "keepalive"


@dataclass(slots=True)
class KeepAliveSettings:
    idle: float = field(default=7200.0, metadata={"min": 0.1, "max": 86400.0 * 30})
    """Seconds without traffic before the first probe (MUST-27 configurable; MUST-28 default
    at least two hours)."""

    interval: float = field(default=75.0, metadata={"min": 0.1, "max": 86400.0})
    """Seconds between unanswered probes."""

    count: int = field(default=9, metadata={"min": 1, "max": 1000})
    """Unanswered probes after which the peer is declared dead."""

    garbage_octet: bool = False
    """Send one garbage octet in each probe, for peers that ignore zero-length probes (MAY-6)."""


@hookimpl
def stack_register(registry: Registry) -> None:
    add_feature(registry, NAME, KeepAliveSettings, doc="keep-alive probes (RFC 1122 §4.2.3.6)")


@hookimpl
def tcp_connection_setup(setup: TcpSetup) -> None:
    settings = setup.features.get(NAME)
    if settings is None:
        return
    setup.claim("keepalive", by=NAME)
    setup.keepalive = settings
