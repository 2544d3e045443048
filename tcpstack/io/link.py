"""The interface the asyncio driver needs from a link at the I/O edge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from framework.checksum import BytesLike


class Link(Protocol):
    """A non-blocking datagram link: one IP datagram per read or write."""

    mtu: int

    def fileno(self) -> int:
        """A file descriptor that becomes readable when frames are waiting."""
        ...

    def read_available(self, limit: int = 64) -> list[bytes]:
        """Read up to *limit* frames without blocking (an empty list when none wait)."""
        ...

    def write(self, frame: bytes) -> bool:
        """Write one frame; ``False`` if the link refused it (the caller counts a drop)."""
        ...

    def writev(self, parts: Sequence[BytesLike]) -> bool:
        """Write one frame given as pieces (headers, then payload views) with one vectored
        write, so the payload is not copied into a joined frame first; ``False`` if refused.
        Optional: the driver joins the pieces and calls :meth:`write` on a link without it."""
        ...

    def close(self) -> None: ...


class ReadIntoLink(Link, Protocol):
    """A link that reads each frame into a buffer the caller lends (``readv``/``recv_into``), so
    the driver reads every frame into one preallocated buffer instead of a new ``bytes`` a read.
    The driver uses :meth:`readinto` when a link has it and :meth:`Link.read_available` otherwise."""

    read_size: int
    """The largest frame one read may return: the size of the buffer to lend."""

    def readinto(self, buf: bytearray | memoryview) -> int:
        """Read one frame into *buf* without blocking; its length, or -1 when none waits. The
        caller reuses *buf* for the next frame: whatever keeps a frame's bytes copies them."""
        ...
