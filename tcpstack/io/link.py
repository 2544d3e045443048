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
