"""SACK blocks we send (RFC 2018 §4) and D-SACK (RFC 2883 §4), on a stack fed crafted segments."""

from __future__ import annotations

from dataclasses import replace

from layers.tcp.wire import ACK
from tests.layers.tcp.helpers import SEND, LayerHarness

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
