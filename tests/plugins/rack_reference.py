"""The RACK-TLP state machine as plugins/rack_tlp.py had it before it moved to layers/tcp/rack.py
(commit 6bb575d), kept verbatim as the reference for the differential tests
(tests/plugins/test_rack_differential.py): a SortedList of every waiting segment, the probe
timeout armed on every segment. Only the imports changed, and the deliberate behaviour changes
made since in layers/tcp/rack.py, applied here the same way so the differential tests keep
comparing the data structures: the PTO's floor (``pto_min``, PTO_MIN), and no PTO armed while a
probe is out until an ACK of new data (``TailLossProbe.una``; a FIN sent meanwhile arms none)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sortedcontainers import SortedList

from layers.tcp.policy import TimerPolicy, decision_log

if TYPE_CHECKING:
    from layers.tcp.policy import DecisionLog
    from layers.tcp.view import ConnectionView

NAME = "rack_tlp"
WC_DEL_ACK = 0.2  # RFC 8985 §7.2: WCDelAckT, the worst-case delayed-ACK time
PTO_MIN = 0.01  # the PTO's floor, as layers/tcp/rack.py


@dataclass(slots=True, eq=False)
class _Sent:
    start: int
    end: int
    xmit_ts: float
    rexmit: bool
    delivered: bool = False
    lost: bool = False


class TailLossProbe:
    """TLP's probe timeout (RFC 8985 §7.2-§7.3), a timer that runs before the RTO."""

    __slots__ = ("at", "floor", "rack", "sent", "una")

    def __init__(self, rack: Rack, floor: float = PTO_MIN) -> None:
        self.rack = rack
        self.floor = floor
        self.at: float | None = None
        self.sent = False  # RFC 8985 §7.3: a probe is out: nothing sent re-arms the PTO until an ACK
        self.una = 0

    def deadline(self) -> float | None:
        return self.at

    def cancel(self) -> None:
        self.at = None

    def on_timer(self, conn: ConnectionView, now: float) -> None:
        """RFC 8985 §7.3: the probe goes first and the RTO restarts behind it."""
        self.at = None
        self.sent = True
        self.una = conn.snd_una
        rack = self.rack
        rack.probes += 1
        rack.log.debug(
            "tcp.decision",
            decision="tail loss probe",
            una=conn.snd_una,
            nxt=conn.snd_nxt,
            rfc="RFC 8985 §7.3",
            t=now,
        )
        conn.request_tail_probe(now)

    def arm(self, conn: ConnectionView, now: float) -> None:
        """RFC 8985 §7.2: with data in flight, outside recovery, arm the probe timeout
        PTO = 2 * SRTT (+ WCDelAckT with a single segment in flight), unless the RTO is earlier."""
        flight = conn.in_flight
        if conn.in_recovery or flight <= 0:
            self.at = None
            return
        srtt = conn.rtt.srtt
        if srtt is None:
            pto = 1.0  # RFC 8985 §7.2: no SRTT yet: PTO = 1 sec (fixed here as in layers/tcp/rack.py)
        else:
            pto = 2 * srtt
            if flight <= conn.snd_mss:
                pto += WC_DEL_ACK  # the peer may be delaying its ACK of a lone segment
            pto = max(pto, self.floor)  # the PTO's floor (as layers/tcp/rack.py)
        rto = conn.retransmit_at
        if rto is None:
            rto = now + conn.rtt.current()
        self.at = min(now + pto, rto)  # RFC 8985 §7.2: never later than the RTO


class Rack:
    """Per-connection RACK state (positions as in the SACK scoreboard), and the connection's
    loss detector: RACK's reorder timer is its own (:meth:`deadline`, :meth:`on_timer`)."""

    __slots__ = (
        "_skip",
        "_waiting",
        "by_start",
        "dsack_seen",
        "end",
        "fraction",
        "log",
        "lost_marked",
        "order",
        "probe",
        "probes",
        "recoveries_since_dsack",
        "reo_wnd_mult",
        "reorder_at",
        "reordering_seen",
        "rtt",
        "tlp",
        "xmit_ts",
    )

    def __init__(
        self, fraction: float, log: DecisionLog | None = None, *, tlp: bool = False, pto_min: float = PTO_MIN
    ) -> None:
        self.log = log if log is not None else decision_log("?", NAME)
        self.tlp = tlp  # send tail loss probes (RFC 8985 §7)
        self.probe = TailLossProbe(self, pto_min)
        self.reorder_at: float | None = None  # RACK's reorder timer (RFC 8985 §6.2 step 5)
        self.by_start: dict[int, _Sent] = {}
        self.order: deque[_Sent] = deque()  # in first-transmission order
        # Segments neither delivered nor lost, by (xmit_ts, end, start): RFC 8985 §6.2 step 5
        # looks only at those sent before RACK.xmit_ts, a prefix here.
        self._waiting: SortedList = SortedList()
        # start of a delivered segment -> a position the chain of delivered segments from it
        # reaches (on_ack's walks jump over what they already walked).
        self._skip: dict[int, int] = {}
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
            if not seg.delivered and not seg.lost:
                self._waiting.remove((seg.xmit_ts, seg.end, seg.start))
            if end > seg.end and self._skip:
                self._skip.clear()  # a chain of segments changed shape (rare: a longer resend)
            seg.xmit_ts = now
            seg.rexmit = seg.rexmit or rexmit
            seg.lost = False
            seg.end = max(seg.end, end)
            if not seg.delivered:
                self._waiting.add((seg.xmit_ts, seg.end, seg.start))
            return
        seg = _Sent(start, end, now, rexmit)
        self.by_start[start] = seg
        self.order.append(seg)
        self._waiting.add((now, end, start))

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
        self.probe.at = None  # RFC 8985 §7.2: no probes during recovery
        self.probe.sent = False

    def _deliver(self, seg: _Sent, now: float, min_rtt: float | None) -> None:
        if not seg.lost:
            self._waiting.remove((seg.xmit_ts, seg.end, seg.start))
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
        skip = self._skip
        while order and order[0].end <= una:
            seg = order.popleft()
            self.by_start.pop(seg.start, None)
            skip.pop(seg.start, None)
            if not seg.delivered:
                self._deliver(seg, now, min_rtt)
        for start, end in sacked:
            # The segments found one after another from the block's start, each inside the
            # block, are delivered; runs delivered before are jumped over through `skip`.
            pos = start
            walked = []
            while pos < end:
                ahead = skip.get(pos)
                if ahead is not None:
                    walked.append(pos)
                    pos = ahead
                    continue
                found = self.by_start.get(pos)
                if found is None or found.end > end:
                    break
                if not found.delivered:
                    self._deliver(found, now, min_rtt)
                walked.append(pos)
                pos = found.end
            for p in walked:  # path compression: the next walk from any of them jumps to pos
                skip[p] = pos

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
        waiting = self._waiting
        # Sent before the most recently delivered segment: (xmit_ts, end) below RACK's, a prefix
        # of the index; `remaining` grows with xmit_ts, so the lost ones are a prefix of that.
        before = waiting.bisect_left((self.xmit_ts, self.end, -1))
        taken = 0
        while taken < before:
            xmit_ts, _, start = waiting[taken]
            remaining = xmit_ts + self.rtt + reo_wnd - now
            if remaining > 0:
                break
            seg = self.by_start[start]
            seg.lost = True
            lost.append(seg)
            taken += 1
        if taken < before:  # the latest one sent before RACK.xmit_ts waits the longest
            wait = waiting[before - 1][0] + self.rtt + reo_wnd - now
        if taken:
            del waiting[:taken]
        self.lost_marked += len(lost)
        return lost, (now + wait if wait is not None else None)

    # ------------------------------------------------------------------ the loss detector

    @property
    def timers(self) -> tuple[tuple[TimerPolicy, bool], ...]:
        """RACK's reorder timer after the RTO, TLP's probe timeout before it."""
        return ((self, False), (self.probe, True))

    def on_transmit(self, conn: ConnectionView, start: int, end: int, now: float, retransmit: bool) -> None:
        self.on_sent(start, end, now, retransmit)  # RFC 8985 §6.1: record the xmit time
        if not retransmit:  # new data went out: (re)arm the PTO (§7.2), as on_progress does
            if self.probe.sent:  # RFC 8985 §7.3: a probe is out: the RTO, not the PTO, runs behind it
                self.probe.at = None
            elif self.tlp:
                self.probe.arm(conn, now)
            else:
                self.probe.at = None

    def on_progress(self, conn: ConnectionView, now: float) -> None:
        """New data or a FIN went out, or new data was acknowledged: (re)arm the PTO (§7.2)."""
        if self.probe.sent and conn.snd_una == self.probe.una:
            self.probe.at = None  # a FIN sent while a probe is out (as layers/tcp/rack.py)
            return
        self.probe.sent = False
        if self.tlp:
            self.probe.arm(conn, now)
        else:
            self.probe.at = None

    def on_ack_received(self, conn: ConnectionView, una: int, sacked: list[tuple[int, int]], now: float) -> None:
        self.on_ack(una, sacked, now, conn.rtt.min_rtt)
        self.detect(conn, now)

    def on_rto(self) -> None:
        self.reorder_at = None
        self.probe.at = None
        self.probe.sent = False

    def detect(self, conn: ConnectionView, now: float) -> None:
        """RFC 8985 §6.2 step 5: mark what RACK deems lost in the scoreboard; enter recovery if
        needed (§6.3), and arm the reorder timer for the rest."""
        lost, again = self.detect_loss(now, conn.rtt.min_rtt, conn.rtt.srtt, in_recovery=conn.in_recovery)
        self.reorder_at = again
        if not lost:
            return
        for seg in lost:
            conn.mark_lost(seg.start, seg.end)
        self.log.debug(
            "tcp.decision", decision="marked lost", segments=len(lost), una=conn.snd_una, rfc="RFC 8985 §6.2", t=now
        )
        conn.start_loss_recovery(now)

    def deadline(self) -> float | None:
        return self.reorder_at

    def cancel(self) -> None:
        self.reorder_at = None

    def on_timer(self, conn: ConnectionView, now: float) -> None:
        self.reorder_at = None
        self.detect(conn, now)  # RFC 8985 §6.2: the reorder timer
