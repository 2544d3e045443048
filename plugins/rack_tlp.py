"""RACK-TLP loss detection (RFC 8985), on top of SACK, as a per-connection feature.

- RACK (§6): every data segment's (re)transmission time is recorded. When an ACK delivers a
  segment (cumulatively or by SACK), RACK remembers the most recently *sent* delivered one and
  its RTT. A segment still undelivered that was sent before it is lost once
  ``RACK.rtt + reo_wnd`` has passed since it was sent (§6.2 step 5); before that a reorder
  timer fires at that moment. ``reo_wnd`` is min_RTT / 4, at most SRTT (§6.2 step 4). Lost
  segments feed the SACK scoreboard, so RFC 6675 recovery retransmits them.
- TLP (§7): with data in flight and no recovery under way, a probe timeout (PTO) of
  2 * SRTT (plus 200 ms when one segment is in flight, for a delayed ACK; at least ``pto_min``,
  10 ms) runs ahead of the RTO. When it fires, one new segment goes out, or the last segment is sent again, so a lost
  tail is detected by the ACK that follows instead of by the RTO.

A retransmission whose RTT would be shorter than min_RTT is ignored for the RACK update
(§6.2 step 2: its ACK is probably for the original). Needs the ``sack`` feature; without SACK
negotiated the feature does nothing. On by default (as in Linux); off per connection with
``features={"rack_tlp": False}``.

This module is the registration: the feature, its settings, and the :class:`RackTlp` extension
that installs the loss detector when the SYN exchange negotiated SACK. The per-segment state
machine, :class:`~layers.tcp.rack.Rack` (the connection's ``LossDetector``, with RACK's reorder
timer) and :class:`~layers.tcp.rack.TailLossProbe` (TLP's probe timeout, run before the RTO,
§7.3), lives in layers/tcp/rack.py, compiled with mypyc: it runs for every segment sent and
every ACK, where a pluggy module (whose ``@hookimpl`` functions cannot be compiled) would cost
interpreted time (docs/architecture.md "RACK-TLP cost"). It reaches the connection only through
its plugin-facing verbs (``mark_lost``, ``start_loss_recovery``, ``request_tail_probe``,
``install_loss_detector``) and read-only fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.extensions import add_feature
from layers.tcp.policy import Extension, TcpSetup, decision_log
from layers.tcp.rack import NAME, PTO_MIN, WC_DEL_ACK, Rack, Sent, TailLossProbe

if TYPE_CHECKING:
    from layers.tcp.policy import DecisionLog
    from layers.tcp.view import ConnectionView
    from layers.tcp.wire import TcpRepr

__all__ = ["NAME", "PTO_MIN", "WC_DEL_ACK", "Rack", "RackTlp", "RackTlpSettings", "Sent", "TailLossProbe"]


@dataclass(slots=True)
class RackTlpSettings:
    tlp: bool = True
    """Send tail loss probes (RFC 8985 §7); RACK loss detection is always on with the feature."""

    reo_wnd_fraction: float = field(default=0.25, metadata={"min": 0.0, "max": 1.0})
    """The reordering window as a fraction of min_RTT (RFC 8985 §6.2 step 4: 1/4)."""

    pto_min: float = field(default=PTO_MIN, metadata={"min": 0.0, "max": 1.0})
    """The probe timeout's floor in seconds: PTO = max(2*SRTT (+ WCDelAckT), pto_min), still never
    later than the RTO (RFC 8985 §7.2). Below a millisecond of SRTT 2*SRTT is under timer and
    scheduling granularity and probes would go before the ACK could be processed (Linux floored
    the PTO at 10 ms before 4.13, and adds 2 jiffies since)."""


class RackTlp(Extension):
    """Installs :class:`Rack` on the connection once SACK is in use."""

    name = NAME
    order = 95  # after sack (90), whose negotiation creates the scoreboard
    __slots__ = ("log", "settings")

    def __init__(self, settings: RackTlpSettings, log: DecisionLog | None = None) -> None:
        self.settings = settings
        self.log = log if log is not None else decision_log("?", NAME)

    def on_peer_syn(self, conn: ConnectionView, syn: TcpRepr, now: float) -> None:
        if conn.scoreboard is None:  # RFC 8985 §3: RACK-TLP needs SACK
            self.log.debug("tcp.decision", decision="RACK-TLP off", reason="no SACK", rfc="RFC 8985 §3", t=now)
            return
        settings = self.settings
        conn.install_loss_detector(
            Rack(settings.reo_wnd_fraction, self.log, tlp=settings.tlp, pto_min=settings.pto_min)
        )
        self.active = True


@hookimpl
def stack_register(registry: Registry) -> None:
    add_feature(registry, NAME, RackTlpSettings, doc="RACK loss detection and tail loss probes (RFC 8985)")


@hookimpl
def tcp_connection_setup(setup: TcpSetup) -> None:
    settings = setup.features.get(NAME)
    if settings is None:
        return
    setup.claim(NAME, by=NAME)
    setup.extensions.append(RackTlp(settings, decision_log(setup.info.label, NAME)))
