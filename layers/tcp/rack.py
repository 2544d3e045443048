"""RACK-TLP's per-segment state machine (RFC 8985), compiled with mypyc: :class:`Rack` (the
connection's :class:`~layers.tcp.policy.LossDetector`, with RACK's reorder timer) and
:class:`TailLossProbe` (TLP's probe timeout). plugins/rack_tlp.py registers the feature and
installs a :class:`Rack` on a connection once SACK is in use; this module holds no hook.

- RACK (§6): every data segment's (re)transmission time is recorded (§6.1). When an ACK delivers
  a segment (cumulatively or by SACK), RACK remembers the most recently *sent* delivered one and
  its RTT (§6.2 steps 1-2). A segment still undelivered that was sent before it is lost once
  ``RACK.rtt + reo_wnd`` has passed since it was sent (§6.2 step 5); before that the reorder
  timer fires at that moment. ``reo_wnd`` is min_RTT / 4, at most SRTT (§6.2 step 4).
- TLP (§7): with data in flight and no recovery under way, a probe timeout (PTO) of 2 * SRTT
  (plus WCDelAckT) runs ahead of the RTO (§7.2); when it fires, the connection sends one new
  segment or the last one again (§7.3).

**Mechanism (the cost per segment).** The segments neither delivered nor lost ("waiting") are
kept in (xmit_ts, end_seq, start) order, because §6.2 step 5 only looks at those sent before
RACK.xmit_ts, a prefix of that order. Transmissions come in time order, so nearly every one is
*appended* to ``_run``, a list used as a queue (a head index, compacted now and then): O(1) per
segment, no allocation beyond the segment's own record. A segment leaving the waiting set
(delivered, lost, sent again) is not removed from the queue: its slot is dead, recognized by
``seg.slot`` no longer naming it, and skipped. Only a transmission whose key is below the last
one queued (two output bursts with the same ``now``, the second a retransmission lower in the
sequence space) goes to ``_aside``, a sorted list, rare and small. The loss check walks the
merged order from the front; the in-order cumulative ACK (everything waiting was sent after
RACK.xmit_ts) returns after one comparison. When a segment sent before RACK.xmit_ts is still in
its reordering window, the timer needs the latest such one: a bisection of the queue, then the
nearest live slot below, found through per-slot back pointers with path compression (a dead slot
stays dead), so a queue full of SACKed slots costs amortized O(1), not a walk.

Positions (*start*, *end*, *una*, *sacked*) are those of the SACK scoreboard, so they never wrap.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Final

from sortedcontainers import SortedList

from layers.tcp.connection import TcpConnection
from layers.tcp.policy import TimerPolicy, decision_log

if TYPE_CHECKING:
    from layers.tcp.policy import DecisionLog
    from layers.tcp.view import ConnectionView, RttView

NAME: Final = "rack_tlp"
WC_DEL_ACK: Final = 0.2  # RFC 8985 §7.2: WCDelAckT, the worst-case delayed-ACK time
NO_SRTT_PTO: Final = 1.0  # RFC 8985 §7.2: the PTO before any RTT sample
# The PTO's floor (the rack_tlp feature's ``pto_min``): with SRTT below a millisecond (a namespace,
# a TUN device) 2*SRTT is shorter than the event loop's timer and scheduling granularity, and the
# probe would go before the ACK could have been processed. Linux before 4.13 floored its PTO at
# 10 ms (tcp_schedule_loss_probe); since then it adds TCP_TIMEOUT_MIN (2 jiffies, 2-8 ms).
PTO_MIN: Final = 0.01

_NOWHERE: Final = -1  # Sent.slot: not waiting (delivered, lost) or its slot is behind the head
_ASIDE: Final = -2  # Sent.slot: waiting, in Rack._aside
_COMPACT: Final = 1024  # drop the dead front of Rack._run once the head is past this many slots


class Sent:
    """One (re)transmitted segment as RACK sees it (RFC 8985 §6.1: its xmit time)."""

    __slots__ = ("back", "delivered", "end", "lost", "rexmit", "slot", "start", "xmit_ts")

    def __init__(self, start: int, end: int, xmit_ts: float, rexmit: bool) -> None:
        self.start = start
        self.end = end
        self.xmit_ts = xmit_ts
        self.rexmit = rexmit
        self.delivered = False
        self.lost = False
        #: the absolute index of its slot in Rack._run (its key there is (xmit_ts, end, start)),
        #: or _ASIDE / _NOWHERE
        self.slot = _NOWHERE
        #: once its slot is dead: every slot after ``back`` and before this one is dead too
        self.back = _NOWHERE

    def __repr__(self) -> str:
        return (
            f"Sent(start={self.start}, end={self.end}, xmit_ts={self.xmit_ts}, rexmit={self.rexmit}, "
            f"delivered={self.delivered}, lost={self.lost})"
        )


class TailLossProbe:
    """TLP's probe timeout (RFC 8985 §7.2-§7.3), a timer that runs before the RTO."""

    __slots__ = ("at", "floor", "rack", "sent", "una")

    def __init__(self, rack: Rack, floor: float = PTO_MIN) -> None:
        self.rack = rack
        self.floor = floor  # the PTO's lower bound (PTO_MIN)
        self.at: float | None = None
        #: a probe was asked for and no ACK of new data (or RTO, or recovery) came since: nothing
        #: sent meanwhile, the probe itself, new data or a FIN, re-arms the PTO (RFC 8985 §7.2:
        #: not while a loss probe is out, TLP.end_seq; §7.3: the RTO runs behind it)
        self.sent = False
        self.una = 0  # SND.UNA when the probe fired: progress since then is an ACK of new data

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
        PTO = 2 * SRTT (+ WCDelAckT with a single segment in flight; 1 s without SRTT), at least
        ``floor`` (PTO_MIN), unless the RTO is earlier. Called for every new segment sent, so the
        stack's own connection is read natively (the same expressions, typed: compiled, they are
        field loads instead of attribute lookups)."""
        if isinstance(conn, TcpConnection):
            rtt = conn.rtt
            self._arm(now, conn.in_flight, conn.in_recovery, rtt.srtt, conn.snd_mss, conn.retransmit_at, rtt)
        else:
            self._arm(now, conn.in_flight, conn.in_recovery, conn.rtt.srtt, conn.snd_mss, conn.retransmit_at, conn.rtt)

    def _arm(
        self, now: float, flight: int, in_recovery: bool, srtt: float | None, mss: int, rto: float | None, rtt: RttView
    ) -> None:
        if in_recovery or flight <= 0:
            self.at = None
            return
        if srtt is None:
            pto = NO_SRTT_PTO  # RFC 8985 §7.2 TLP_calc_PTO: no SRTT yet: PTO = 1 sec
        else:
            pto = 2 * srtt  # RFC 8985 §7.2 TLP_calc_PTO: PTO = 2 * SRTT
            if flight <= mss:  # RFC 8985 §7.2: FlightSize (SND.MAX - SND.UNA, this segment included) is one segment
                pto += WC_DEL_ACK  # the peer may be delaying its ACK of a lone segment
            if pto < self.floor:
                pto = self.floor  # not below timer granularity (PTO_MIN); the RTO still bounds it below
        if rto is None:
            rto = now + rtt.current()
        at = now + pto
        self.at = rto if rto < at else at  # RFC 8985 §7.2: never later than the RTO (min())


class Rack:
    """Per-connection RACK state (positions as in the SACK scoreboard), and the connection's
    loss detector: RACK's reorder timer is its own (:meth:`deadline`, :meth:`on_timer`)."""

    __slots__ = (
        "_aside",
        "_base",
        "_head",
        "_last_end",
        "_last_start",
        "_last_ts",
        "_run",
        "_skip",
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
        self.log: DecisionLog = log if log is not None else decision_log("?", NAME)
        self.tlp = tlp  # send tail loss probes (RFC 8985 §7)
        self.probe = TailLossProbe(self, pto_min)
        self.reorder_at: float | None = None  # RACK's reorder timer (RFC 8985 §6.2 step 5)
        self.by_start: dict[int, Sent] = {}
        self.order: deque[Sent] = deque()  # in first-transmission order
        # The waiting segments (neither delivered nor lost) in (xmit_ts, end, start) order: the
        # queue of slots from _head on (absolute index of _run[i]: _base + i), plus _aside.
        self._run: list[Sent] = []
        self._base = 0
        self._head = 0
        self._last_ts = 0.0  # the key of the last slot queued
        self._last_end = 0
        self._last_start = 0
        # (xmit_ts, end, start) of waiting segments queued out of order: an empty tuple until the
        # first one (most connections never have one; a SortedList costs ~2 µs to make).
        self._aside: Any = ()
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

    # ------------------------------------------------------------------ the waiting segments

    def _wait(self, seg: Sent) -> None:
        """*seg* (not delivered, not lost, just sent) joins the waiting segments in key order."""
        run = self._run
        ts, end, start = seg.xmit_ts, seg.end, seg.start
        n = len(run)
        if (
            self._head == n
            or ts > self._last_ts
            or (ts == self._last_ts and (end > self._last_end or (end == self._last_end and start >= self._last_start)))
        ):
            a = self._base + n
            seg.slot = a
            seg.back = a - 1
            run.append(seg)
            self._last_ts = ts
            self._last_end = end
            self._last_start = start
        else:  # sent "earlier" than the last one queued (same now, lower in sequence space)
            seg.slot = _ASIDE
            if not self._aside:
                self._aside = SortedList()
            self._aside.add((ts, end, start))

    def _unwait(self, seg: Sent) -> None:
        """*seg* is sent again (its key changes): it leaves its place in the waiting order. A slot
        in the queue keeps its key: a dead copy takes the segment's place there."""
        a = seg.slot
        if a == _ASIDE:
            self._aside.remove((seg.xmit_ts, seg.end, seg.start))
        elif a >= self._base + self._head:
            dead = Sent(seg.start, seg.end, seg.xmit_ts, seg.rexmit)
            dead.back = seg.back
            self._run[a - self._base] = dead
        seg.slot = _NOWHERE

    def _first(self) -> int:
        """The index in _run of the first live slot (len(_run) if none); dead ones before it go."""
        run = self._run
        n = len(run)
        head = self._head
        a = self._base + head
        while head < n:
            s = run[head]
            if s.slot == a and not s.delivered and not s.lost:
                break
            head += 1
            a += 1
        if head >= _COMPACT and 2 * head >= n:
            del run[:head]
            self._base += head
            head = 0
        self._head = head
        return head

    def _latest_before(self, ts: float, end: int) -> float | None:
        """The xmit_ts of the last waiting segment in the queue sent before (ts, end, -1), or None."""
        run = self._run
        base = self._base
        lo = self._head
        hi = len(run)
        while lo < hi:  # the first slot whose key is not below the bound (dead slots keep their key)
            mid = (lo + hi) // 2
            s = run[mid]
            if s.xmit_ts < ts or (s.xmit_ts == ts and (s.end < end or (s.end == end and s.start < -1))):
                lo = mid + 1
            else:
                hi = mid
        floor = base + self._head
        top = base + lo - 1
        a = top
        while a >= floor:  # the nearest live slot below, jumping over dead runs
            s = run[a - base]
            if s.slot == a and not s.delivered and not s.lost:
                break
            a = s.back
        b = top
        while b > a and b >= floor:  # path compression
            s = run[b - base]
            b = s.back
            s.back = a
        return run[a - base].xmit_ts if a >= floor else None

    # ------------------------------------------------------------------ RACK (§6)

    def on_sent(self, start: int, end: int, now: float, rexmit: bool) -> None:
        """RFC 8985 §6.1: record the segment's (re)transmission time."""
        seg = self.by_start.get(start)
        if seg is not None:
            if seg.slot != _NOWHERE:
                self._unwait(seg)
            if end > seg.end and self._skip:
                self._skip.clear()  # a chain of segments changed shape (rare: a longer resend)
            seg.xmit_ts = now
            seg.rexmit = seg.rexmit or rexmit
            seg.lost = False
            if end > seg.end:
                seg.end = end
            if not seg.delivered:
                self._wait(seg)
            return
        seg = Sent(start, end, now, rexmit)
        self.by_start[start] = seg
        self.order.append(seg)
        self._wait(seg)

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

    def _deliver(self, seg: Sent, now: float, min_rtt: float | None) -> None:
        if seg.slot == _ASIDE:
            self._aside.remove((seg.xmit_ts, seg.end, seg.start))
            seg.slot = _NOWHERE
        seg.delivered = True  # a slot in the queue is dead from now on
        if seg.end < self.end:
            self.reordering_seen = True  # RFC 8985 §6.2 step 3: delivered below RACK.end_seq
        rtt = now - seg.xmit_ts
        if seg.rexmit and min_rtt is not None and rtt < min_rtt:
            return  # §6.2 step 2: probably the ACK of an earlier transmission
        if seg.xmit_ts > self.xmit_ts or (seg.xmit_ts == self.xmit_ts and seg.end > self.end):
            self.xmit_ts = seg.xmit_ts  # §6.2 step 2: RACK.xmit_ts, RACK.end_seq, RACK.rtt
            self.end = seg.end
            self.rtt = rtt

    def on_ack(self, una: int, sacked: list[tuple[int, int]], now: float, min_rtt: float | None) -> None:
        """Update RACK from what this ACK delivered (RFC 8985 §6.2 steps 1-2)."""
        order = self.order
        skip = self._skip
        by_start = self.by_start
        while order and order[0].end <= una:
            seg = order.popleft()
            by_start.pop(seg.start, None)
            if skip:
                skip.pop(seg.start, None)
            if not seg.delivered:
                self._deliver(seg, now, min_rtt)
        for start, end in sacked:
            # The segments found one after another from the block's start, each inside the
            # block, are delivered; runs delivered before are jumped over through `skip`.
            pos = start
            walked: list[int] = []
            while pos < end:
                ahead = skip.get(pos)
                if ahead is not None:
                    walked.append(pos)
                    pos = ahead
                    continue
                found = by_start.get(pos)
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

    def _none_sent_before(self) -> bool:
        """Is no waiting segment sent before RACK.xmit_ts (RFC 8985 §6.2 step 5 has nothing to
        judge)? The in-order cumulative ACK: the segments still waiting all went out after it."""
        ts, end = self.xmit_ts, self.end
        run = self._run
        i = self._first()
        if i < len(run):
            s = run[i]
            if s.xmit_ts < ts or (s.xmit_ts == ts and (s.end < end or (s.end == end and s.start < -1))):
                return False
        aside = self._aside
        return not aside or not aside[0] < (ts, end, -1)

    def detect_loss(
        self, now: float, min_rtt: float | None, srtt: float | None, *, in_recovery: bool = False
    ) -> tuple[list[Sent], float | None]:
        """RFC 8985 §6.2 steps 4-5: the segments now deemed lost, and when to look again."""
        lost: list[Sent] = []
        if self._none_sent_before():
            return lost, None
        reo_wnd = self.reo_wnd(min_rtt, srtt, in_recovery=in_recovery)  # §6.2 step 4
        ts, end, rtt = self.xmit_ts, self.end, self.rtt
        bound = (ts, end, -1)
        run = self._run
        aside = self._aside
        waits = False
        # §6.2 step 5, in (xmit_ts, end) order over the queue and _aside merged: a segment sent
        # before RACK.xmit_ts is lost once RACK.rtt + reo_wnd has passed since it was sent; the
        # remaining time grows with xmit_ts, so the lost ones come first.
        while True:
            i = self._first()
            s: Sent | None = run[i] if i < len(run) else None
            if aside and (s is None or aside[0] < (s.xmit_ts, s.end, s.start)):
                key = aside[0]
                if not key < bound:
                    break
                if key[0] + rtt + reo_wnd - now > 0:
                    waits = True
                    break
                del aside[0]
                seg = self.by_start[key[2]]
            elif s is not None:
                if not (s.xmit_ts < ts or (s.xmit_ts == ts and (s.end < end or (s.end == end and s.start < -1)))):
                    break
                if s.xmit_ts + rtt + reo_wnd - now > 0:
                    waits = True
                    break
                seg = s
            else:
                break
            seg.lost = True  # §6.2 step 5: RACK deems it lost
            seg.slot = _NOWHERE
            lost.append(seg)
        again: float | None = None
        if waits:  # §6.2 step 5: the reorder timer, for the latest one sent before RACK.xmit_ts
            latest = self._latest_before(ts, end)
            j = aside.bisect_left(bound) if aside else 0
            if j > 0:
                other: float = aside[j - 1][0]
                if latest is None or other > latest:
                    latest = other
            assert latest is not None
            again = now + (latest + rtt + reo_wnd - now)
        self.lost_marked += len(lost)
        return lost, again

    # ------------------------------------------------------------------ the loss detector

    @property
    def timers(self) -> tuple[tuple[TimerPolicy, bool], ...]:
        """RACK's reorder timer after the RTO, TLP's probe timeout before it."""
        return ((self, False), (self.probe, True))

    def on_transmit(self, conn: ConnectionView, start: int, end: int, now: float, retransmit: bool) -> None:
        self.on_sent(start, end, now, retransmit)  # RFC 8985 §6.1: record the xmit time
        if not retransmit:  # new data went out: (re)arm the PTO (§7.2), as on_progress does
            if self.probe.sent:  # RFC 8985 §7.2-§7.3: a probe is out: the RTO, not the PTO, runs until an ACK
                self.probe.at = None
            elif self.tlp:
                self.probe.arm(conn, now)
            else:
                self.probe.at = None

    def on_progress(self, conn: ConnectionView, now: float) -> None:
        """New data or a FIN went out, or new data was acknowledged: (re)arm the PTO (§7.2)."""
        probe = self.probe
        if probe.sent and conn.snd_una == probe.una:
            # A FIN sent as the probe or after it, no ACK of new data since: RFC 8985 §7.2 (no PTO
            # while a loss probe is out) and §7.3 (the RTO runs behind the probe).
            probe.at = None
            return
        probe.sent = False
        if self.tlp:
            self.probe.arm(conn, now)
        else:
            self.probe.at = None

    def on_ack_received(self, conn: ConnectionView, una: int, sacked: list[tuple[int, int]], now: float) -> None:
        if isinstance(conn, TcpConnection):  # read natively (see TailLossProbe.arm)
            self.on_ack(una, sacked, now, conn.rtt.min_rtt)  # §6.2 steps 1-3
        else:
            self.on_ack(una, sacked, now, conn.rtt.min_rtt)
        if self._none_sent_before():
            self.reorder_at = None  # §6.2 step 5: nothing to judge, no reorder timer
            return
        self.detect(conn, now)

    def on_rto(self) -> None:
        self.reorder_at = None
        self.probe.at = None
        self.probe.sent = False

    def detect(self, conn: ConnectionView, now: float) -> None:
        """RFC 8985 §6.2 step 5: mark what RACK deems lost in the scoreboard; enter recovery if
        needed (§6.3), and arm the reorder timer for the rest."""
        rtt = conn.rtt
        lost, again = self.detect_loss(now, rtt.min_rtt, rtt.srtt, in_recovery=conn.in_recovery)
        self.reorder_at = again
        if not lost:
            return
        for seg in lost:
            conn.mark_lost(seg.start, seg.end)
        self.log.debug(
            "tcp.decision", decision="marked lost", segments=len(lost), una=conn.snd_una, rfc="RFC 8985 §6.2", t=now
        )
        conn.start_loss_recovery(now)  # §6.3

    def deadline(self) -> float | None:
        return self.reorder_at

    def cancel(self) -> None:
        self.reorder_at = None

    def on_timer(self, conn: ConnectionView, now: float) -> None:
        self.reorder_at = None
        self.detect(conn, now)  # RFC 8985 §6.2: the reorder timer
