"""Out-of-order data under hostile input (issue 9, item 2): the memory budget, the SACK blocks we
choose (RFC 2018 §4), and per-segment work that does not grow with what is held.

The complexity tests count Python line events (``sys.settrace``) while one segment or one ACK
is processed, with few and with many pieces held: a count, not a timing, so they hold on a
loaded machine, and an O(n) walk over what is held shows up as thousands of lines.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from types import ModuleType

import pytest

import layers.tcp.buffers
import layers.tcp.connection
import layers.tcp.rack
import layers.tcp.scoreboard
from framework._compiled import is_compiled
from layers.tcp.buffers import PIECE_OVERHEAD, ReceiveBuffer
from layers.tcp.scoreboard import Scoreboard
from layers.tcp.wire import RST
from plugins.rack_tlp import Rack
from tests.layers.tcp.helpers import SEND, LayerHarness

PIECE = 1 + PIECE_OVERHEAD  # what a one-byte piece costs


def _open(h: LayerHarness, port: int = 49500) -> tuple[object, int, int]:
    if 80 not in h.tcp.listeners:
        h.tcp.listen(80)
    conn, synack = h.handshake(80, remote_port=port, mss=1460, window=65535, options=bytes([4, 2, 1, 1]))
    return conn, synack.seq + 1, conn.rcv_nxt  # type: ignore[attr-defined]


def _seg(ours: int, theirs: int, offset: int, payload: bytes = b"x", port: int = 49500, **kw: object) -> object:
    return replace(SEND, src_port=port, seq=theirs + offset, ack=ours, window=65535, payload=payload, **kw)


def _covers(blocks: list[tuple[int, int]] | None, seq: int) -> bool:
    return any(s <= seq < e for s, e in blocks or [])


class TestBudget:
    def test_a_segment_over_the_budget_is_dropped_before_any_ack_or_sack_and_counted(self) -> None:
        """Nothing acknowledges or SACKs the refused segment (RFC 2018 §8: what we SACK we
        keep); the drop is counted with its reason."""
        h = LayerHarness(features={"sack": {}}, ooo_budget=4096)
        conn, ours, theirs = _open(h)
        fits = 4096 // PIECE
        for i in range(fits):  # one-byte pieces with a hole before each
            [ack] = h.inject(_seg(ours, theirs, 2 * i + 1), t=0.1)
            assert ack.sack and ack.sack[0] == (theirs + 2 * i + 1, theirs + 2 * i + 2)
        refused = 2 * fits + 1
        assert h.inject(_seg(ours, theirs, refused), t=0.1) == []  # no duplicate ACK, no SACK
        assert h.drops("ooo_budget") == 1
        buf = conn.rcvbuf  # type: ignore[attr-defined]
        assert buf.ooo_pieces == fits and buf.ooo_cost == fits * PIECE <= 4096
        # A later ACK (for a duplicate of a held piece) reports held blocks, never the refused byte.
        [ack] = h.inject(_seg(ours, theirs, 1), t=0.2)
        assert ack.sack and not _covers(ack.sack, theirs + refused)
        assert ack.sack[0] == (theirs + 1, theirs + 2)  # RFC 2883 §4: the duplicate first

    def test_sacked_data_is_never_dropped_and_in_order_data_is_always_taken(self) -> None:
        """No reneging: with the budget full, in-order bytes still go in, pull the held pieces
        after them and free their budget; every byte ever SACKed reaches the application."""
        h = LayerHarness(features={"sack": {}}, ooo_budget=4096)
        conn, ours, theirs = _open(h)
        fits = 4096 // PIECE
        for i in range(fits):
            h.inject(_seg(ours, theirs, 2 * i + 1, bytes([65 + i % 26])), t=0.1)
        assert h.inject(_seg(ours, theirs, 2 * fits + 1, b"!"), t=0.1) == []  # full
        [ack] = h.inject(_seg(ours, theirs, 0, b"-"), t=0.2)  # fills the first hole
        assert ack.ack == theirs + 2  # the in-order byte and the piece after it
        buf = conn.rcvbuf  # type: ignore[attr-defined]
        assert buf.ooo_pieces == fits - 1 and buf.ooo_cost == (fits - 1) * PIECE
        [ack] = h.inject(_seg(ours, theirs, 2 * fits + 1, b"!"), t=0.3)  # room again: taken
        assert _covers(ack.sack, theirs + 2 * fits + 1)
        for i in range(1, fits + 1):  # fill the other holes in order
            h.inject(_seg(ours, theirs, 2 * i, b"-"), t=0.4)
        expected = b"".join(b"-" + bytes([65 + i % 26]) for i in range(fits)) + b"-!"
        assert conn.read() == expected  # type: ignore[attr-defined]
        assert buf.ooo_pieces == 0 and buf.ooo_cost == 0 and h.drops("ooo_budget") == 1

    def test_the_stack_wide_budget_is_shared_and_freed_when_a_connection_goes(self) -> None:
        """``ooo_memory`` bounds all connections together; a reset connection gives its share back."""
        h = LayerHarness(features={"sack": {}}, ooo_memory=65536)
        a, ours_a, theirs_a = _open(h, 40001)
        b, ours_b, theirs_b = _open(h, 40002)
        fits = 65536 // PIECE
        for i in range(fits):
            h.inject(_seg(ours_a, theirs_a, 2 * i + 1, port=40001), t=0.1)
        assert a.rcvbuf.ooo_pieces == fits  # type: ignore[attr-defined]
        assert h.inject(_seg(ours_b, theirs_b, 1, port=40002), t=0.1) == []
        assert h.drops("ooo_budget_stack") == 1
        assert h.tcp.ooo_pool.used == fits * PIECE
        h.inject(_seg(ours_a, theirs_a, 0, b"", port=40001, flags=RST), t=0.2)  # A is reset
        assert h.tcp.ooo_pool.used == 0
        [ack] = h.inject(_seg(ours_b, theirs_b, 1, port=40002), t=0.3)
        assert ack.sack == [(theirs_b + 1, theirs_b + 2)]
        assert b.rcvbuf.ooo_pieces == 1  # type: ignore[attr-defined]

    def test_the_default_budget_is_twice_the_receive_buffer(self) -> None:
        """Room for a whole window of MSS-sized pieces with their overhead (docs/tcp.md)."""
        assert ReceiveBuffer(1 << 19).budget == 1 << 20
        assert ReceiveBuffer(64).budget == 1 << 16  # at least 64 KiB
        window, mss = 1 << 19, 1460
        assert (window // mss) * (mss + PIECE_OVERHEAD) < ReceiveBuffer(window).budget

    def test_the_piece_overhead_is_what_a_piece_really_costs(self) -> None:
        """PIECE_OVERHEAD is measured (tracemalloc), not guessed: the worst case (each piece its
        own block, sliced from a frame as the stack does) costs at most that, and not far less."""
        frame = memoryview(bytes(range(256)) * 4)
        for size in (1, 100):
            buf = ReceiveBuffer(1 << 30, budget=1 << 40)
            n = 20_000
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for i in range(n):
                    buf.insert((size + 1) * i + 1, frame[:size])
                per_piece = (tracemalloc.get_traced_memory()[0] - before) / n - size
            finally:
                tracemalloc.stop()
            assert buf.ooo_pieces == n
            # Compiled (mypyc), the buffer's own objects are smaller: PIECE_OVERHEAD (the pure
            # build's cost) is then only an upper bound.
            low = 0.0 if is_compiled(layers.tcp.buffers) else 0.8 * PIECE_OVERHEAD
            assert low <= per_piece <= PIECE_OVERHEAD, per_piece


class TestBlockSelection:
    def test_first_the_block_of_the_segment_then_the_most_recently_reported(self) -> None:
        """RFC 2018 §4: the first block holds the segment that triggered the ACK; the others
        repeat the most recently reported blocks, in that order, as many as fit (4)."""
        h = LayerHarness(features={"sack": {}})
        _, ours, theirs = _open(h)
        k = 1000
        for off in (2000, 4000, 6000, 8000):
            h.inject(_seg(ours, theirs, off, bytes(k)), t=0.1)
        [ack] = h.inject(_seg(ours, theirs, 10_000, bytes(k)), t=0.1)
        assert ack.sack == [(theirs + o, theirs + o + k) for o in (10_000, 8000, 6000, 4000)]
        [ack] = h.inject(_seg(ours, theirs, 3000, bytes(k)), t=0.1)  # joins 2000-3000 and 4000-5000
        joined = (theirs + 2000, theirs + 5000)
        assert ack.sack == [joined] + [(theirs + o, theirs + o + k) for o in (10_000, 8000, 6000)]
        [ack] = h.inject(_seg(ours, theirs, 12_000, bytes(k)), t=0.1)
        assert ack.sack == [(theirs + 12_000, theirs + 13_000), joined] + [
            (theirs + o, theirs + o + k) for o in (10_000, 8000)
        ]


def _lines(work: Callable[[], object]) -> int:
    """Python line events while *work* runs."""
    count = 0

    def tracer(frame: object, event: str, arg: object) -> object:
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)  # type: ignore[arg-type]
    try:
        work()
    finally:
        sys.settrace(None)
    return count


def _counts_lines_of(module: ModuleType) -> pytest.MarkDecorator:
    """Line events come from interpreted code only: compiled (mypyc), the module under test emits
    none, and the count would measure only what it calls. The test command's pure-Python run
    (conftest.py at the root) runs these tests."""
    return pytest.mark.skipif(
        is_compiled(module),
        reason=f"{module.__name__} is compiled: no line events to count (the pure-Python run counts them)",
    )


FEW, MANY = 2000, 20_000  # both past the sorted containers' first sublist (load 1000)


class TestPerSegmentWork:
    """Ten times as many pieces held: the work per segment stays (nearly) the same (an O(n)
    walk over what is held would take ten times as many lines)."""

    @_counts_lines_of(layers.tcp.connection)
    def test_receiving_an_out_of_order_segment(self) -> None:
        def work(n: int) -> int:
            h = LayerHarness(features={"sack": {}})
            _, ours, theirs = _open(h)
            for i in range(n):
                h.inject(_seg(ours, theirs, 2 * i + 1), t=0.1)
            extend = _seg(ours, theirs, 2 * n + 1)
            middle = _seg(ours, theirs, n + (n % 2 == 0))  # fills a hole in the middle: two blocks join
            return _lines(lambda: h.inject(extend, t=0.1)) + _lines(lambda: h.inject(middle, t=0.1))

        few, many = work(FEW), work(MANY)
        assert many < 1.25 * few, (few, many)

    @_counts_lines_of(layers.tcp.scoreboard)
    def test_an_ack_with_sack_blocks_at_the_sender(self) -> None:
        """RFC 6675: the scoreboard update, SetPipe(), IsLost() and NextSeg() of one ACK, with
        2000 or 20,000 SACKed ranges (the peer chose one-byte blocks with holes)."""

        def work(n: int) -> int:
            sb = Scoreboard(1000)
            top = 2 * n + 10
            for i in range(n):
                sb.update([(2 * i + 1, 2 * i + 2)], 0, top)
            for i in range(0, n, 2):
                sb.mark_retransmitted(2 * i, 2 * i + 1)
                sb.mark_lost(2 * i + 2, 2 * i + 3)

            def ack() -> None:
                sb.update([(2 * n - 1, 2 * n), (1, 2), (n + 1, n + 2), (7, 8)], 0, top)
                sb.pipe(top)
                sb.is_lost(0)
                sb.next_hole(top)
                sb.next_hole(top, lost_only=False)
                sb.sacked_range_at(n + 1)
                sb.next_sacked_start(n)

            return _lines(ack)

        few, many = work(FEW), work(MANY)
        assert many < 1.25 * few, (few, many)

    @_counts_lines_of(layers.tcp.rack)
    def test_rack_on_an_ack(self) -> None:
        """RFC 8985 §6.2: RACK's update and loss check for one ACK, with 2000 or 20,000 segments
        in flight, every other one SACKed, the SACK blocks repeated in every ACK."""

        def work(n: int) -> int:
            rack = Rack(0.25)
            for i in range(n):
                rack.on_sent(100 * i, 100 * i + 100, i * 1e-6, False)
            blocks = [(100 * i, 100 * i + 100) for i in range(1, n, 2)]
            for j in range(0, len(blocks), 4):
                rack.on_ack(0, blocks[j : j + 4], 0.001, min_rtt=0.001)
            rack.detect_loss(0.0011, min_rtt=0.001, srtt=0.001)
            repeat = [(100, 100 * n), (100 * (n - 1), 100 * n)]  # a huge block, again and again

            def ack() -> None:
                rack.on_ack(0, repeat, 0.002, min_rtt=0.001)
                rack.detect_loss(0.002, min_rtt=0.001, srtt=0.001)

            _lines(ack)  # the first walk of the huge block may be long; the next ones are not
            return _lines(ack)

        few, many = work(FEW), work(MANY)
        assert many < 1.25 * few, (few, many)
