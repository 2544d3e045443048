"""The SACK scoreboard of a data sender (RFC 6675 §3-4; RFC 2018 §5, §8).

Positions are 64-bit stream offsets ("how many bytes since the connection started"), so
sequence wrap never matters; the connection converts with ``pos = una_pos + (seq - SND.UNA)``.
The scoreboard holds the SACKed ranges above SND.UNA and the ranges retransmitted in the
current recovery, both as short sorted lists of disjoint intervals: the work per ACK is
proportional to the number of holes, not to the amount of data in flight.
"""

from __future__ import annotations

import bisect

DUP_THRESH = 3  # RFC 6675 §2 (DupThresh), as RFC 5681


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


class Scoreboard:
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
        if start < self.high_rxt and _cut(self.rexmit, start, end):
            # RFC 8985 §6.2 step 5 (RACK judges a retransmission by its own send time): a lost
            # retransmission is out of the pipe and is sent again, instead of waiting for the RTO.
            _add(self.relost, start, end)

    def unmark_lost(self, start: int, end: int) -> None:
        """[start, end) was sent again (or found SACKed): no longer marked lost; RACK judges the
        new transmission by its own send time (RFC 8985 §6.2 step 5)."""
        if self.lost and self.lost[0][0] < end:
            _cut(self.lost, start, end)

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
