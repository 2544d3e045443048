"""Differential tests (hypothesis) of the O(log n) structures of issue 9 item 2 against simple
models: the receive buffer against a byte-by-byte model (bytes in, bytes out, blocks held), the
SACK scoreboard and RACK against their list-based versions from before (tests/layers/tcp/reference.py)."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from layers.tcp.buffers import PIECE_OVERHEAD, REFUSED, ReceiveBuffer
from layers.tcp.intervals import IntervalSet
from layers.tcp.scoreboard import Scoreboard
from plugins.rack_tlp import Rack
from tests.layers.tcp.reference import RefRack, RefScoreboard

WINDOW = 120


def _content(offset: int, n: int) -> bytes:
    """Stream bytes that depend on their position, so a misplaced byte shows."""
    return bytes((offset + i) * 7 % 251 for i in range(n))


class _Model:
    """Received bytes one by one: what is readable in order, and the out-of-order blocks."""

    def __init__(self) -> None:
        self.nxt = 0
        self.held: dict[int, int] = {}
        self.ready = bytearray()

    def insert(self, offset: int, data: bytes) -> None:
        for i, b in enumerate(data):
            if offset + i >= self.nxt:
                self.held.setdefault(offset + i, b)
        while self.nxt in self.held:
            self.ready.append(self.held.pop(self.nxt))
            self.nxt += 1

    def blocks(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for pos in sorted(self.held):
            if out and out[-1][1] == pos:
                out[-1] = (out[-1][0], pos + 1)
            else:
                out.append((pos, pos + 1))
        return out

    def cost_of(self, offset: int, n: int) -> int:
        """What storing [offset, offset + n) out of order costs: new bytes plus a piece per run."""
        new = [p for p in range(max(offset, self.nxt), offset + n) if p not in self.held]
        runs = sum(1 for i, p in enumerate(new) if i == 0 or new[i - 1] != p - 1)
        return len(new) + runs * PIECE_OVERHEAD


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("seg"), st.integers(-10, WINDOW), st.integers(1, 30)),
        st.tuples(st.just("read"), st.integers(-1, 40), st.just(0)),
    ),
    max_size=60,
)


@given(_ops, st.sampled_from([1000, 4]))
def test_receive_buffer_matches_the_byte_model(ops: list[tuple[str, int, int]], load: int) -> None:
    """Any segments (overlapping, duplicate, partly old) and reads: the same bytes come out in
    the same order, the same blocks are held, and the accounting matches what is held (also
    with sublists of 4 blocks, as with thousands of blocks)."""
    buf, model = ReceiveBuffer(1 << 20, budget=1 << 30), _Model()
    buf._blocks._d._list._reset(load)
    out = bytearray()
    for op, a, b in ops:
        if op == "seg":
            offset = max(0, buf.nxt + a)
            data = _content(offset, b)
            got = buf.insert(offset, memoryview(data))
            before = model.nxt
            model.insert(offset, data)
            assert got == (model.nxt - before if offset <= before else 0)
        else:
            out += buf.read(a)
            n = len(model.ready) if a < 0 else min(a, len(model.ready))
            del model.ready[:n]
        assert buf.nxt == model.nxt
        assert buf.ooo_blocks() == model.blocks()
        assert buf.ooo_bytes == len(model.held)
        assert len(buf) == len(model.ready)
        assert buf.ooo_cost == buf.ooo_bytes + buf.ooo_pieces * PIECE_OVERHEAD
    out += buf.read()
    assert bytes(out) == _content(0, model.nxt)


@given(_ops, st.integers(300, 3000))
def test_the_budget_is_never_exceeded_and_a_refused_segment_changes_nothing(
    ops: list[tuple[str, int, int]], budget: int
) -> None:
    """Out-of-order data never costs more than the budget; a refused segment leaves every held
    byte and block as it was (no reneging) and would indeed have exceeded the budget; in-order
    data is never refused."""
    buf, model = ReceiveBuffer(1 << 20, budget=budget), _Model()
    for op, a, b in ops:
        if op == "read":
            buf.read(a)
            continue
        offset = max(0, buf.nxt + a)
        data = _content(offset, b)
        blocks_before = buf.ooo_blocks()
        cost = model.cost_of(offset, b)
        got = buf.insert(offset, data)
        if got == REFUSED:
            assert offset > buf.nxt  # only out-of-order data is ever refused
            assert buf.ooo_blocks() == blocks_before
            assert buf.ooo_cost + cost > budget
        else:
            model.insert(offset, data)
        assert buf.ooo_blocks() == model.blocks()
        assert buf.ooo_cost <= budget


_positions = st.integers(0, 200)
_sb_ops = st.lists(
    st.one_of(
        st.tuples(st.just("update"), st.lists(st.tuples(_positions, st.integers(1, 40)), max_size=4), _positions),
        st.tuples(st.just("advance"), st.integers(0, 30), st.just(0)),
        st.tuples(st.just("rexmit"), _positions, st.integers(1, 20)),
        st.tuples(st.just("lost"), _positions, st.integers(1, 20)),
        st.tuples(st.just("timeout"), st.just(0), st.just(0)),
        st.tuples(st.just("clear"), st.just(0), st.just(0)),
    ),
    max_size=40,
)


@given(_sb_ops, st.sampled_from([1000, 4]))
# A retransmission of a byte the peer had SACKed, then RACK marking a range over it and a byte
# never sent: a delivered retransmission is not a lost one (RFC 8985 §6.2 step 5), so NextSeg()
# has nothing to resend (RFC 6675 §4), least of all at or above SND.NXT.
@example(ops=[("update", [], 1), ("update", [(0, 1)], 0), ("rexmit", 0, 1), ("lost", 0, 2)], load=1000)
def test_scoreboard_answers_as_the_list_based_one(ops: list[tuple[str, object, int]], load: int) -> None:
    """RFC 6675 §3-4 queries (SetPipe, IsLost, NextSeg, the SACKed ranges) agree with the
    scoreboard from before, for any SACK blocks, cumulative ACKs, retransmissions and losses."""
    new, ref = Scoreboard(10), RefScoreboard(10)
    for ranges in (new.sacked, new.rexmit, new.lost):
        ranges._d._list._reset(load)
    max_pos = 0
    for op, a, b in ops:
        if op == "update":
            assert isinstance(a, list)
            max_pos = max(max_pos, ref.una + b)
            blocks = [(s, s + n) for s, n in a]
            ack_offset = 0
            assert new.update(blocks, ack_offset, max_pos) == ref.update(blocks, ack_offset, max_pos)
        elif op == "advance":
            assert isinstance(a, int)
            step = min(a, max(0, max_pos - ref.una))
            new.advance(step)
            ref.advance(step)
        elif op == "rexmit":
            assert isinstance(a, int)
            s = max(a, ref.una)
            new.mark_retransmitted(s, s + b)
            ref.mark_retransmitted(s, s + b)
        elif op == "lost":
            assert isinstance(a, int)
            new.mark_lost(a, a + b)
            ref.mark_lost(a, a + b)
        elif op == "timeout":
            new.after_timeout()
            ref.after_timeout()
        else:
            new.clear()
            ref.clear()
        assert new.sacked == ref.sacked and new.sacked_bytes == ref.sacked_bytes
        assert new.lost == ref.lost and new.high_rxt == ref.high_rxt and new.una == ref.una
        assert new.highest_sacked == ref.highest_sacked
        top = max(max_pos, ref.una)
        assert new.pipe(top) == ref.pipe(top)
        for pos in range(ref.una, top + 1, 7):
            assert new.is_lost(pos) == ref.is_lost(pos), pos
            assert new.sacked_range_at(pos) == ref.sacked_range_at(pos)
            assert new.next_sacked_start(pos) == ref.next_sacked_start(pos)
        for lost_only in (True, False):
            assert new.next_hole(top, lost_only=lost_only) == ref.next_hole(top, lost_only=lost_only)


_rack_ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 30), st.integers(1, 3), st.booleans()),
        st.tuples(
            st.just("ack"),
            st.integers(0, 30),
            st.lists(st.tuples(st.integers(0, 30), st.integers(1, 6)), max_size=4),
            st.booleans(),
        ),
        st.tuples(st.just("detect"), st.just(0), st.just(0), st.booleans()),
        st.tuples(st.just("tick"), st.integers(0, 12), st.just(0), st.just(False)),
    ),
    max_size=50,
)


@given(_rack_ops)
def test_rack_answers_as_the_list_based_one(ops: list[tuple[str, int, object, bool]]) -> None:
    """RFC 8985 §6.2: the same segments are delivered and declared lost, at the same times, with
    the same RACK.xmit_ts/end_seq/rtt and reorder timer, as with the state from before (for
    retransmissions, longer resends and SACK blocks that do not fall on segment boundaries)."""
    new, ref = Rack(0.25), RefRack(0.25)
    now = 0.0
    una = 0
    min_rtt = 0.01
    for op, a, b, flag in ops:
        if op == "tick":
            now += a / 4000
        elif op == "send":
            assert isinstance(b, int)
            start = 10 * a + (3 if flag and a % 3 == 0 else 0)  # now and then off the boundaries
            if start + 10 * b <= una:
                continue
            new.on_sent(start, start + 10 * b, now, flag)
            ref.on_sent(start, start + 10 * b, now, flag)
        elif op == "ack":
            assert isinstance(b, list)
            una = max(una, 10 * a if flag else una)
            blocks = [(10 * s, 10 * s + 10 * n) for s, n in b]
            new.on_ack(una, blocks, now, min_rtt)
            ref.on_ack(una, blocks, now, min_rtt)
        else:
            lost_new, at_new = new.detect_loss(now, min_rtt, 0.02, in_recovery=flag)
            lost_ref, at_ref = ref.detect_loss(now, min_rtt, 0.02, in_recovery=flag)
            assert sorted(s.start for s in lost_new) == sorted(s.start for s in lost_ref)
            assert at_new == at_ref
        assert (new.xmit_ts, new.end, new.rtt, new.reordering_seen) == (
            ref.xmit_ts,
            ref.end,
            ref.rtt,
            ref.reordering_seen,
        )
        assert {s: (g.delivered, g.lost) for s, g in new.by_start.items()} == {
            s: (g.delivered, g.lost) for s, g in ref.by_start.items()
        }


@given(
    st.lists(st.tuples(st.sampled_from(["add", "remove", "cut"]), st.integers(0, 100), st.integers(0, 20))),
    st.sampled_from([1000, 4]),
)
def test_interval_set_matches_a_set_of_integers(ops: list[tuple[str, int, int]], load: int) -> None:
    """Adds, removes and cuts: the same integers as a Python set, merged into maximal intervals,
    with the counts each call returns (also with sublists of 4 keys, so that lookups cross the
    sorted list's sublists as they do with thousands of intervals)."""
    ivs, model = IntervalSet(), set[int]()
    ivs._d._list._reset(load)
    for op, a, n in ops:
        span = set(range(a, a + n))
        if op == "add":
            assert ivs.add(a, a + n) == len(span - model)
            model |= span
        elif op == "remove":
            assert ivs.remove(a, a + n) == len(span & model)
            model -= span
        else:
            below = {p for p in model if p < a}
            assert ivs.cut_below(a) == len(below)
            model -= below
        runs: list[tuple[int, int]] = []
        for p in sorted(model):
            if runs and runs[-1][1] == p:
                runs[-1] = (runs[-1][0], p + 1)
            else:
                runs.append((p, p + 1))
        assert ivs == runs and ivs.total == len(model)
        for p in range(0, 125, 5):
            assert ivs.find(p) == next(((s, e) for s, e in runs if s <= p < e), None)
            assert ivs.gaps(p, p + 9) == _gaps(model, p, p + 9)
            assert ivs.overlap(p, p + 9) == len(model & set(range(p, p + 9)))
            assert ivs.next_start_after(p) == next((s for s, _ in runs if s > p), None)
            assert list(ivs.iter_from(p)) == [(s, e) for s, e in runs if e > p]


def _gaps(model: set[int], start: int, end: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for p in range(start, end):
        if p in model:
            continue
        if out and out[-1][1] == p:
            out[-1] = (out[-1][0], p + 1)
        else:
            out.append((p, p + 1))
    return out


def test_rack_waits_for_the_latest_segment_still_in_the_reordering_window() -> None:
    """RFC 8985 §6.2 step 5: the reorder timer is set for the last of the segments sent before
    RACK.xmit_ts that have not timed out yet (the maximum of their remaining times)."""
    for rack in (Rack(0.25), RefRack(0.25)):
        for i in range(4):  # A, B, C, D sent 1 ms apart
            rack.on_sent(1000 * i, 1000 * i + 1000, i / 1000, False)
        rack.on_ack(0, [(3000, 4000)], 0.013, 0.010)  # D SACKed: RACK.rtt = 10 ms
        lost, again = rack.detect_loss(0.013, 0.010, 0.010)  # reo_wnd = 2.5 ms
        assert [s.start for s in lost] == [0]  # A: 0 + 10 + 2.5 <= 13
        assert again is not None and abs(again - 0.0145) < 1e-9  # C's deadline, after B's (13.5)


def test_interval_set_lookups_across_many_sublists() -> None:
    """Every lookup at every position, with 200 intervals in sublists of a few keys each (the
    layout of a set of thousands of intervals), against a walk over the intervals."""
    ivs = IntervalSet()
    ivs._d._list._reset(4)
    runs = [(5 * i + 1, 5 * i + 1 + (i % 3) + 1) for i in range(200)]
    for s, e in reversed(runs):
        ivs.add(s, e)
    assert ivs == runs
    for p in range(-2, 1005):
        assert ivs.find(p) == next(((s, e) for s, e in runs if s <= p < e), None), p
        assert ivs.next_start_after(p) == next((s for s, _ in runs if s > p), None), p
        assert list(ivs.iter_from(p))[:3] == [(s, e) for s, e in runs if e > p][:3], p
        assert ivs.gaps(p, p + 12) == _gaps({q for s, e in runs for q in range(s, e)}, p, p + 12), p
