"""Send and receive buffers (RFC 9293 §3.3.1, §3.8.6; smoltcp's ``storage``).

Costs do not grow with the amount of buffered data: the send buffer is one ``bytearray`` with a
moving head that is compacted only when the dead prefix is large; the receive side keeps
in-order bytes in a deque of chunks and out-of-order segments in a short sorted list of
non-overlapping intervals, keyed by 64-bit stream offsets so sequence wrap never matters.
"""

from __future__ import annotations

import bisect
from collections import deque

from framework.checksum import BytesLike

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


class ReceiveBuffer:
    """Bytes received in order but not yet read, plus out-of-order data waiting for a gap.

    Offsets are stream offsets: byte 0 is the first byte after the peer's SYN. ``nxt`` is the
    offset of RCV.NXT (everything before it was received in order).
    """

    __slots__ = ("_ooo", "_ooo_starts", "_ready", "_ready_len", "capacity", "nxt", "ooo_bytes")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ready: deque[bytes] = deque()
        self._ready_len = 0
        self.nxt = 0
        self._ooo_starts: list[int] = []
        self._ooo: list[tuple[int, bytes]] = []  # (start offset, data), sorted, disjoint
        self.ooo_bytes = 0

    def __len__(self) -> int:
        """Bytes ready for the user to read."""
        return self._ready_len

    @property
    def window(self) -> int:
        """Free space for new in-order data: the receive window before scaling."""
        return max(0, self.capacity - self._ready_len)

    @property
    def has_gaps(self) -> bool:
        return bool(self._ooo)

    def ooo_blocks(self) -> list[tuple[int, int]]:
        """Out-of-order intervals as ``(start, end)`` stream offsets, in ascending order."""
        return [(s, s + len(d)) for s, d in self._ooo]

    def insert(self, offset: int, data: BytesLike) -> int:
        """Store *data* that starts at stream offset *offset* (already trimmed to the window).

        :returns: how many bytes became readable in order (0 for out-of-order data).
        """
        end = offset + len(data)
        if end <= self.nxt or not data:
            return 0
        if offset < self.nxt:  # RFC 9293 §3.10.7.4: use only the new part
            data = data[self.nxt - offset :]
            offset = self.nxt
        if offset > self.nxt:
            self._insert_ooo(offset, bytes(data))
            return 0
        chunk = bytes(data)
        self._append_ready(chunk)
        before = self.nxt
        self.nxt = end
        # Pull in out-of-order segments that now touch or overlap the in-order edge.
        while self._ooo and self._ooo[0][0] <= self.nxt:
            start, d = self._ooo.pop(0)
            self._ooo_starts.pop(0)
            self.ooo_bytes -= len(d)
            if start + len(d) > self.nxt:
                tail = d[self.nxt - start :]
                self._append_ready(tail)
                self.nxt += len(tail)
        return self.nxt - before

    def _append_ready(self, chunk: bytes) -> None:
        self._ready.append(chunk)
        self._ready_len += len(chunk)

    def _insert_ooo(self, offset: int, data: bytes) -> None:
        """Keep intervals disjoint: drop bytes we already hold, merge neighbours."""
        end = offset + len(data)
        i = bisect.bisect_left(self._ooo_starts, offset)
        if i > 0:
            ps, pd = self._ooo[i - 1]
            pe = ps + len(pd)
            if pe >= end:
                return  # wholly inside what we hold
            if pe >= offset:  # overlaps or touches the previous interval: extend it
                data = pd + data[pe - offset :]
                offset = ps
                i -= 1
                self._ooo_starts.pop(i)
                self._ooo.pop(i)
                self.ooo_bytes -= len(pd)
        end = offset + len(data)
        while i < len(self._ooo) and self._ooo[i][0] <= end:
            ns, nd = self._ooo[i]
            ne = ns + len(nd)
            if ne > end:
                data = data + nd[end - ns :]
                end = ne
            self._ooo_starts.pop(i)
            self._ooo.pop(i)
            self.ooo_bytes -= len(nd)
        self._ooo_starts.insert(i, offset)
        self._ooo.insert(i, (offset, data))
        self.ooo_bytes += len(data)

    def read(self, max_bytes: int = -1) -> bytes:
        """Take up to *max_bytes* (all if negative) readable bytes."""
        if not self._ready_len:
            return b""
        if max_bytes < 0 or max_bytes >= self._ready_len:
            if len(self._ready) == 1:
                out = self._ready.popleft()
            else:
                out = b"".join(self._ready)
                self._ready.clear()
            self._ready_len = 0
            return out
        parts = []
        need = max_bytes
        while need:
            chunk = self._ready[0]
            if len(chunk) <= need:
                parts.append(self._ready.popleft())
                need -= len(chunk)
            else:
                parts.append(chunk[:need])
                self._ready[0] = chunk[need:]
                need = 0
        self._ready_len -= max_bytes
        return b"".join(parts)

    def clear(self) -> None:
        self._ready.clear()
        self._ready_len = 0
        self._ooo.clear()
        self._ooo_starts.clear()
        self.ooo_bytes = 0
