"""RACK-TLP loss detection (RFC 8985), on top of SACK, as a per-connection feature.

- RACK (§6): every data segment's (re)transmission time is recorded. When an ACK delivers a
  segment (cumulatively or by SACK), RACK remembers the most recently *sent* delivered one and
  its RTT. A segment still undelivered that was sent before it is lost once
  ``RACK.rtt + reo_wnd`` has passed since it was sent (§6.2 step 5); before that a reorder
  timer fires at that moment. ``reo_wnd`` is min_RTT / 4, at most SRTT (§6.2 step 4). Lost
  segments feed the SACK scoreboard, so RFC 6675 recovery retransmits them.
- TLP (§7): with data in flight and no recovery under way, a probe timeout (PTO) of
  2 * SRTT (plus 200 ms when one segment is in flight, for a delayed ACK) runs ahead of the
  RTO. When it fires, one new segment goes out, or the last segment is sent again, so a lost
  tail is detected by the ACK that follows instead of by the RTO.

A retransmission whose RTT would be shorter than min_RTT is ignored for the RACK update
(§6.2 step 2: its ACK is probably for the original). Needs the ``sack`` feature; without SACK
negotiated the feature does nothing. On by default (as in Linux); off per connection with
``features={"rack_tlp": False}``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.policy import Extension, TcpSetup, decision_log

NAME = "rack_tlp"
WC_DEL_ACK = 0.2  # RFC 8985 §7.2: WCDelAckT, the worst-case delayed-ACK time


@dataclass(slots=True)
class RackTlpSettings:
    tlp: bool = True
    """Send tail loss probes (RFC 8985 §7); RACK loss detection is always on with the feature."""

    reo_wnd_fraction: float = field(default=0.25, metadata={"min": 0.0, "max": 1.0})
    """The reordering window as a fraction of min_RTT (RFC 8985 §6.2 step 4: 1/4)."""


@dataclass(slots=True, eq=False)
class _Sent:
    start: int
    end: int
    xmit_ts: float
    rexmit: bool
    delivered: bool = False
    lost: bool = False


class Rack:
    """Per-connection RACK state (positions as in the SACK scoreboard)."""

    __slots__ = (
        "by_start",
        "dsack_seen",
        "end",
        "fraction",
        "log",
        "lost_marked",
        "order",
        "probes",
        "recoveries_since_dsack",
        "reo_wnd_mult",
        "reordering_seen",
        "rtt",
        "xmit_ts",
    )

    def __init__(self, fraction: float, log: Any = None) -> None:
        self.log = log if log is not None else decision_log("?", NAME)
        self.by_start: dict[int, _Sent] = {}
        self.order: deque[_Sent] = deque()  # in first-transmission order
        self.xmit_ts = -1.0  # RACK.xmit_ts
        self.end = -1  # RACK.end_seq
        self.rtt = 0.0  # RACK.rtt
        self.fraction = fraction
        self.lost_marked = 0
        self.probes = 0
        self.reordering_seen = False  # RFC 8985 §6.2 step 3
        self.reo_wnd_mult = 1  # RFC 8985 §6.2 step 4: grows with D-SACKs
        self.dsack_seen = False
        self.recoveries_since_dsack = 0

    def on_sent(self, start: int, end: int, now: float, rexmit: bool) -> None:
        seg = self.by_start.get(start)
        if seg is not None:
            seg.xmit_ts = now
            seg.rexmit = seg.rexmit or rexmit
            seg.lost = False
            seg.end = max(seg.end, end)
            return
        seg = _Sent(start, end, now, rexmit)
        self.by_start[start] = seg
        self.order.append(seg)

    def on_dsack(self) -> None:
        """RFC 8985 §6.2 step 4: a D-SACK means a spurious retransmission: widen reo_wnd
        (once per round of recoveries)."""
        if not self.dsack_seen:
            self.reo_wnd_mult += 1
            self.dsack_seen = True
            self.log.debug("tcp.decision", decision="reo_wnd widened", mult=self.reo_wnd_mult, rfc="RFC 8985 §6.2")
        self.recoveries_since_dsack = 0

    def on_recovery(self) -> None:
        """RFC 8985 §6.2 step 4: after 16 recoveries without a D-SACK, reset the multiplier."""
        self.dsack_seen = False
        self.recoveries_since_dsack += 1
        if self.recoveries_since_dsack >= 16:
            self.reo_wnd_mult = 1
            self.recoveries_since_dsack = 0

    def _deliver(self, seg: _Sent, now: float, min_rtt: float | None) -> None:
        seg.delivered = True
        if seg.end < self.end:
            self.reordering_seen = True  # RFC 8985 §6.2 step 3: delivered below RACK.end_seq
        rtt = now - seg.xmit_ts
        if seg.rexmit and min_rtt is not None and rtt < min_rtt:
            return  # §6.2 step 2: probably the ACK of an earlier transmission
        if seg.xmit_ts > self.xmit_ts or (seg.xmit_ts == self.xmit_ts and seg.end > self.end):
            self.xmit_ts = seg.xmit_ts
            self.end = seg.end
            self.rtt = rtt

    def on_ack(self, una: int, sacked: list[tuple[int, int]], now: float, min_rtt: float | None) -> None:
        """Update RACK from what this ACK delivered (RFC 8985 §6.2 steps 1-2)."""
        order = self.order
        while order and order[0].end <= una:
            seg = order.popleft()
            self.by_start.pop(seg.start, None)
            if not seg.delivered:
                self._deliver(seg, now, min_rtt)
        for start, end in sacked:
            pos = start
            while pos < end:
                found = self.by_start.get(pos)
                if found is None or found.end > end:
                    break
                if not found.delivered:
                    self._deliver(found, now, min_rtt)
                pos = found.end

    def reo_wnd(self, min_rtt: float | None, srtt: float | None, *, in_recovery: bool = False) -> float:
        """RFC 8985 §6.2 step 4: zero while no reordering was seen and recovery is under way;
        else reo_wnd_mult * fraction * min_RTT, at most SRTT."""
        if not self.reordering_seen and in_recovery:
            return 0.0
        wnd = self.reo_wnd_mult * (min_rtt or 0.0) * self.fraction
        return min(wnd, srtt) if srtt is not None else wnd

    def detect_loss(
        self, now: float, min_rtt: float | None, srtt: float | None, *, in_recovery: bool = False
    ) -> tuple[list[_Sent], float | None]:
        """RFC 8985 §6.2 steps 4-5: the segments now deemed lost, and when to look again."""
        reo_wnd = self.reo_wnd(min_rtt, srtt, in_recovery=in_recovery)
        lost: list[_Sent] = []
        wait: float | None = None
        for seg in self.order:
            if seg.delivered or seg.lost:
                continue
            if seg.xmit_ts > self.xmit_ts or (seg.xmit_ts == self.xmit_ts and seg.end >= self.end):
                continue  # not sent before the most recently delivered segment
            remaining = seg.xmit_ts + self.rtt + reo_wnd - now
            if remaining <= 0:
                seg.lost = True
                lost.append(seg)
            elif wait is None or remaining > wait:
                wait = remaining
        self.lost_marked += len(lost)
        return lost, (now + wait if wait is not None else None)


class RackTlp(Extension):
    """Installs :class:`Rack` on the connection once SACK is in use."""

    name = NAME
    order = 95  # after sack (90), whose negotiation creates the scoreboard
    __slots__ = ("log", "settings")

    def __init__(self, settings: RackTlpSettings, log: Any = None) -> None:
        self.settings = settings
        self.log = log if log is not None else decision_log("?", NAME)

    def on_peer_syn(self, conn: Any, syn: Any, now: float) -> None:
        if conn.scoreboard is None:  # RFC 8985 §3: RACK-TLP needs SACK
            self.log.debug("tcp.decision", decision="RACK-TLP off", reason="no SACK", rfc="RFC 8985 §3", t=now)
            return
        conn.rack = Rack(self.settings.reo_wnd_fraction, self.log)
        conn.tlp_enabled = self.settings.tlp
        self.active = True


@hookimpl
def stack_register(registry: Registry) -> None:
    registry.add_feature(NAME, RackTlpSettings, doc="RACK loss detection and tail loss probes (RFC 8985)")


@hookimpl
def tcp_connection_setup(setup: TcpSetup) -> None:
    settings = setup.features.get(NAME)
    if settings is None:
        return
    setup.claim(NAME, by=NAME)
    setup.extensions.append(RackTlp(settings, decision_log(setup.info.label, NAME)))
