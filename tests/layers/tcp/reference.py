"""The list-based SACK scoreboard and RACK state as they were before issue 9 made them O(log n)
(the scoreboard with the lost-retransmission rule of the loss-recovery work):
an executable specification that tests/layers/tcp/test_ooo_model.py compares the new ones with
(same answers to every query, for any sequence of calls)."""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from typing import Any

DUP_THRESH = 3


def _add(ranges: list[tuple[int, int]], start: int, end: int) -> int:
    """Merge [start, end) into disjoint sorted *ranges*; return how many bytes were new."""
    if end <= start:
        return 0
    i = bisect.bisect_left(ranges, (start, start))
    if i > 0 and ranges[i - 1][1] >= start:
        i -= 1
    new = end - start
    lo, hi = start, end
    j = i
    while j < len(ranges) and ranges[j][0] <= hi:
        s, e = ranges[j]
        new -= max(0, min(e, end) - max(s, start))
        lo, hi = min(lo, s), max(hi, e)
        j += 1
    ranges[i:j] = [(lo, hi)]
    return max(new, 0)


def _cut(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    """Remove [start, end) from disjoint sorted *ranges*; return whether anything was removed."""
    out: list[tuple[int, int]] = []
    hit = False
    for s, e in ranges:
        if e <= start or s >= end:
            out.append((s, e))
            continue
        hit = True
        if s < start:
            out.append((s, start))
        if e > end:
            out.append((end, e))
    if hit:
        ranges[:] = out
    return hit


def _cut_below(ranges: list[tuple[int, int]], pos: int) -> None:
    while ranges and ranges[0][1] <= pos:
        ranges.pop(0)
    if ranges and ranges[0][0] < pos:
        ranges[0] = (pos, ranges[0][1])


class RefScoreboard:
    """What the receiver has SACKed and what we retransmitted, above SND.UNA."""

    __slots__ = ("high_rxt", "lost", "mss", "relost", "rexmit", "sacked", "sacked_bytes", "una")

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.una = 0  # stream position of SND.UNA
        self.sacked: list[tuple[int, int]] = []
        self.rexmit: list[tuple[int, int]] = []
        self.lost: list[tuple[int, int]] = []  # ranges another detector (RACK) declared lost
        self.high_rxt = 0  # RFC 6675 HighRxt (a position)
        self.sacked_bytes = 0
        # Retransmissions that RACK found lost again (RFC 8985 §6.2 step 5 compares the time
        # of the latest transmission): resent before anything above HighRxt.
        self.relost: list[tuple[int, int]] = []

    def clear(self) -> None:
        """RFC 2018 §8 / RFC 6675 §5.1: after a retransmission timeout, forget SACK state
        (the receiver may have reneged)."""
        self.sacked.clear()
        self.rexmit.clear()
        self.lost.clear()
        self.relost.clear()
        self.sacked_bytes = 0
        self.high_rxt = self.una

    def after_timeout(self) -> None:
        """RFC 6675 §5.1 permits keeping SACK information across a retransmission timeout (as
        Linux does): the SACKed ranges stay, so the go-back-N resend skips them; only the
        record of this recovery's retransmissions starts over."""
        self.rexmit.clear()
        self.relost.clear()
        self.high_rxt = self.una

    def sacked_range_at(self, pos: int) -> tuple[int, int] | None:
        """The SACKed range containing *pos*, if any."""
        i = bisect.bisect_right(self.sacked, (pos, 1 << 62)) - 1
        if i >= 0 and self.sacked[i][0] <= pos < self.sacked[i][1]:
            return self.sacked[i]
        return None

    def next_sacked_start(self, pos: int) -> int | None:
        """Start of the first SACKed range above *pos*, if any."""
        for s, _ in self.sacked:
            if s > pos:
                return s
        return None

    def advance(self, acked: int) -> None:
        """SND.UNA moved forward by *acked* bytes (a cumulative ACK)."""
        self.una += acked
        _cut_below(self.sacked, self.una)
        _cut_below(self.rexmit, self.una)
        _cut_below(self.lost, self.una)
        _cut_below(self.relost, self.una)
        self.sacked_bytes = sum(e - s for s, e in self.sacked)
        self.high_rxt = max(self.high_rxt, self.una)

    def update(self, blocks: list[tuple[int, int]], ack_offset: int, max_pos: int) -> int:
        """Record SACK *blocks* given as ``(start, end)`` positions; return newly SACKed bytes.

        Blocks at or below the cumulative ACK are D-SACK reports (RFC 2883) and are ignored
        here; blocks beyond what we sent are bogus and ignored.
        """
        new = 0
        floor = self.una + ack_offset
        for start, end in blocks:
            if end <= floor or start >= max_pos or end <= start:
                continue
            new += _add(self.sacked, max(start, floor), min(end, max_pos))
        if new:
            self.sacked_bytes += new
        return new

    @property
    def highest_sacked(self) -> int:
        return self.sacked[-1][1] if self.sacked else self.una

    def mark_lost(self, start: int, end: int) -> None:
        """Another loss detector (RACK, RFC 8985) declared [start, end) lost."""
        start = max(start, self.una)
        _add(self.lost, start, end)
        if start >= self.high_rxt:
            return
        # Retransmitted bytes since SACKed were delivered: RACK never deems them lost (RFC 8985
        # §6.2 step 5 looks only at segments not yet delivered), so they make no lost
        # retransmission (this list keeps them in rexmit; SetPipe() subtracts them).
        pending = 0
        for s, e in self.rexmit:
            s, e = max(s, start), min(e, end)
            if s < e:
                pending += e - s - sum(max(0, min(e, se) - max(s, ss)) for ss, se in self.sacked)
        if _cut(self.rexmit, start, end) and pending:
            # RFC 8985 §6.2 step 5 (RACK judges a retransmission by its own send time): a lost
            # retransmission is out of the pipe and is sent again, instead of waiting for the RTO.
            _add(self.relost, start, end)

    def is_lost(self, pos: int) -> bool:
        """RFC 6675 §4 IsLost: DupThresh discontiguous SACKed ranges above *pos*, or more
        than (DupThresh - 1) * SMSS bytes SACKed above it; or marked lost by RACK."""
        for s, e in self.lost:
            if s <= pos < e:
                return True
            if s > pos:
                break
        above = 0
        blocks = 0
        for s, e in reversed(self.sacked):
            if e <= pos:
                break
            above += e - max(s, pos)
            blocks += 1
            if blocks >= DUP_THRESH or above > (DUP_THRESH - 1) * self.mss:
                return True
        return False

    def _lost_boundary(self) -> int:
        """The position below which every unSACKed byte is lost (per the byte rule of IsLost,
        evaluated once from the top instead of per octet)."""
        above = 0
        blocks = 0
        for s, e in reversed(self.sacked):
            above += e - s
            blocks += 1
            if blocks >= DUP_THRESH or above > (DUP_THRESH - 1) * self.mss:
                # Everything unSACKed below the start of this range counts as lost.
                return s
        return self.una

    def pipe(self, max_pos: int) -> int:
        """RFC 6675 §4 SetPipe(): unSACKed bytes not yet deemed lost, plus bytes
        retransmitted in this recovery that are neither SACKed nor acknowledged."""
        boundary = self._lost_boundary()
        # unSACKed bytes in [boundary, max_pos) are in flight (not lost).
        sacked_above = 0
        for s, e in self.sacked:
            if e > boundary:
                sacked_above += e - max(s, boundary)
        in_flight = max(0, max_pos - boundary - sacked_above)
        for s, e in self.lost:  # RACK-lost bytes above the boundary have left the network too
            s = max(s, boundary)
            if e <= s:
                continue
            gone = e - s
            for ss, se in self.sacked:
                gone -= max(0, min(e, se) - max(s, ss))
            in_flight -= max(gone, 0)
        in_flight = max(in_flight, 0)
        rexmit = 0
        for s, e in self.rexmit:
            rexmit += e - s
            for ss, se in self.sacked:  # retransmitted bytes since SACKed are not in the pipe
                rexmit -= max(0, min(e, se) - max(s, ss))
        return in_flight + max(rexmit, 0)

    def next_hole(self, limit: int, *, lost_only: bool = True) -> tuple[int, int] | None:
        """RFC 6675 §4 NextSeg(): the first unSACKed range above HighRxt and below the highest
        SACKed byte, at most one SMSS long. Rule (1) takes only a range that IsLost()
        (*lost_only*); rule (3), for when no new data can be sent, takes it anyway."""
        for s, e in self.relost:  # lost retransmissions first (RFC 8985 §6.2 step 5)
            for ss, se in self.sacked:
                if ss <= s < se:
                    s = se
            if s < e:
                return (s, min(e, s + self.mss))
        start = max(self.high_rxt, self.una)
        top = min(self.highest_sacked, limit)
        for s, e in self.sacked:
            if e <= start:
                continue
            if s > start:
                end = min(s, start + self.mss, top)
                if end <= start:
                    return None
                if lost_only and not self.is_lost(start):
                    return None  # holes further up have even less SACKed data above them
                return (start, end)
            start = max(start, e)
        return None

    def mark_retransmitted(self, start: int, end: int) -> None:
        _add(self.rexmit, start, end)
        if self.relost:
            _cut(self.relost, start, end)
        self.high_rxt = max(self.high_rxt, end)


@dataclass(slots=True, eq=False)
class _Sent:
    start: int
    end: int
    xmit_ts: float
    rexmit: bool
    delivered: bool = False
    lost: bool = False


class RefRack:
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
        self.log = log
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
            pass
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
