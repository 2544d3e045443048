"""Packet capture middleware (layer type ``pcap``): a classic libpcap file writer (and, for a
path ending in ``.pcapng``, the pcapng writer of :mod:`layers.middleware.pcapng`).

Every datagram that passes, inbound and outbound, is appended to a libpcap file (magic
``0xa1b2c3d4``, microsecond timestamps, version 2.4) with link type ``LINKTYPE_RAW`` (101), so
tcpdump and Wireshark decode the bare IPv4 datagrams the TUN link carries. Packets go on
unchanged.

Record times are ``ctx.now + time_offset``: the stack's clock is monotonic, so the I/O edge sets
:attr:`PcapWriter.time_offset` to ``wall clock - monotonic clock`` to give the file real dates.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Final

import structlog

from framework.context import Context
from framework.handler import BaseHandler
from framework.packet import Packet
from framework.plugins import hookimpl
from framework.registry import Registry
from framework.settings import check_output_path

if TYPE_CHECKING:
    from framework.stack import Stack

PCAP_MAGIC: Final = 0xA1B2C3D4
"""Classic libpcap magic number (microsecond timestamps)."""
LINKTYPE_RAW: Final = 101
"""Link type for bare IP datagrams without a link header."""
_GLOBAL_HEADER: Final = struct.Struct("<IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, linktype
_RECORD_HEADER: Final = struct.Struct("<IIII")  # ts_sec, ts_usec, incl_len, orig_len
_MAX_USEC: Final = 0xFFFFFFFF * 1_000_000 + 999_999

logger = structlog.get_logger("tcpstack.pcap")


check_capture_path = check_output_path
"""The ``path`` setting's check (:func:`framework.settings.check_output_path`)."""


@dataclass(slots=True)
class PcapSettings:
    path: str = field(default="tcpstack.pcap", metadata={"check": check_capture_path})
    """File to write the capture to; created or truncated when the stack is built. A name ending
    in `.pcapng` is written as pcapng, each frame commented with the decisions taken on it
    (docs/observability.md, "Decisions in the capture"); any other name, as classic pcap."""

    snaplen: int = field(default=65535, metadata={"min": 68, "max": 262144})
    """Largest number of bytes stored per packet; longer packets are truncated in the file
    (their original length is still recorded)."""


class PcapWriter(BaseHandler):
    """Pass-through handler that records every packet to a libpcap stream.

    :param sink: a binary file-like object; the 24-byte global header is written at once.
    :param owns_sink: close *sink* in :meth:`close` (the factory's own file); otherwise
        :meth:`close` only flushes it, like :class:`gzip.GzipFile` with ``fileobj``.
    """

    time_offset: float
    """Added to ``ctx.now`` for record timestamps; the I/O edge sets it to wall - monotonic."""

    def __init__(self, name: str, sink: BinaryIO, *, snaplen: int = 65535, owns_sink: bool = False) -> None:
        self.name = name
        self.snaplen = snaplen
        self.time_offset = 0.0
        self.frames = 0
        """Records written; the last one's number in Wireshark (log events carry it as
        ``pcap_frame``, see :func:`tcpstack.logging.link_pcap`)."""
        self._sink: BinaryIO | None = sink
        self._owns_sink = owns_sink
        sink.write(self._file_header(snaplen))

    def _file_header(self, snaplen: int) -> bytes:
        """The bytes a capture starts with (classic libpcap: the 24-byte global header)."""
        return _GLOBAL_HEADER.pack(PCAP_MAGIC, 2, 4, 0, 0, snaplen, LINKTYPE_RAW)

    @property
    def closed(self) -> bool:
        return self._sink is None

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        sink = self._sink
        if sink is not None:
            self._record(sink, pkt.payload, ctx)
        return pkt

    def send(self, pkt: Packet, ctx: Context) -> Packet | None:
        sink = self._sink
        if sink is not None:
            self._record(sink, pkt.to_bytes(), ctx)
        return pkt

    def _record(self, sink: BinaryIO, data: bytes | bytearray | memoryview, ctx: Context) -> None:
        usec = round((ctx.now + self.time_offset) * 1_000_000)
        if usec < 0:
            usec = 0
        elif usec > _MAX_USEC:
            usec = _MAX_USEC
        orig = len(data)
        if orig > self.snaplen:
            data = memoryview(data)[: self.snaplen]
        try:
            sink.write(_RECORD_HEADER.pack(usec // 1_000_000, usec % 1_000_000, len(data), orig))
            sink.write(data)
        except (OSError, ValueError) as exc:  # disk full, sink closed elsewhere: stop capturing
            self._sink = None
            ctx.stats.count("pcap.write_errors")
            logger.error("pcap.write_failed", layer=self.name, error=str(exc))
            return
        self.frames += 1
        ctx.stats.count("pcap.frames")

    def sync(self) -> None:
        """Push buffered records to the sink's file (not ``flush``: that name is the
        handler interface's end-of-batch call)."""
        if self._sink is not None:
            self._sink.flush()

    def close(self) -> None:
        """Flush, close the sink if this writer owns it, and stop recording. Idempotent."""
        sink, self._sink = self._sink, None
        if sink is None:
            return
        try:
            sink.flush()
        finally:
            if self._owns_sink:
                sink.close()


def is_pcapng(path: str) -> bool:
    """Whether a capture at *path* is written as pcapng (a name ending in ``.pcapng``, any case)
    rather than classic pcap."""
    return path.lower().endswith(".pcapng")


def _pcap(name: str, settings: PcapSettings) -> PcapWriter:
    writer: type[PcapWriter] = PcapWriter
    if is_pcapng(settings.path):
        from layers.middleware.pcapng import PcapngWriter

        writer = PcapngWriter
    try:
        f = open(settings.path, "wb")  # closed by PcapWriter.close (stack_closed)
    except OSError as exc:
        raise ValueError(f"pcap.path: cannot open {settings.path}: {exc.strerror or exc}") from None
    try:
        return writer(name, f, snaplen=settings.snaplen, owns_sink=True)
    except BaseException:
        f.close()
        raise


@hookimpl
def stack_register(registry: Registry) -> None:
    registry.add_layer(
        "pcap",
        _pcap,
        PcapSettings,
        doc="record every packet to a pcap file, or a pcapng file with decision comments (LINKTYPE_RAW)",
        requires=("link",),
    )


@hookimpl
def stack_closed(stack: Stack) -> None:
    for handler in stack.pipeline.handlers:
        if isinstance(handler, PcapWriter):
            handler.close()
