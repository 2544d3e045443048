"""The SACK scoreboard of a data sender (RFC 6675 §3-4; RFC 2018 §5, §8).

Positions are 64-bit stream offsets ("how many bytes since the connection started"), so
sequence wrap never matters; the connection converts with ``pos = una_pos + (seq - SND.UNA)``.
The scoreboard holds the SACKed ranges above SND.UNA, the ranges retransmitted in the current
recovery that were not SACKed since, and the ranges RACK declared lost, each an
:class:`~layers.tcp.intervals.IntervalSet`. The peer chooses the SACK blocks (up to four per
ACK, any ranges), so it chooses how many ranges there are: every operation here costs O(log n)
in them (amortized: a range merged away is gone for good), or looks at a bounded number of
them (IsLost and the pipe need only the top DupThresh SACKed ranges), never at all of them.
"""

from __future__ import annotations

from layers.tcp.intervals import IntervalSet

DUP_THRESH = 3  # RFC 6675 §2 (DupThresh), as RFC 5681


class Scoreboard:
    """What the receiver has SACKed and what we retransmitted, above SND.UNA."""

    __slots__ = ("high_rxt", "lost", "mss", "relost", "rexmit", "sacked", "una")

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.una = 0  # stream position of SND.UNA
        self.sacked = IntervalSet()
        # Retransmitted in this recovery and not SACKed since: exactly what SetPipe() counts
        # for retransmissions (RFC 6675 §4), kept up to date instead of recomputed per ACK.
        self.rexmit = IntervalSet()
        self.lost = IntervalSet()  # ranges another detector (RACK) declared lost
        self.high_rxt = 0  # RFC 6675 HighRxt (a position)
        # Retransmissions that RACK found lost again (RFC 8985 §6.2 step 5 compares the time
        # of the latest transmission): resent before anything above HighRxt.
        self.relost = IntervalSet()

    @property
    def sacked_bytes(self) -> int:
        return self.sacked.total

    def clear(self) -> None:
        """RFC 2018 §8 / RFC 6675 §5.1: after a retransmission timeout, forget SACK state
        (the receiver may have reneged)."""
        self.sacked.clear()
        self.rexmit.clear()
        self.lost.clear()
        self.relost.clear()
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
        return self.sacked.find(pos)

    def next_sacked_start(self, pos: int) -> int | None:
        """Start of the first SACKed range above *pos*, if any."""
        return self.sacked.next_start_after(pos)

    def advance(self, acked: int) -> None:
        """SND.UNA moved forward by *acked* bytes (a cumulative ACK)."""
        self.una += acked
        self.sacked.cut_below(self.una)
        self.rexmit.cut_below(self.una)
        self.lost.cut_below(self.una)
        self.relost.cut_below(self.una)
        self.high_rxt = max(self.high_rxt, self.una)

    def update(self, blocks: list[tuple[int, int]], ack_offset: int, max_pos: int) -> int:
        """Record SACK *blocks* given as ``(start, end)`` positions; return newly SACKed bytes.

        Blocks at or below the cumulative ACK are D-SACK reports (RFC 2883) and are ignored
        here; blocks beyond what we sent are bogus and ignored.
        """
        new = 0
        floor = self.una + ack_offset
        sacked, rexmit = self.sacked, self.rexmit
        for start, end in blocks:
            if end <= floor or start >= max_pos or end <= start:
                continue
            start, end = max(start, floor), min(end, max_pos)
            if rexmit:  # retransmitted bytes now SACKed leave the pipe's retransmission count
                for s, e in sacked.gaps(start, end):
                    rexmit.remove(s, e)
            new += sacked.add(start, end)
        return new

    @property
    def highest_sacked(self) -> int:
        return self.sacked.last()[1] if self.sacked else self.una

    def mark_lost(self, start: int, end: int) -> None:
        """Another loss detector (RACK, RFC 8985) declared [start, end) lost."""
        start = max(start, self.una)
        self.lost.add(start, end)
        if start < self.high_rxt and self.rexmit.remove(start, end):
            # RFC 8985 §6.2 step 5 (RACK judges a retransmission by its own send time): a lost
            # retransmission is out of the pipe and is sent again, instead of waiting for the RTO.
            self.relost.add(start, end)

    def unmark_lost(self, start: int, end: int) -> None:
        """[start, end) was sent again (or found SACKed): no longer marked lost; RACK judges the
        new transmission by its own send time (RFC 8985 §6.2 step 5)."""
        if self.lost:
            self.lost.remove(start, end)

    def is_lost(self, pos: int) -> bool:
        """RFC 6675 §4 IsLost: DupThresh discontiguous SACKed ranges above *pos*, or more
        than (DupThresh - 1) * SMSS bytes SACKed above it; or marked lost by RACK."""
        if self.lost and self.lost.find(pos) is not None:
            return True
        above = 0
        blocks = 0
        for s, e in reversed(self.sacked):  # at most DupThresh ranges, from the top
            if e <= pos:
                break
            above += e - max(s, pos)
            blocks += 1
            if blocks >= DUP_THRESH or above > (DUP_THRESH - 1) * self.mss:
                return True
        return False

    def _lost_boundary(self) -> tuple[int, int]:
        """The position below which every unSACKed byte is lost (per the byte rule of IsLost,
        evaluated once from the top instead of per octet), and the SACKed bytes above it."""
        above = 0
        blocks = 0
        for s, e in reversed(self.sacked):  # at most DupThresh ranges, from the top
            above += e - s
            blocks += 1
            if blocks >= DUP_THRESH or above > (DUP_THRESH - 1) * self.mss:
                # Everything unSACKed below the start of this range counts as lost.
                return s, above
        return self.una, above

    def pipe(self, max_pos: int) -> int:
        """RFC 6675 §4 SetPipe(): unSACKed bytes not yet deemed lost, plus bytes
        retransmitted in this recovery that are neither SACKed nor acknowledged."""
        boundary, sacked_above = self._lost_boundary()
        # unSACKed bytes in [boundary, max_pos) are in flight (not lost).
        in_flight = max(0, max_pos - boundary - sacked_above)
        lost = self.lost
        if lost:
            # RACK-lost bytes above the boundary have left the network too. Above the boundary
            # lie at most DupThresh SACKed ranges, so the lost ranges met there are few.
            sacked = self.sacked
            for s, e in lost.iter_from(boundary):
                s = max(s, boundary)
                in_flight -= max(0, e - s - sacked.overlap(s, e))
            in_flight = max(in_flight, 0)
        return in_flight + self.rexmit.total

    def next_hole(self, limit: int, *, lost_only: bool = True) -> tuple[int, int] | None:
        """RFC 6675 §4 NextSeg(): the first unSACKed range above HighRxt and below the highest
        SACKed byte, at most one SMSS long. Rule (1) takes only a range that IsLost()
        (*lost_only*); rule (3), for when no new data can be sent, takes it anyway."""
        while self.relost:  # lost retransmissions first (RFC 8985 §6.2 step 5)
            s, e = first = self.relost.first()
            held = self.sacked.find(s)
            if held is not None:
                s = held[1]  # SACKed since (SACKed ranges never touch: one step is enough)
            if s < e:
                return (s, min(e, s + self.mss))
            self.relost.remove(*first)  # all of it SACKed since: done with it
        start = max(self.high_rxt, self.una)
        top = min(self.highest_sacked, limit)
        for s, e in self.sacked.iter_from(start):  # those below cannot bound a hole above start
            if s > start:
                end = min(s, start + self.mss, top)
                if end <= start:
                    return None
                if lost_only and not self.is_lost(start):
                    return None  # holes further up have even less SACKed data above them
                return (start, end)
            start = max(start, e)
        return None

    def mark_retransmitted(self, start: int, end: int, high_rxt: bool = True) -> None:
        """[start, end) was retransmitted: in the pipe (RFC 6675 §4 SetPipe); HighRxt moves past it
        unless *high_rxt* is false (the rescue retransmission, RFC 6675 §4 NextSeg (4))."""
        for s, e in self.sacked.gaps(start, end):  # what is SACKed is not in the pipe
            self.rexmit.add(s, e)
        if self.relost:
            self.relost.remove(start, end)
        if high_rxt:
            self.high_rxt = max(self.high_rxt, end)
