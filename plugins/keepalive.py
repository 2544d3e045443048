"""TCP keep-alive (RFC 1122 §4.2.3.6; RFC 9293 §3.8.4, MAY-5, MUST-24..29, SHLD-12, MAY-6).

Off by default (MUST-25): a connection gets it only when ``features={"keepalive": {...}}`` (or
the configuration, or ``--feature keepalive``) asks (MUST-24). After ``idle`` seconds in which
nothing arrived from the peer and nothing of ours is outstanding (MUST-26), the connection
sends a probe with sequence number SND.UNA - 1 and no data (SHLD-12; one garbage octet with
``garbage_octet``, MAY-6), which a live peer answers with an ACK. Probes repeat every
``interval``; anything arriving from the peer starts the count again, so a lost ACK is not
fatal (MUST-29). After ``count`` unanswered probes the connection is aborted and the
application sees ``TimeoutError``.

The plugin owns the algorithm: :class:`KeepAlive` is a per-connection timer policy
(layers/tcp/policy.py, ``KeepAlivePolicy``) whose deadline the connection's timers ask for;
it uses only the connection's plugin-facing verbs (``send_idle``, ``send_keepalive_probe``,
``give_up``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.extensions import add_feature
from layers.tcp.policy import TcpSetup, decision_log
from layers.tcp.state import TcpState

if TYPE_CHECKING:
    from layers.tcp.view import ConnectionView

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


_PROBING_STATES = frozenset({TcpState.ESTABLISHED, TcpState.CLOSE_WAIT, TcpState.FIN_WAIT_2})


class KeepAlive:
    """Keep-alive probing on one connection (RFC 1122 §4.2.3.6 / RFC 9293 §3.8.4): after
    ``idle`` seconds without traffic, probe with ``<SEQ=SND.UNA-1>`` and no data (SHLD-12),
    which the peer must answer with an ACK; ``count`` unanswered probes ``interval`` apart mean
    the peer is gone."""

    __slots__ = ("at", "probes", "settings")

    def __init__(self, settings: KeepAliveSettings) -> None:
        self.settings = settings
        self.at: float | None = None
        self.probes = 0  # unanswered probes in a row

    def on_receive(self, now: float) -> None:
        # MUST-29: a lost probe ACK is tolerated: only `count` unanswered probes in a row end
        # the connection, and anything from the peer starts the count again.
        self.probes = 0
        self.at = now + self.settings.idle

    def deadline(self) -> float | None:
        return self.at

    def cancel(self) -> None:
        self.at = None

    def on_timer(self, conn: ConnectionView, now: float) -> None:
        ka = self.settings
        self.at = None
        if conn.state not in _PROBING_STATES:
            return
        if not conn.send_idle:
            self.at = now + ka.idle  # MUST-26: only when idle; retransmission covers the rest
            return
        log = decision_log(conn.label, NAME)  # rare: once per idle period
        if self.probes >= ka.count:
            log.debug("tcp.decision", decision="peer dead", probes=self.probes, rfc="RFC 1122 §4.2.3.6", t=now)
            conn.give_up("timeout", "keep-alive: the peer stopped answering", now)
            return
        self.probes += 1
        conn.send_keepalive_probe(garbage_octet=ka.garbage_octet)
        self.at = now + ka.interval
        log.debug("tcp.decision", decision="probe sent", probe=self.probes, rfc="RFC 1122 §4.2.3.6", t=now)


@hookimpl
def stack_register(registry: Registry) -> None:
    add_feature(registry, NAME, KeepAliveSettings, doc="keep-alive probes (RFC 1122 §4.2.3.6)")


@hookimpl
def tcp_connection_setup(setup: TcpSetup) -> None:
    settings = setup.features.get(NAME)
    if settings is None:
        return
    setup.claim("keepalive", by=NAME)
    setup.keepalive = KeepAlive(settings)
