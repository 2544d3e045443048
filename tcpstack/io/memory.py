"""In-memory links: a connected pair of real file descriptors (a Unix datagram socketpair).

Each end satisfies :class:`tcpstack.io.link.Link`, so two stacks can run on one asyncio loop
with the ordinary :class:`~tcpstack.io.driver.AsyncioDriver`, no TUN device and no root. For
deterministic runs on a virtual clock, see :mod:`framework.simulation` instead.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from framework.checksum import BytesLike


class MemoryLink:
    """One end of an in-memory datagram link."""

    def __init__(self, sock: socket.socket, mtu: int) -> None:
        self._sock = sock
        sock.setblocking(False)
        self.mtu = mtu
        self.read_size = mtu  # tcpstack.io.link.ReadIntoLink: the buffer to lend readinto
        self.tx_errors = 0

    @classmethod
    def pair(cls, mtu: int = 1500) -> tuple[MemoryLink, MemoryLink]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        return cls(a, mtu), cls(b, mtu)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read_available(self, limit: int = 64) -> list[bytes]:
        frames: list[bytes] = []
        for _ in range(limit):
            try:
                frames.append(self._sock.recv(self.mtu))
            except BlockingIOError:
                break
        return frames

    def readinto(self, buf: bytearray | memoryview) -> int:
        """Read one frame into *buf*: its length, -1 when none waits."""
        try:
            return self._sock.recv_into(buf, self.mtu)
        except BlockingIOError:
            return -1

    def write(self, frame: bytes) -> bool:
        try:
            self._sock.send(frame)
            return True
        except OSError:
            self.tx_errors += 1
            return False

    def writev(self, parts: Sequence[BytesLike]) -> bool:
        """One datagram from its pieces (``sendmsg`` gathers them, no joined copy)."""
        try:
            self._sock.sendmsg(parts)
            return True
        except OSError:
            self.tx_errors += 1
            return False

    def close(self) -> None:
        self._sock.close()
