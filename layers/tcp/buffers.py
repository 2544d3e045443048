"""Send and receive buffers (RFC 9293 §3.3.1, §3.8.6; smoltcp's ``storage``).

Costs do not grow with the amount of buffered data: the send buffer is one ``bytearray`` with a
moving head that is compacted only when the dead prefix is large; the receive side keeps
in-order bytes in a deque of chunks and out-of-order pieces in a heap, with the blocks they form
in an interval set (O(log n) per segment however many pieces a peer makes us hold), keyed by
64-bit stream offsets so sequence wrap never matters. Out-of-order data is bounded by a
per-connection and a stack-wide memory budget (docs/tcp.md, "Out-of-order data").
"""

from __future__ import annotations

import heapq
from collections import deque

from framework.checksum import BytesLike
from layers.tcp.intervals import IntervalSet

_COMPACT_AT = 1 << 16


class SendBuffer:
    """Bytes the user wrote that are not yet acknowledged; offset 0 is SND.UNA."""

    __slots__ = ("_buf", "_head", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._buf = bytearray()
        self._head = 0

    def __len__(self) -> int:
        return len(self._buf) - self._head

    @property
    def free(self) -> int:
        return max(0, self.capacity - len(self))

    def write(self, data: BytesLike) -> int:
        """Append as much of *data* as fits; return how many bytes were taken."""
        n = min(len(data), self.free)
        if n:
            self._buf += data[:n] if n < len(data) else data
        return n

    def peek(self, offset: int, size: int) -> bytes:
        """A copy of ``size`` bytes (fewer at the end) starting *offset* bytes after SND.UNA."""
        start = self._head + offset
        return bytes(self._buf[start : start + size])

    def consume(self, n: int) -> None:
        """Forget the first *n* bytes (they were acknowledged)."""
        self._head += min(n, len(self))
        if self._head >= _COMPACT_AT and self._head * 2 >= len(self._buf):
            del self._buf[: self._head]
            self._head = 0

    def clear(self) -> None:
        self._buf = bytearray()
        self._head = 0


# What one held out-of-order piece costs besides its payload, in bytes. Measured with
# tracemalloc (CPython 3.11, 64-bit; tests/layers/tcp/test_ooo_budget.py measures it again):
# 50,000 pieces of 1, 2, 8, 100 or 1000 bytes, sliced from a frame's memoryview as the stack
# does, each with a hole before it so that every piece is its own SACK block (the worst case:
# the bytes object's header, a heap entry (a tuple), a SortedDict entry with its key in the
# sorted key list and its end as an int object), took 223.4-223.6 bytes each besides the
# payload. (Pieces that join one block cost about 95 bytes less; the constant is the worst case.)
# Compiled with mypyc (docs/architecture.md "Two builds") a piece took 232.2 bytes, interpreted
# 200.2 (2026-12-07): the constant covers both builds.
PIECE_OVERHEAD = 240

REFUSED = -1
"""What :meth:`ReceiveBuffer.insert` returns for out-of-order data it did not take (over a
memory budget); ``ReceiveBuffer.refusal`` names which budget."""

_SMALL = 256  # in-order chunks shorter than this join the previous chunk...
_COALESCE = 4096  # ...while it is shorter than this (a bounded copy, never the whole buffer)


class OooPool:
    """The stack-wide budget for out-of-order data: what the pieces every connection holds out
    of order cost together (payload plus :data:`PIECE_OVERHEAD` each)."""

    __slots__ = ("limit", "peak", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0


class ReceiveBuffer:
    """Bytes received in order but not yet read, plus out-of-order data waiting for a gap.

    Offsets are stream offsets: byte 0 is the first byte after the peer's SYN. ``nxt`` is the
    offset of RCV.NXT (everything before it was received in order).

    Out-of-order data is kept as pieces (only the bytes not held yet, never re-copied) in a heap
    keyed by offset, and the blocks they form in an :class:`~layers.tcp.intervals.IntervalSet`:
    storing a segment, finding the block that holds an offset and pulling pieces in when a gap
    fills each cost O(log n) in the number of pieces held (amortized). The pieces of a block are
    joined once, when the block becomes in-order. Out-of-order data counts against ``budget``
    (this connection) and ``pool`` (the stack) at its real cost, payload plus
    :data:`PIECE_OVERHEAD` per piece; a segment that would exceed either is refused whole
    (:data:`REFUSED`), before anything acknowledges it. Nothing held is ever given up (no
    reneging, RFC 2018 §8), and in-order data is always taken: it frees what it pulls in.
    """

    __slots__ = (
        "_blocks",
        "_chunks",
        "_head",
        "_ready",
        "_ready_len",
        "budget",
        "capacity",
        "nxt",
        "ooo_cost",
        "ooo_pieces",
        "pool",
        "refusal",
        "refused",
    )

    def __init__(self, capacity: int, budget: int | None = None, pool: OooPool | None = None) -> None:
        self.capacity = capacity
        self._ready: deque[bytes] = deque()
        self._ready_len = 0
        self._head = 0  # bytes of _ready[0] already read
        self.nxt = 0
        self._blocks = IntervalSet()
        self._chunks: list[tuple[int, bytes]] = []  # heap of (start offset, data), disjoint
        self.budget = budget if budget is not None else default_ooo_budget(capacity)
        self.pool = pool
        self.ooo_cost = 0  # what the held pieces cost (payload + PIECE_OVERHEAD each)
        self.ooo_pieces = 0
        self.refused = 0  # segments refused over a budget
        self.refusal = ""  # the budget the last refused segment would have exceeded

    def __len__(self) -> int:
        """Bytes ready for the user to read."""
        return self._ready_len

    @property
    def window(self) -> int:
        """Free space for new in-order data: the receive window before scaling."""
        return max(0, self.capacity - self._ready_len)

    @property
    def has_gaps(self) -> bool:
        return bool(self._blocks)

    @property
    def ooo_bytes(self) -> int:
        """Out-of-order payload bytes held."""
        return self._blocks.total

    @property
    def ooo_block_count(self) -> int:
        return len(self._blocks)

    def ooo_blocks(self) -> list[tuple[int, int]]:
        """Out-of-order blocks as ``(start, end)`` stream offsets, in ascending order (a copy of
        all of them: for tests and diagnostics, not the per-segment path)."""
        return list(self._blocks)

    def block_at(self, offset: int) -> tuple[int, int] | None:
        """The out-of-order block holding stream offset *offset*, if any (O(log n))."""
        return self._blocks.find(offset)

    def holds(self, start: int, end: int) -> bool:
        """True if one out-of-order block holds all of ``[start, end)`` (O(log n))."""
        return self._blocks.covers(start, end)

    def top_blocks(self, k: int) -> list[tuple[int, int]]:
        """The *k* highest out-of-order blocks, highest first."""
        return self._blocks.top(k)

    def insert(self, offset: int, data: BytesLike) -> int:
        """Store *data* that starts at stream offset *offset* (already trimmed to the window).

        :returns: how many bytes became readable in order (0 for out-of-order data), or
            :data:`REFUSED` for out-of-order data over a budget (nothing was stored).
        """
        end = offset + len(data)
        before = self.nxt
        if end <= before or not data:
            return 0
        if offset > before:
            return self._insert_ooo(offset, end, data)
        if offset < before:  # RFC 9293 §3.10.7.4: use only the new part
            data = data[before - offset :]
        self._append_ready(bytes(data))
        self.nxt = end
        if self._blocks:
            self._pull()
        return self.nxt - before

    def _append_ready(self, chunk: bytes) -> None:
        ready = self._ready
        if len(chunk) < _SMALL and ready and len(ready[-1]) < _COALESCE:
            # Tiny in-order segments would otherwise cost ~40 bytes of bookkeeping each.
            ready[-1] = ready[-1] + chunk
        else:
            ready.append(chunk)
        self._ready_len += len(chunk)

    def _pull(self) -> None:
        """Move the blocks that now touch or overlap RCV.NXT into the readable bytes."""
        blocks, heap = self._blocks, self._chunks
        released = 0
        pieces = 0
        while blocks and blocks.first()[0] <= self.nxt:
            _, end = blocks.pop_first()
            nxt = self.nxt
            parts: list[bytes] = []
            size = 0
            while heap and heap[0][0] < end:
                cs, cd = heapq.heappop(heap)
                released += len(cd)
                pieces += 1
                ce = cs + len(cd)
                if ce > nxt:  # pieces of one block are contiguous: cs <= nxt here
                    part = cd[nxt - cs :] if cs < nxt else cd
                    parts.append(part)
                    size += len(part)
                    nxt = ce
            if parts:
                if len(parts) == 1 or size >= 1024 * len(parts):
                    for part in parts:
                        self._append_ready(part)
                else:  # many small pieces: one join, once
                    self._append_ready(b"".join(parts))
            self.nxt = max(nxt, end)
        cost = released + pieces * PIECE_OVERHEAD
        self.ooo_cost -= cost
        self.ooo_pieces -= pieces
        if self.pool is not None:
            self.pool.used -= cost

    def _insert_ooo(self, offset: int, end: int, data: BytesLike) -> int:
        """Store the parts of out-of-order *data* not held yet, within the budgets."""
        blocks = self._blocks
        n = end - offset
        if blocks:
            # A bound first, in O(log n): n bytes, at most one piece per held block met, plus one.
            met = blocks.count_between(offset, end, 17)
            bound = n + (met + 1) * PIECE_OVERHEAD
            if not self._fits(bound) and met > 16:
                return self._refuse()
            gaps = blocks.gaps(offset, end)
            if not gaps:
                return 0  # all held already (the SACK plugin reports it with D-SACK)
        else:
            gaps = [(offset, end)]
        new = 0
        for s, e in gaps:
            new += e - s
        cost = new + len(gaps) * PIECE_OVERHEAD
        if not self._fits(cost):
            return self._refuse()
        heap = self._chunks
        for s, e in gaps:
            heapq.heappush(heap, (s, bytes(data[s - offset : e - offset])))
        blocks.add(offset, end)
        self.ooo_cost += cost
        self.ooo_pieces += len(gaps)
        pool = self.pool
        if pool is not None:
            pool.used += cost
            if pool.used > pool.peak:
                pool.peak = pool.used
        return 0

    def _fits(self, cost: int) -> bool:
        if self.ooo_cost + cost > self.budget:
            self.refusal = "ooo_budget"
            return False
        pool = self.pool
        if pool is not None and pool.used + cost > pool.limit:
            self.refusal = "ooo_budget_stack"
            return False
        return True

    def _refuse(self) -> int:
        self.refused += 1
        return REFUSED

    def read(self, max_bytes: int = -1) -> bytes:
        """Take up to *max_bytes* (all if negative) readable bytes (work: the chunks taken, and
        the bytes copied; a partly read chunk is never copied again)."""
        if not self._ready_len:
            return b""
        ready = self._ready
        head = self._head
        if max_bytes < 0 or max_bytes >= self._ready_len:
            first = ready.popleft()
            if head:
                first = first[head:]
                self._head = 0
            if ready:
                out = b"".join([first, *ready])
                ready.clear()
            else:
                out = first
            self._ready_len = 0
            return out
        parts = []
        need = max_bytes
        while need:
            chunk = ready[0]
            avail = len(chunk) - head
            if avail <= need:
                parts.append(chunk[head:] if head else ready.popleft())
                if head:
                    ready.popleft()
                    head = 0
                need -= avail
            else:
                parts.append(chunk[head : head + need])
                head += need
                need = 0
        self._head = head
        self._ready_len -= max_bytes
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release_ooo(self) -> None:
        """Give up the out-of-order data (the connection is gone: nobody will read it)."""
        if self.pool is not None:
            self.pool.used -= self.ooo_cost
        self._blocks.clear()
        self._chunks.clear()
        self.ooo_cost = 0
        self.ooo_pieces = 0

    def clear(self) -> None:
        self._ready.clear()
        self._ready_len = 0
        self._head = 0
        self.release_ooo()


def default_ooo_budget(capacity: int) -> int:
    """The per-connection out-of-order budget when none is configured: twice the receive buffer
    (room for a full window of MSS-sized pieces with their overhead, as Linux's truesize
    accounting against twice the advertised window), at least 64 KiB."""
    return max(2 * capacity, 1 << 16)
