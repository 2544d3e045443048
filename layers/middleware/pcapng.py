"""The pcapng capture: the ``pcap`` layer's writer for a path ending in ``.pcapng``, with the
decisions taken on each frame as that frame's comments.

The file is one pcapng section (Section Header Block, one Interface Description Block of link
type ``LINKTYPE_RAW`` with the layer's snaplen and microsecond timestamps, then one Enhanced
Packet Block per frame), little-endian, so Wireshark and ``tshark -e frame.comment`` show, beside
a frame, why the stack did what it did: ``ACK delayed, delayed_ack, RFC 1122 §4.2.3.2, deadline 40
ms``, one ``opt_comment`` per decision (:func:`framework.lazylog.describe_decision`). Frames,
their order, times and numbers are those the classic writer records (:class:`PcapWriter`).

Decisions reach the writer through a debug tap (:func:`framework.lazylog.add_debug_tap`), installed
while the writer is open; every ``tcp.decision`` event of a connection's decision log (a
:class:`~framework.lazylog.LazyLog`) passes it, whatever the log level. Which frame a decision
belongs to (docs/architecture.md, "Which frame a decision belongs to"; docs/observability.md,
"Decisions in the capture"):

- taken while an inbound frame is handled (:attr:`Context.inbound <framework.context.Context.inbound>`
  nonzero) on that frame's connection: that frame. The frame, and whatever is recorded after it,
  is held until its handling ends (the stack's next call, seen at the writer's next call or its
  end-of-batch ``flush``), then written in order; at most :data:`HOLD_MAX` records are held;
- otherwise (a timer, an application's send, the end-of-batch output): the next frame we send on
  that connection, the one it caused, with ``(decided X ms earlier)`` when its time differs.

The per-frame work is ours (one ``struct.pack`` per block), not a library's: dpkt's writer builds
an object per block and costs 5-9 µs a frame where this costs about 1 (docs/observability.md has
the measurements); dpkt, scapy and tshark read the files in the tests.
"""

from __future__ import annotations

import struct
import weakref
from socket import inet_aton
from typing import Any, BinaryIO, Final

from framework.context import Context
from framework.lazylog import add_debug_tap, describe_decision, remove_debug_tap
from framework.packet import Packet
from layers.middleware.pcap import LINKTYPE_RAW, PcapWriter, logger

HOLD_MAX: Final = 64
"""Records held at most while an inbound frame is handled (the frame and what was recorded
after it); at this many they are written without waiting, and later decisions of that handling
go to the connection's next frame we send."""
PENDING_MAX: Final = 256
"""Decisions waiting for their connection's next frame; beyond that the oldest of the connection
that has waited longest is dropped (counted as ``pcap.comments_dropped``)."""
COMMENTS_MAX: Final = 32
"""Comments on one frame at most; one more says how many were left out."""
COMMENT_BYTES: Final = 1024
"""Longest comment in bytes (UTF-8); a longer one is cut and ends with ``...``."""

LABELS_MAX: Final = 4096
"""Connection labels whose keys are cached (the cache starts again when full)."""
OPTIONS_MAX: Final = 1024
"""Comments whose encoded options are cached (a decision's text often repeats: ``ACK delayed,
delayed_ack, RFC 1122 §4.2.3.2, deadline 40 ms``)."""

BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D
_SHB: Final = 0x0A0D0D0A
_IDB: Final = 0x00000001
_EPB: Final = 0x00000006
_OPT_COMMENT: Final = 1
_SHB_USERAPPL: Final = 4
_EPB_HEAD: Final = struct.Struct("<IIIIIII")  # type, total length, interface, ts high, ts low, captured, original
_OPT_HEAD: Final = struct.Struct("<HH")  # code, length
_U32: Final = struct.Struct("<I")
_PAD: Final = (b"", b"\0\0\0", b"\0\0", b"\0")  # by length % 4
_END_OF_OPT: Final = b"\0\0\0\0"
_MAX_USEC: Final = (1 << 64) - 1


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return _U32.pack(kind) + _U32.pack(total) + body + _U32.pack(total)


def _option(code: int, value: bytes) -> bytes:
    return _OPT_HEAD.pack(code, len(value)) + value + _PAD[len(value) & 3]


def file_header(snaplen: int) -> bytes:
    """The Section Header Block (version 1.0, section length unknown, ``shb_userappl`` tcpstack)
    and the one Interface Description Block (``LINKTYPE_RAW``, *snaplen*, default microsecond
    resolution) every record refers to."""
    shb = _block(
        _SHB, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + _option(_SHB_USERAPPL, b"tcpstack") + _END_OF_OPT
    )
    idb = _block(_IDB, struct.pack("<HHI", LINKTYPE_RAW, 0, snaplen))
    return shb + idb


def epb(usec: int, data: bytes | bytearray | memoryview, orig: int, comments: list[str] | None = None) -> bytes:
    """One Enhanced Packet Block on interface 0: *data* (already cut to the snaplen), its
    original length, the time in microseconds, and one ``opt_comment`` per comment."""
    n = len(data)
    pad = _PAD[n & 3]
    opts = b""
    if comments:
        opts = b"".join([_comment_option(c) for c in comments]) + _END_OF_OPT
    total = 32 + n + len(pad) + len(opts)
    return b"".join(
        (
            _EPB_HEAD.pack(_EPB, total, 0, usec >> 32, usec & 0xFFFFFFFF, n, orig),
            data,
            pad,
            opts,
            _U32.pack(total),
        )
    )


_options: dict[str, bytes] = {}


def _comment_option(text: str) -> bytes:
    """The ``opt_comment`` option for *text* (cached)."""
    opt = _options.get(text)
    if opt is None:
        if len(_options) >= OPTIONS_MAX:
            _options.clear()
        opt = _options[text] = _option(_OPT_COMMENT, _comment_bytes(text))
    return opt


def _comment_bytes(text: str) -> bytes:
    raw = text.encode("utf-8", "replace")
    if len(raw) <= COMMENT_BYTES:
        return raw
    return raw[: COMMENT_BYTES - 3].decode("utf-8", "ignore").encode() + b"..."


def frame_conn_key(data: bytes | bytearray | memoryview, outbound: bool) -> bytes | None:
    """The connection an IPv4 datagram carrying the start of a TCP segment is on, seen from this
    stack (*outbound*: we sent it), as 12 bytes: local address, remote address, local port,
    remote port; ``None`` for anything else (another protocol, a later fragment, a datagram too
    short to tell). Compared with :func:`label_conn_key` of a decision's connection label."""
    if not isinstance(data, bytes):
        data = bytes(data[:64])  # the IPv4 header (at most 60 bytes) and the ports
    if len(data) < 24 or data[0] >> 4 != 4 or data[9] != 6:
        return None
    ihl = (data[0] & 15) * 4
    if ihl < 20 or len(data) < ihl + 4 or ((data[6] & 0x1F) << 8 | data[7]):
        return None
    if outbound:
        return data[12:20] + data[ihl : ihl + 4]
    return data[16:20] + data[12:16] + data[ihl + 2 : ihl + 4] + data[ihl : ihl + 2]


_label_keys: dict[str, bytes | None] = {}


def label_conn_key(label: str) -> bytes | None:
    """:func:`frame_conn_key`'s 12 bytes for a connection label (``ConnInfo.label``,
    ``10.0.0.2:80>10.0.0.1:4000``, local first); ``None`` for a label of another form. Cached:
    a connection's decisions all name the same label."""
    key = _label_keys.get(label, b"")
    if key != b"":
        return key
    key = None
    local, sep, remote = label.partition(">")
    la, _, lp = local.rpartition(":")
    ra, _, rp = remote.rpartition(":")
    try:
        if sep and lp.isdigit() and rp.isdigit():
            key = inet_aton(la) + inet_aton(ra) + struct.pack("!HH", int(lp), int(rp))
    except (OSError, struct.error):
        key = None
    if len(_label_keys) >= LABELS_MAX:
        _label_keys.clear()
    _label_keys[label] = key
    return key


class _Record:
    """A frame held back: its time, bytes (a copy, cut to the snaplen), original length, whether
    we sent it, its comments, and its connection (:func:`frame_conn_key`) once asked."""

    __slots__ = ("comments", "data", "hidden", "key", "now", "orig", "outbound", "usec")

    def __init__(self, usec: int, now: float, data: bytes, orig: int, outbound: bool) -> None:
        self.usec = usec
        self.now = now
        self.data = data
        self.orig = orig
        self.outbound = outbound
        self.comments: list[str] | None = None
        self.hidden = 0  # decisions beyond COMMENTS_MAX, told in one more comment
        self.key: bytes | None = b""  # b"": not computed yet

    def conn_key(self) -> bytes | None:
        key = self.key
        if key == b"":
            key = self.key = frame_conn_key(self.data, self.outbound)
        return key


class _DecisionTap:
    """The debug tap of one writer: holds it weakly, so a writer dropped without ``close`` is not
    kept alive by the tap list (its finalizer removes the tap)."""

    __slots__ = ("__weakref__", "writer")

    def __init__(self, writer: PcapngWriter) -> None:
        self.writer = weakref.ref(writer)

    def __call__(self, conn: str, plugin: str | None, event: str, kw: dict[str, Any], /) -> None:
        if event == "tcp.decision":
            writer = self.writer()
            if writer is not None:
                writer.decision(conn, plugin, kw)


class PcapngWriter(PcapWriter):
    """Pass-through handler that records every packet to a pcapng stream, with the decisions
    taken on each frame as its comments.

    :param sink: a binary file-like object; the section and interface headers are written at once.
    :param owns_sink: close *sink* in :meth:`close`; otherwise :meth:`close` only flushes it.
    """

    def __init__(self, name: str, sink: BinaryIO, *, snaplen: int = 65535, owns_sink: bool = False) -> None:
        super().__init__(name, sink, snaplen=snaplen, owns_sink=owns_sink)
        self._ctx: Context | None = None  # the context of the writer's last call: the tap reads it
        self._held: list[_Record] = []
        self._held_for = 0  # Context.inbound of the handling the held records belong to
        self._anchor: _Record | None = None  # the inbound frame being handled (the latest recorded)
        # Decisions waiting for their connection's next frame we send: (comment, time) by connection key.
        self._pending: dict[bytes, list[tuple[str, float | None]]] = {}
        self._waiting = 0  # decisions in _pending
        self.unplaced = 0
        """Decisions no frame of this capture took: their connection's label names no IPv4 TCP
        connection, or its connection sent nothing more before the capture was closed."""
        self.comments = 0
        """Comments written so far."""
        tap = _DecisionTap(self)
        add_debug_tap(tap)
        self._untap = weakref.finalize(self, remove_debug_tap, tap)

    def _file_header(self, snaplen: int) -> bytes:
        return file_header(snaplen)

    # ------------------------------------------------------------------ frames

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        if self._sink is None:
            return pkt
        self._ctx = ctx
        n = ctx.inbound
        if self._held and self._held_for != n:
            self._release()
        rec = self._make(pkt.payload, ctx, False)
        if n:  # handling of inbound frame n begins: hold it for the decisions to come
            self._held_for = n
            held = self._held
            held.append(rec)
            self._anchor = rec
            if len(held) >= HOLD_MAX:
                self._release()
        else:  # delivered outside inbound handling (a middleware's timer): nothing to wait for
            self._write(rec)
        return pkt

    def send(self, pkt: Packet, ctx: Context) -> Packet | None:
        if self._sink is None:
            return pkt
        self._ctx = ctx
        held = self._held
        if held and self._held_for != ctx.inbound:
            self._release()
            held = self._held
        data = pkt.to_bytes()
        if not held and not self._pending:  # the usual case: written at once, nothing copied
            self._count(ctx)
            self._emit(self._usec(ctx), data, len(data), None, ctx)
            return pkt
        rec = self._make(data, ctx, True)
        if self._pending:
            self._place_pending(rec)
        if held:  # a reply recorded while a frame is handled waits behind it
            held.append(rec)
            if len(held) >= HOLD_MAX:
                self._release()
        else:
            self._write(rec)
        return pkt

    def flush(self, ctx: Context) -> None:
        """End of a batch (the stack's ``frames_to_write``): the handling of any held frame is
        over; write it."""
        if self._held:
            self._release()

    def _usec(self, ctx: Context) -> int:
        usec = round((ctx.now + self.time_offset) * 1_000_000)
        return 0 if usec < 0 else _MAX_USEC if usec > _MAX_USEC else usec

    def _count(self, ctx: Context) -> None:
        # Counted when recorded, held or not: frame numbers (pcap_frame in log events) are those
        # the classic writer gives.
        self.frames += 1
        ctx.stats.count("pcap.frames")

    def _make(self, data: bytes | bytearray | memoryview, ctx: Context, outbound: bool) -> _Record:
        self._count(ctx)
        orig = len(data)
        cut = bytes(data[: self.snaplen]) if orig > self.snaplen else bytes(data)  # the read buffer is reused
        return _Record(self._usec(ctx), ctx.now, cut, orig, outbound)

    def _write(self, rec: _Record) -> None:
        ctx = self._ctx
        if ctx is not None:
            comments = rec.comments
            if rec.hidden and comments is not None:
                comments.append(f"{rec.hidden} more decision{'s' if rec.hidden > 1 else ''} not shown")
            self._emit(rec.usec, rec.data, rec.orig, comments, ctx)

    def _emit(
        self, usec: int, data: bytes | bytearray | memoryview, orig: int, comments: list[str] | None, ctx: Context
    ) -> None:
        sink = self._sink
        if sink is None:
            return
        if len(data) > self.snaplen:
            data = memoryview(data)[: self.snaplen]
        try:
            sink.write(epb(usec, data, orig, comments))
        except (OSError, ValueError) as exc:  # disk full, sink closed elsewhere: stop capturing
            self._sink = None
            self._held.clear()
            ctx.stats.count("pcap.write_errors")
            logger.error("pcap.write_failed", layer=self.name, error=str(exc))
            return
        if comments:
            self.comments += len(comments)

    def _release(self) -> None:
        """Write the held records, in order; the handling they waited for is over."""
        held = self._held
        self._held = []
        self._anchor = None
        self._held_for = 0
        for rec in held:
            self._write(rec)

    # ------------------------------------------------------------------ decisions

    def decision(self, conn: str, plugin: str | None, kw: dict[str, Any]) -> None:
        """A ``tcp.decision`` event (from the tap): comment the frame it belongs to."""
        if self._sink is None:
            return
        text = describe_decision(plugin, kw)
        ctx = self._ctx
        anchor = self._anchor
        if (
            anchor is not None
            and ctx is not None
            and ctx.inbound == self._held_for
            and anchor.conn_key() == label_conn_key(conn)
        ):
            _add(anchor, text)
            return
        key = label_conn_key(conn)
        if key is None:
            self.unplaced += 1
            return
        t = kw.get("t")
        if not isinstance(t, (int, float)):
            t = ctx.now if ctx is not None else None
        pending = self._pending
        waiting = pending.get(key)
        if waiting is None:
            pending[key] = [(text, t)]
        else:
            waiting.append((text, t))
        self._waiting += 1
        if self._waiting > PENDING_MAX:  # drop the oldest of the connection that waits longest
            first = next(iter(pending))
            oldest = pending[first]
            del oldest[0]
            if not oldest:
                del pending[first]
            self._waiting -= 1
            if ctx is not None:
                ctx.stats.count("pcap.comments_dropped")

    def _place_pending(self, rec: _Record) -> None:
        """Move the decisions waiting for *rec*'s connection onto it (we send *rec*)."""
        key = rec.conn_key()
        if key is None:
            return
        waiting = self._pending.pop(key, None)
        if waiting is None:
            return
        self._waiting -= len(waiting)
        now = rec.now
        for text, t in waiting:
            if t is not None and now - t >= 0.5e-6:
                text = f"{text} (decided {round((now - t) * 1000, 3):g} ms earlier)"
            _add(rec, text)

    # ------------------------------------------------------------------ end

    def sync(self) -> None:
        """Write the held records and push buffered ones to the sink's file."""
        if self._held:
            self._release()
        super().sync()

    def close(self) -> None:
        """Write what is held, stop taking decisions, flush, close the sink if this writer owns it.
        Decisions still waiting for a frame are counted as ``pcap.comments_unplaced``. Idempotent."""
        if self._sink is not None:
            if self._held:
                self._release()
            self.unplaced += self._waiting
            if self.unplaced and self._ctx is not None:
                self._ctx.stats.count("pcap.comments_unplaced", self.unplaced)
            self._pending = {}
            self._waiting = 0
        self._untap()
        super().close()


def _add(rec: _Record, text: str) -> None:
    comments = rec.comments
    if comments is None:
        rec.comments = [text]
    elif len(comments) < COMMENTS_MAX:
        comments.append(text)
    else:
        rec.hidden += 1
