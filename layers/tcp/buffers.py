"""Send and receive buffers (RFC 9293 §3.3.1, §3.8.6; smoltcp's ``storage``).

Costs do not grow with the amount of buffered data: the send buffer is one preallocated
``bytearray`` between a head and a tail index (each byte the application writes is copied into it
once, and moved at most about once more; docs/architecture.md, "Send buffer copies"); the receive side keeps
in-order bytes in one preallocated ``bytearray`` between a head and a tail cursor (each payload
byte is copied into it once; docs/architecture.md, "Receive copies") and out-of-order pieces in a
heap, with the blocks they form
in an interval set (O(log n) per segment however many pieces a peer makes us hold), keyed by
64-bit stream offsets so sequence wrap never matters. Out-of-order data is bounded by a
per-connection and a stack-wide memory budget (docs/tcp.md, "Out-of-order data").
"""

from __future__ import annotations

import heapq
from typing import Final

from framework.checksum import BytesLike
from layers.tcp.intervals import IntervalSet

_TX_MIN_STORE: Final = 2048  # the smallest send store allocated
_TX_KEEP: Final = 4096  # a send store this small stays when everything is acknowledged (larger ones go)
_NO_TX_STORE: Final = bytearray()  # the store of an empty buffer; never written to


def _unshared(store: bytearray) -> bool:
    """True if no buffer export (no memoryview) of *store* is alive, so bytes already handed out
    may be overwritten. A resize is refused with ``BufferError`` while an export lives; popping
    the last byte and appending it back is that check without a reallocation (CPython shrinks a
    ``bytearray`` by one in place and grows it back within the same allocation)."""
    try:
        last = store.pop()
    except BufferError:
        return False
    store.append(last)
    return True


class SendBuffer:
    """Bytes the user wrote that are not yet acknowledged; offset 0 is SND.UNA.

    One preallocated ``bytearray`` (the store) holds them between a head and a tail index:
    :meth:`write` copies the application's bytes into ``store[tail:tail + n]`` (a same-size slice
    assignment: never a resize) and :meth:`consume` moves the head; each byte is copied in once.
    When a write does not fit behind the tail, the live bytes move: to the front of the same
    store when no view of it is alive and the dead prefix is at least as large as they are (the
    acknowledged bytes pay for the move), otherwise into a fresh store twice what is needed
    (the appended bytes pay: at most about one extra copy per byte, docs/architecture.md
    "Send buffer copies"). The store never exceeds twice the capacity. When everything is
    acknowledged a store larger than 4 KiB is dropped (an idle connection keeps little).

    :meth:`view` hands out memoryviews of the store (the send path writes them to the link
    without copying, docs/architecture.md "The send path"), clipped at the tail. A view's bytes
    never change afterwards: writes only fill bytes beyond the tail (never handed out), and
    live bytes are moved within a store only when no view of it is alive; otherwise they go to a
    fresh store and the views keep the old one, which nobody changes.
    """

    __slots__ = ("_buf", "_head", "_tail", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._buf = _NO_TX_STORE
        self._head = 0
        self._tail = 0

    def __len__(self) -> int:
        return self._tail - self._head

    @property
    def free(self) -> int:
        return max(0, self.capacity - (self._tail - self._head))

    def write(self, data: BytesLike) -> int:
        """Append as much of *data* as fits (the one copy of the application's bytes); return
        how many bytes were taken."""
        if isinstance(data, memoryview) and (data.itemsize != 1 or data.ndim != 1 or data.format != "B"):
            data = data.cast("B")  # count (and slice) bytes, not items
        n = min(len(data), self.capacity - (self._tail - self._head))
        if n > 0:
            tail = self._tail
            if tail + n > len(self._buf):
                tail = self._make_room(n)
            if n < len(data):
                with memoryview(data) as mv:
                    self._buf[tail : tail + n] = mv[:n]
            else:
                self._buf[tail : tail + n] = data
            self._tail = tail + n
            return n
        return 0

    def _make_room(self, n: int) -> int:
        """Room for *n* more bytes behind the live ones; returns the new tail."""
        store = self._buf
        head = self._head
        tail = self._tail
        live = tail - head
        need = live + n
        size = len(store)
        if need <= size and head >= live and _unshared(store):
            if live:
                with memoryview(store) as mv:
                    mv[:live] = mv[head:tail]  # disjoint: head >= live
            self._head = 0
            self._tail = live
            return live
        new_size = max(2 * need, _TX_MIN_STORE, min(size, 2 * self.capacity))
        fresh = bytearray(new_size)
        if live:
            with memoryview(store) as mv:
                fresh[:live] = mv[head:tail]
        self._buf = fresh
        self._head = 0
        self._tail = live
        return live

    def view(self, offset: int, size: int) -> memoryview:
        """``size`` bytes (fewer at the end) starting *offset* bytes after SND.UNA, not copied.

        The view stays valid (its bytes unchanged) however the buffer changes afterwards.
        """
        start = self._head + offset
        end = min(start + size, self._tail)
        return memoryview(self._buf)[start:end]

    def peek(self, offset: int, size: int) -> bytes:
        """A copy of ``size`` bytes (fewer at the end) starting *offset* bytes after SND.UNA."""
        start = self._head + offset
        end = min(start + size, self._tail)
        if end <= start:
            return b""
        with memoryview(self._buf) as mv:
            return bytes(mv[start:end])

    def consume(self, n: int) -> None:
        """Forget the first *n* bytes (they were acknowledged)."""
        head = self._head + n
        if head < self._tail:
            if n > 0:
                self._head = head
            return
        self._head = self._tail  # everything acknowledged
        if len(self._buf) > _TX_KEEP:  # a large store goes (views keep it while they live)
            self._buf = _NO_TX_STORE
            self._head = self._tail = 0

    def clear(self) -> None:
        self._buf = _NO_TX_STORE
        self._head = self._tail = 0


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

_RX_MIN_STORE = 2048  # the smallest in-order store allocated once data arrives


_SPARES = 4  # drained in-order stores a stack keeps for the next connection that needs one...
_SPARE_MAX = 1 << 20  # ...each at most this large (larger ones are freed)
_RX_KEEP = 4096  # a drained store this small stays with its buffer (no pool traffic per read)
_NO_STORE = bytearray()  # the store of a buffer with nothing readable; never written to


class OooPool:
    """The stack-wide budget for out-of-order data: what the pieces every connection holds out
    of order cost together (payload plus :data:`PIECE_OVERHEAD` each).

    It also keeps the stack's spare in-order stores: a receive buffer that is read empty gives
    its store back here (unless it is at most 4 KiB) and takes one when data arrives, so an idle
    connection holds at most a small store and steady traffic allocates none (at most
    :data:`_SPARES` of at most 1 MiB each)."""

    __slots__ = ("limit", "peak", "spares", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self.spares: list[bytearray] = []


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
        "_data",
        "_head",
        "_tail",
        "budget",
        "capacity",
        "moved",
        "nxt",
        "ooo_cost",
        "ooo_pieces",
        "pool",
        "refusal",
        "refused",
    )

    def __init__(self, capacity: int, budget: int | None = None, pool: OooPool | None = None) -> None:
        self.capacity = capacity
        # In-order bytes not yet read: _data[_head:_tail]. The store is allocated on demand and
        # reused: appending copies into it (no object per segment), reading moves _head.
        self._data = _NO_STORE
        self._head = 0
        self._tail = 0
        self.moved = 0  # live bytes moved to make room (compaction, growth): linear in bytes received
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
        return self._tail - self._head

    @property
    def window(self) -> int:
        """Free space for new in-order data: the receive window before scaling."""
        return max(0, self.capacity - (self._tail - self._head))

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
        # _append_ready, inlined: the per-segment path
        n = end - before
        tail = self._tail
        if tail + n > len(self._data):
            tail = self._make_room(n)
        self._data[tail : tail + n] = data
        self._tail = tail + n
        self.nxt = end
        if self._blocks:
            self._pull()
        return self.nxt - before

    def append(self, data: BytesLike) -> int:
        """Store in-order *data* that starts at RCV.NXT (``insert(self.nxt, data)``, the receive
        fast path's case); returns how many bytes became readable, as :meth:`insert` does (its
        length, plus out-of-order data it joined). A view into the frame is fine (copied once)."""
        if self._blocks:
            return self.insert(self.nxt, data)
        n = len(data)
        if not n:
            return 0
        tail = self._tail
        if tail + n > len(self._data):
            tail = self._make_room(n)
        self._data[tail : tail + n] = data
        self._tail = tail + n
        self.nxt += n
        return n

    def _append_ready(self, chunk: BytesLike) -> None:
        """Copy *chunk* (a view into the frame is fine: it is not kept) behind the readable bytes."""
        n = len(chunk)
        tail = self._tail
        if tail + n > len(self._data):
            tail = self._make_room(n)
        self._data[tail : tail + n] = chunk
        self._tail = tail + n

    def _make_room(self, n: int) -> int:
        """Room for *n* more bytes at the tail; returns the new tail. Amortized O(1) a byte:
        the live bytes move to the front only when the dead prefix is at least as large (the
        bytes read pay for it), else into a new store twice what is needed (the bytes appended
        pay for it). The store stays under twice the live bytes plus the append, and the live
        bytes are bounded by the window."""
        head = self._head
        live = self._tail - head
        pool = self.pool
        if pool is not None and not live:  # the usual case: read empty, and a spare store waits
            spares = pool.spares
            if spares and len(spares[-1]) >= n:
                self._data = spares.pop()
                self._head = 0
                return 0
        data = self._data
        tail = self._tail
        self.moved += live
        if live + n <= len(data) and head >= live:
            if live:
                with memoryview(data) as mv:
                    mv[:live] = mv[head:tail]  # memmove within the store
        else:
            size = max(2 * (live + n), _RX_MIN_STORE)
            pool = self.pool
            store = pool.spares.pop() if pool is not None and pool.spares else None
            if store is None or len(store) < size:
                store = bytearray(size)
            if live:
                store[:live] = memoryview(data)[head:tail]
            self._data = store
        self._head = 0
        self._tail = live
        return live

    def _pull(self) -> None:
        """Move the blocks that now touch or overlap RCV.NXT into the readable bytes."""
        blocks, heap = self._blocks, self._chunks
        released = 0
        pieces = 0
        while blocks and blocks.first()[0] <= self.nxt:
            _, end = blocks.pop_first()
            nxt = self.nxt
            while heap and heap[0][0] < end:
                cs, cd = heapq.heappop(heap)
                released += len(cd)
                pieces += 1
                ce = cs + len(cd)
                if ce > nxt:  # pieces of one block are contiguous: cs <= nxt here
                    self._append_ready(memoryview(cd)[nxt - cs :] if cs < nxt else cd)
                    nxt = ce
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
        """Take up to *max_bytes* (all if negative) readable bytes: one copy of just those bytes,
        whatever the segments they came in."""
        head = self._head
        avail = self._tail - head
        if not avail:
            return b""
        if max_bytes < 0 or max_bytes >= avail:
            # Everything. (The temporary view is released as soon as the copy is made.)
            store = self._data
            out = bytes(memoryview(store)[head : self._tail])
            self._head = self._tail = 0
            pool = self.pool
            if pool is not None and len(store) > _RX_KEEP:  # _drained, inlined: the per-read path
                self._data = _NO_STORE
                spares = pool.spares
                if len(spares) < _SPARES and len(store) <= _SPARE_MAX:
                    spares.append(store)
            return out
        out = bytes(memoryview(self._data)[head : head + max_bytes])
        self._head = head + max_bytes
        return out

    def readinto(self, buf: bytearray | memoryview) -> int:
        """Copy as many readable bytes as fit into *buf* (any writable bytes-like object, such as
        the buffer an :class:`asyncio.BufferedProtocol` lends) and take them; returns how many."""
        head = self._head
        n = self._tail - head
        with memoryview(buf) as dst:
            room = dst.nbytes
            if n > room:
                n = room
            if n:
                with memoryview(self._data) as mv:
                    dst.cast("B")[:n] = mv[head : head + n]
        self._advance(n)
        return n

    def peek(self) -> memoryview:
        """A read-only view of every readable byte, without taking them (:meth:`consume` does).
        Valid only until the next call on this buffer: the caller copies what it keeps and
        releases the view (``with buf.peek() as view: ...``); never store it."""
        return memoryview(self._data)[self._head : self._tail].toreadonly()

    def consume(self, n: int) -> None:
        """Take the first *n* readable bytes (after :meth:`peek`)."""
        self._advance(min(n, self._tail - self._head))

    def _advance(self, n: int) -> None:
        head = self._head + n
        if head >= self._tail:
            self._drained()
        else:
            self._head = head

    def _drained(self) -> None:
        """Nothing left to read: the store goes back to the stack's spares (without a pool, it
        stays, reused from its start)."""
        self._head = self._tail = 0
        pool = self.pool
        if pool is not None and len(self._data) > _RX_KEEP:
            store = self._data
            self._data = _NO_STORE
            if len(pool.spares) < _SPARES and len(store) <= _SPARE_MAX:
                pool.spares.append(store)

    def release_ooo(self) -> None:
        """Give up the out-of-order data (the connection is gone: nobody will read it)."""
        if self.pool is not None:
            self.pool.used -= self.ooo_cost
        self._blocks.clear()
        self._chunks.clear()
        self.ooo_cost = 0
        self.ooo_pieces = 0

    def clear(self) -> None:
        self._data = _NO_STORE
        self._head = self._tail = 0
        self.release_ooo()


def default_ooo_budget(capacity: int) -> int:
    """The per-connection out-of-order budget when none is configured: twice the receive buffer
    (room for a full window of MSS-sized pieces with their overhead, as Linux's truesize
    accounting against twice the advertised window), at least 64 KiB."""
    return max(2 * capacity, 1 << 16)
