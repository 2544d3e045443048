"""SACK blocks we send (RFC 2018 §4) and D-SACK (RFC 2883 §4), on a stack fed crafted segments."""

from __future__ import annotations

from dataclasses import replace

from layers.tcp.wire import ACK
from tests.layers.tcp.helpers import SEND, LayerHarness, frame

MSS = 1000


def _open(h: LayerHarness) -> tuple[object, int, int]:
    h.tcp.listen(80)
    conn, synack = h.handshake(80, mss=1460, window=65535, options=bytes([4, 2, 1, 1]))  # SACK-permitted
    return conn, synack.seq + 1, conn.rcv_nxt  # type: ignore[attr-defined]


def _data(h: LayerHarness, ours: int, theirs: int, offset: int, size: int = MSS) -> list:
    seg = replace(SEND, seq=theirs + offset, ack=ours, flags=ACK, window=65535, payload=bytes(size))
    return h.inject(seg, t=0.1)


class TestSackBlocks:
    def test_blocks_most_recent_first(self) -> None:
        """RFC 2018 §4: the first block holds the segment that triggered the ACK; earlier blocks follow."""
        h = LayerHarness(features={"sack": {}})
        _, ours, theirs = _open(h)
        _data(h, ours, theirs, 2000)
        [ack] = _data(h, ours, theirs, 4000)
        assert ack.sack == [(theirs + 4000, theirs + 5000), (theirs + 2000, theirs + 3000)]

    def test_duplicate_segment_is_reported_first_as_dsack(self) -> None:
        """RFC 2883 §4: a segment wholly below RCV.NXT is reported as the first block of the next ACK."""
        h = LayerHarness(features={"sack": {}})
        _, ours, theirs = _open(h)
        _data(h, ours, theirs, 0)
        [ack] = _data(h, ours, theirs, 0)  # the same segment again
        assert ack.sack == [(theirs, theirs + MSS)]

    def test_partly_duplicate_segment_reports_only_the_old_part(self) -> None:
        """RFC 2883 §4.1.1: of a segment straddling RCV.NXT, the D-SACK block is the part already received."""
        h = LayerHarness(features={"sack": {}})
        _, ours, theirs = _open(h)
        _data(h, ours, theirs, 0)
        [ack] = _data(h, ours, theirs, 500)  # bytes 500-1499: 500-999 are old
        assert ack.sack and ack.sack[0] == (theirs + 500, theirs + 1000)


class TestDuplicateAcksInOneBatch:
    @staticmethod
    def _batch(h: LayerHarness, ours: int, theirs: int, n: int) -> list:
        """*n* out-of-order segments (holes between them) read in one batch, then the batch's output."""
        for i in range(n):
            seg = replace(SEND, seq=theirs + 2000 * (i + 1), ack=ours, flags=ACK, window=65535, payload=bytes(MSS))
            h.stack.receive_frame(frame(seg), now=0.1)
        return h.output(t=0.1)

    def test_with_sack_beyond_dupthresh_one_ack_ends_the_batch(self) -> None:
        """RFC 5681 §4.2 with MUST-58: a duplicate ACK for each of the first DupThresh (3) out-of-order segments
        of a batch, then one ACK at its end whose first SACK block holds the latest segment (RFC 2018 §4), so a
        flood of tiny segments costs one ACK per batch, not one per segment."""
        h = LayerHarness(features={"sack": {}})
        _, ours, theirs = _open(h)
        acks = self._batch(h, ours, theirs, 10)
        assert len(acks) == 4 and all(a.ack == theirs for a in acks)
        assert acks[-1].sack is not None and acks[-1].sack[0] == (theirs + 20000, theirs + 21000)
        assert [a.sack[0] for a in acks[:3] if a.sack] == [
            (theirs + 2000 * k, theirs + 2000 * k + MSS) for k in (1, 2, 3)
        ]

    def test_without_sack_every_segment_gets_its_duplicate_ack(self) -> None:
        """RFC 5681 §4.2: a sender without SACK counts duplicate ACKs (three for a fast retransmit, one more per
        segment to inflate cwnd), so each out-of-order segment gets its own, even within one batch."""
        h = LayerHarness()
        _, ours, theirs = _open(h)
        acks = self._batch(h, ours, theirs, 10)
        assert len(acks) == 10 and all(a.ack == theirs and a.sack is None for a in acks)
