"""The interface the asyncio driver needs from a link at the I/O edge."""

from __future__ import annotations

from typing import Protocol


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

    def close(self) -> None: ...
