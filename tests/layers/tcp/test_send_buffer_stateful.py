"""The send buffer (layers/tcp/buffers.py ``SendBuffer``, docs/architecture.md "Send buffer
copies") against a trivial reference model, a ``bytes`` of what is unacknowledged, as a hypothesis
state machine: random writes (bytes, bytearray, memoryviews of bytes, of slices, of 2- and 4-byte
items and of 2-D arrays), views kept alive across later steps, peeks, ACKs, clears and capacity
changes. After every step the buffer holds the model's bytes and every view still alive holds the
bytes it had when it was taken. Plus a check that the buffer no longer copies each byte many times
(tracemalloc counts what the writes allocate)."""

from __future__ import annotations

import array
import tracemalloc

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from layers.tcp.buffers import SendBuffer

KINDS = ["bytes", "bytearray", "view", "slice", "words", "dwords", "2d"]


def _payload(counter: int, n: int) -> bytes:
    """*n* bytes that differ from write to write (so a stale or overwritten byte shows)."""
    pattern = bytes((counter * 7 + i) & 0xFF for i in range(251))
    return (pattern * (n // 251 + 1))[:n]


def _as(kind: str, data: bytes) -> bytes | bytearray | memoryview:
    if kind == "bytearray":
        return bytearray(data)
    if kind == "view":
        return memoryview(data)
    if kind == "slice":
        return memoryview(b"xx" + data + b"yy")[2 : 2 + len(data)]
    if kind == "words":
        return memoryview(array.array("H", data))
    if kind == "dwords":
        return memoryview(array.array("I", data))
    if kind == "2d" and len(data) >= 2:
        return memoryview(data).cast("B", (2, len(data) // 2))
    return data


class SendBufferMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.buf = SendBuffer(4096)
        self.model = b""
        self.capacity = 4096
        self.held: list[tuple[memoryview, bytes]] = []
        self.counter = 0

    @rule(
        n=st.one_of(st.integers(0, 3000), st.integers(0, 9000), st.integers(0, 300_000)),
        kind=st.sampled_from(KINDS),
    )
    def write(self, n: int, kind: str) -> None:
        self.counter += 1
        if kind in ("words", "2d"):
            n -= n % 2
        elif kind == "dwords":
            n -= n % 4
        data = _payload(self.counter, n)
        taken = self.buf.write(_as(kind, data))
        assert taken == min(n, max(0, self.capacity - len(self.model)))
        self.model += data[:taken]

    @rule(
        offset=st.one_of(st.integers(0, 3000), st.integers(0, 1 << 20)),
        size=st.one_of(st.integers(0, 4400), st.integers(0, 1 << 20)),
    )
    def hold_view(self, offset: int, size: int) -> None:
        offset %= len(self.model) + 2  # sometimes past the end
        v = self.buf.view(offset, size)
        expected = self.model[offset : offset + size]
        assert bytes(v) == expected
        self.held.append((v, expected))

    @precondition(lambda self: bool(self.held))
    @rule(i=st.integers(0, 100))
    def release_view(self, i: int) -> None:
        v, _ = self.held.pop(i % len(self.held))
        v.release()

    @rule(offset=st.integers(0, 1 << 20), size=st.integers(0, 1 << 20))
    def peek(self, offset: int, size: int) -> None:
        offset %= len(self.model) + 2
        got = self.buf.peek(offset, size)
        assert isinstance(got, bytes)
        assert got == self.model[offset : offset + size]

    @rule(n=st.one_of(st.integers(0, 3 * 1448), st.integers(0, 9000), st.integers(0, 400_000)))
    def consume(self, n: int) -> None:
        self.buf.consume(n)
        self.model = self.model[min(n, len(self.model)) :]

    @rule()
    def consume_all(self) -> None:
        self.buf.consume(len(self.model))
        self.model = b""

    @precondition(lambda self: len(self.model) < 10)
    @rule()
    def clear(self) -> None:
        self.buf.clear()
        self.model = b""

    @rule(capacity=st.sampled_from([0, 1, 1000, 4096, 65_536, 200_000, 1 << 20]))
    def set_capacity(self, capacity: int) -> None:
        self.buf.capacity = capacity
        self.capacity = capacity

    @invariant()
    def same_bytes(self) -> None:
        model = self.model
        assert len(self.buf) == len(model)
        assert self.buf.free == max(0, self.capacity - len(model))
        assert bytes(self.buf.view(0, len(model) + 10)) == model
        assert self.buf.peek(1, 100) == model[1:101]
        for v, expected in self.held:
            assert bytes(v) == expected  # a view keeps its bytes whatever happened since

    def teardown(self) -> None:
        for v, _ in self.held:
            v.release()


SendBufferMachine.TestCase.settings = settings(max_examples=400, stateful_step_count=50, deadline=None)
test_send_buffer_state_machine = SendBufferMachine.TestCase


def test_clear_with_everything_written_keeps_views() -> None:
    buf = SendBuffer(1 << 16)
    buf.write(b"a" * 5000)
    v = buf.view(100, 50)
    buf.clear()
    buf.write(b"b" * 60_000)
    assert bytes(v) == b"a" * 50
    assert bytes(buf.view(0, 10)) == b"b" * 10


def test_an_idle_buffer_keeps_at_most_a_small_store() -> None:
    """Everything acknowledged: a large store is dropped (an idle connection costs little)."""
    buf = SendBuffer(1 << 20)
    buf.write(bytes(500_000))
    buf.consume(500_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        buf.write(b"x" * 100)
        buf.consume(100)
        assert tracemalloc.get_traced_memory()[0] - before <= 4096 + 100
    finally:
        tracemalloc.stop()


def test_streaming_allocates_seldom_and_moves_each_byte_at_most_once() -> None:
    """The send path's pattern (64 KiB writes while there is room, 2-segment ACKs, a view of the
    next segments taken and dropped per ACK, as the driver does): after the first few writes
    the buffer allocates no new store, and the live bytes it moves to make room stay under the
    bytes written (at most one extra copy per byte)."""
    capacity = 256 * 1024
    buf = SendBuffer(capacity)
    chunk = bytes(64 * 1024)
    total = 32 * 1024 * 1024
    written = 0
    moved = 0
    stores = 0
    store = buf._buf
    while written < total:
        while buf.free:
            before = len(buf)
            tail_before = buf._tail
            written += buf.write(chunk)
            if buf._tail - tail_before != len(buf) - before:
                moved += before
            if buf._buf is not store:
                stores += 1
                store = buf._buf
        while len(buf) > capacity // 2:
            with buf.view(2 * 1448, 2 * 1448) as v:
                assert len(v) == 2 * 1448
            buf.consume(2 * 1448)
    assert stores <= 3, stores
    assert moved <= written, (moved, written)


def test_a_view_of_acknowledged_bytes_survives_the_move_to_the_front() -> None:
    """The live bytes move to the front of the store only when no view of it is alive: a view
    of bytes already acknowledged (the front of the store) keeps them."""
    buf = SendBuffer(4096)
    first = _payload(1, 4096)
    assert buf.write(first) == 4096
    v = buf.view(0, 100)
    buf.consume(3000)
    buf.write(_payload(2, 3000))
    buf.consume(3000)
    assert buf.write(_payload(3, 2000)) == 2000  # no room behind the tail: the live bytes move
    assert bytes(v) == first[:100]
    assert buf.peek(0, 5000) == _payload(2, 3000)[1904:] + _payload(3, 2000)
    v.release()
