"""The receive buffer's in-order store (issue 11 item 3): any sequence of writes (in order,
overlapping, out of order) and reads (``read``, ``readinto``, ``peek`` + ``consume``) gives what a
plain bytes model gives; payload views handed to it are never kept; and a peer sending tiny
segments cannot make the work per byte grow (the bytes the store moves stay linear)."""

from __future__ import annotations

import array

from hypothesis import given, settings
from hypothesis import strategies as st

from layers.tcp.buffers import OooPool, ReceiveBuffer

STREAM = bytes((i * 7 + (i >> 8)) % 251 for i in range(1 << 16))
"""The bytes of the stream by position, so a misplaced byte shows."""


class _Model:
    def __init__(self) -> None:
        self.got: set[int] = set()
        self.nxt = 0
        self.read_pos = 0

    def insert(self, offset: int, n: int) -> None:
        self.got.update(range(offset, offset + n))
        while self.nxt in self.got:
            self.got.discard(self.nxt)
            self.nxt += 1

    def take(self, n: int) -> bytes:
        avail = self.nxt - self.read_pos
        n = avail if n < 0 or n > avail else n
        out = STREAM[self.read_pos : self.read_pos + n]
        self.read_pos += n
        return out


def _insert(buf: ReceiveBuffer, offset: int, n: int) -> None:
    """Insert through a view of a scratch buffer that is scribbled over afterwards, as the TUN
    read buffer is by the next frame: the receive buffer must have copied what it keeps."""
    scratch = bytearray(STREAM[offset : offset + n])
    with memoryview(scratch) as view:
        buf.insert(offset, view)
    scratch[:] = b"\xee" * len(scratch)


_write = st.tuples(st.sampled_from(["write", "append"]), st.integers(-300, 600), st.integers(0, 1500))
_read = st.tuples(st.sampled_from(["read", "readinto", "peek"]), st.integers(-1, 3000), st.just(0))


@settings(max_examples=300)
@given(st.lists(st.one_of(_write, _read), max_size=60), st.booleans())
def test_any_writes_and_reads_equal_a_bytes_model(ops: list[tuple[str, int, int]], pooled: bool) -> None:
    """With a stack's pool, two buffers share its spare stores: the other one's traffic,
    interleaved, must never show in this one's bytes."""
    pool = OooPool(1 << 30) if pooled else None
    buf = ReceiveBuffer(1 << 20, pool=pool)
    other = ReceiveBuffer(1 << 20, pool=pool)
    other_at = 0
    model = _Model()
    for op, a, b in ops:
        if op == "append":  # in order at RCV.NXT (the fast path's call), with or without gaps held
            n = min(b, len(STREAM) - model.nxt)
            scratch = bytearray(STREAM[model.nxt : model.nxt + n])
            before = model.nxt
            model.insert(model.nxt, n)
            assert buf.append(memoryview(scratch)) == model.nxt - before
            scratch[:] = b"\xee" * n
        elif op == "write":
            offset = max(0, model.nxt + a)  # behind, at or ahead of RCV.NXT
            n = min(b, len(STREAM) - offset)
            if n <= 0:
                continue
            _insert(buf, offset, n)
            model.insert(offset, n)
        elif op == "read":
            assert buf.read(a) == model.take(a)
        elif op == "readinto":
            size = max(a, 0)
            dst = bytearray(b"\x00" * size)
            got = buf.readinto(dst)
            want = model.take(size)
            assert got == len(want)
            assert bytes(dst[:got]) == want
        else:
            with buf.peek() as view:
                expect = STREAM[model.read_pos : model.nxt]
                assert bytes(view) == expect
                n = len(view) if a < 0 else min(a, len(view))
            buf.consume(n)
            model.take(n)
        assert buf.nxt == model.nxt
        assert len(buf) == model.nxt - model.read_pos
        other.append(b"\xdd" * 700)  # another connection takes and gives back spare stores
        other_at += 700
        if other_at % 2100 == 0:
            assert other.read() == b"\xdd" * 2100
    assert buf.read() == model.take(-1)


def test_readinto_fills_a_memoryview_of_another_format() -> None:
    buf = ReceiveBuffer(1 << 16)
    _insert(buf, 0, 10)
    dst = array.array("H", [0, 0])
    assert buf.readinto(memoryview(dst)) == 4
    assert dst.tobytes() == STREAM[:4]
    assert buf.read() == STREAM[4:10]


def test_tiny_segments_cost_linear_work() -> None:
    """A peer that keeps a backlog and trickles one byte at a time while the application reads one
    byte at a time: the bytes moved stay within a small multiple of the bytes received, and the
    store within a bound (no per-segment object, no re-copy of the whole backlog per segment)."""
    buf = ReceiveBuffer(1 << 16)
    backlog = 40_000
    offset = 0
    for _ in range(backlog):
        buf.insert(offset, STREAM[offset % 60_000 : offset % 60_000 + 1])
        offset += 1
    out = bytearray()
    for _ in range(100_000):
        buf.insert(offset, b"x")
        offset += 1
        out += buf.read(1)
        assert len(buf._data) <= 4 * backlog  # twice the live bytes (plus one append), at most
    assert len(out) == 100_000
    assert buf.moved <= 4 * offset  # linear: each byte is moved a bounded number of times
    assert len(buf) == backlog


def test_many_tiny_segments_read_in_large_and_small_pieces() -> None:
    buf = ReceiveBuffer(1 << 20)
    for i in range(20_000):
        buf.insert(i, STREAM[i : i + 1])
    assert buf.read(5) == STREAM[:5]
    dst = bytearray(1000)
    assert buf.readinto(dst) == 1000 and dst == STREAM[5:1005]
    assert buf.read() == STREAM[1005:20_000]
    assert len(buf) == 0 and buf.window == 1 << 20


def test_with_a_stack_pool_an_idle_buffer_holds_no_large_store_and_the_next_one_reuses_it() -> None:
    pool = OooPool(1 << 20)
    a, b = ReceiveBuffer(1 << 20, pool=pool), ReceiveBuffer(1 << 20, pool=pool)
    _insert(a, 0, 5000)
    store = a._data
    assert len(store) > 4096
    assert a.read(100) == STREAM[:100]
    assert a._data is store and pool.spares == []  # still data to read: the store stays
    dst = bytearray(6000)
    assert a.readinto(dst) == 4900
    assert len(a._data) == 0 and pool.spares == [store]  # read empty: back to the stack
    _insert(b, 0, 5000)
    assert b._data is store and pool.spares == []  # another connection takes it: no allocation
    with b.peek() as view:
        assert bytes(view) == STREAM[:5000]
    b.consume(5000)
    assert pool.spares == [store]
    many = [ReceiveBuffer(1 << 20, pool=pool) for _ in range(8)]
    for buf in many:  # eight connections with data at once: eight stores
        buf.append(bytes(3000))
    assert len({id(buf._data) for buf in many}) == 8 and pool.spares == []
    for buf in many:
        assert buf.read() == bytes(3000)
    assert len(pool.spares) == 4  # the spares are bounded; the rest were freed
    pool.spares.clear()
    small = ReceiveBuffer(1 << 20, pool=pool)
    small.append(bytes(100))
    kept = small._data
    assert len(kept) <= 4096 and small.read() == bytes(100)
    assert small._data is kept  # a small store stays: no pool traffic per read of small messages


def test_a_drained_store_is_reused_and_clear_frees_it() -> None:
    buf = ReceiveBuffer(1 << 20)
    _insert(buf, 0, 1448)
    store = buf._data
    assert buf.read() == STREAM[:1448]
    _insert(buf, 1448, 1448)
    assert buf._data is store  # no new allocation per segment once drained
    buf.clear()
    assert len(buf._data) == 0
