"""An :class:`asyncio.Transport` over one TCP connection of a stack.

What :meth:`StackApi.create_connection <tcpstack.streams.StackApi.create_connection>` and
:meth:`~tcpstack.streams.StackApi.create_server` hand to a protocol, so that protocol code
written for asyncio's own sockets runs unchanged. It behaves as asyncio's socket transport:

- call order on the protocol: ``connection_made -> data_received* -> eof_received? ->
  connection_lost``; if ``eof_received()`` returns a false value the transport closes itself
  (it sends FIN), a true value keeps the sending side open (a half-close, RFC 9293 §3.6.1);
- ``close()`` sends what was written, then FIN; the protocol's ``connection_lost(None)`` follows
  as soon as everything written is in the connection's send buffer (as asyncio's follows once
  its buffer reached the kernel's socket buffer): the stack finishes the close on its own, as
  the kernel does for a closed socket. ``abort()`` resets the connection (RST) and drops what is
  buffered; a reset or timeout from the peer reaches ``connection_lost(exc)`` as
  ``ConnectionResetError``, ``ConnectionRefusedError`` or ``TimeoutError``;
- flow control: the connection's send buffer (the ``send_buffer`` option) plays the kernel
  socket buffer; what does not fit waits in the transport, and ``get_write_buffer_size()`` is
  that overflow. Above the high-water mark the protocol gets ``pause_writing()``, at or below
  the low-water mark ``resume_writing()`` (``set_write_buffer_limits``, asyncio's rule; both 0
  by default: pause while anything waits, so ``await writer.drain()`` waits exactly while the
  send buffer is full). ``pause_reading()`` stops taking bytes out of the connection, so the advertised window
  closes and the peer stops (RFC 9293 §3.8.6.2.2);
- ``get_extra_info``: ``peername`` and ``sockname`` as ``(host, port)``, ``socket`` is ``None``
  (there is none), plus ``tcp_state``, ``tcp_info`` (what ``tcpstack ss`` shows), ``soft_error``
  and ``connection`` (the :class:`~layers.tcp.connection.TcpConnection`);
- reading: an :class:`asyncio.BufferedProtocol` gets ``get_buffer(sizehint)`` (*sizehint* is
  the number of bytes readable) and ``buffer_updated(nbytes)`` instead of ``data_received``: the
  receive buffer copies straight into the protocol's buffer, again while bytes remain, reading
  stays on and the buffers lent are not empty (an empty one is asyncio's ``RuntimeError``). An
  :class:`asyncio.StreamReaderProtocol` (the streams API) gets a read-only view of the receive
  buffer, which its ``StreamReader`` copies into its own buffer at once; any other protocol gets
  ``bytes``. docs/architecture.md, "Receive copies", counts the copies;
- ``loop.sendfile(transport, file)`` works (asyncio's fallback: read and ``write()``);
- an exception raised by a protocol callback is reported to the loop's exception handler and
  aborts that connection (asyncio's "Fatal error: protocol.data_received() call failed.").
"""

from __future__ import annotations

import asyncio
import socket
from asyncio.constants import _SendfileMode
from asyncio.transports import _FlowControlMixin
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import structlog

from layers.tcp import receiver
from layers.tcp.connection import TcpConnection
from layers.tcp.events import (
    Connected,
    ConnectionClosed,
    ConnectionFailed,
    DataReceived,
    EofReceived,
    SendSpaceAvailable,
    TcpEvent,
)

if TYPE_CHECKING:
    from tcpstack.streams import StackApi

logger = structlog.get_logger("tcpstack.transport")

#: After this many writes to a lost connection, each further one logs a warning (asyncio's
#: ``LOG_THRESHOLD_FOR_CONNLOST_WRITES``); the writes themselves are dropped silently.
LOG_THRESHOLD_FOR_CONNLOST_WRITES = 5


def failure_exception(reason: str, detail: str) -> OSError:
    """The built-in exception for a :class:`ConnectionFailed` reason."""
    if reason == "refused":
        return ConnectionRefusedError(111, detail or "Connection refused")
    if reason == "timeout":
        return TimeoutError(110, detail or "Connection timed out")
    if reason == "unreachable":
        return ConnectionRefusedError(113, detail or "No route to host")
    return ConnectionResetError(104, detail or "Connection reset by peer")


# How a protocol takes received bytes: BufferedProtocol's get_buffer/buffer_updated, a view for
# asyncio's own StreamReaderProtocol (which copies it at once), bytes for any other protocol.
_BYTES, _VIEW, _BUFFERED = "bytes", "view", "buffered"


#: A protocol class attribute: ``True`` lets the transport hand ``data_received`` a memoryview of
#: the connection's receive buffer, valid during the call only (docs/embedding.md, "Receiving
#: without a copy"): no copy at all. asyncio's own transports never look at it.
DATA_VIEWS_ATTR = "tcpstack_data_views"


def _read_mode(protocol: asyncio.BaseProtocol) -> str:
    if isinstance(protocol, asyncio.BufferedProtocol):
        return _BUFFERED
    if type(protocol) is asyncio.StreamReaderProtocol:  # exactly: a subclass may keep what it gets
        return _VIEW
    if getattr(protocol, DATA_VIEWS_ATTR, False) is True:  # the protocol said it keeps nothing
        return _VIEW
    return _BYTES


def _addr(raw: tuple[bytes, int]) -> tuple[str, int]:
    return (socket.inet_ntoa(raw[0]), raw[1])


class _Pending:
    """Bytes written that wait for room in the connection's send buffer, oldest first.

    Immutable data (``bytes``, or a read-only view of ``bytes``) is kept by reference: nobody can
    change it, so the only copy of its bytes is the one into the send buffer (docs/architecture.md,
    "Offload send"). Anything else is copied at once, since the writer may reuse its buffer after
    ``write()`` returns (asyncio's contract).
    """

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        self.chunks: deque[memoryview] = deque()
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if not (view.readonly and isinstance(view.obj, bytes)):
            view = memoryview(bytes(view))
        self.chunks.append(view)
        self.size += view.nbytes

    def move_to(self, conn: TcpConnection, now: float) -> int:
        """Put as much as fits into *conn*'s send buffer (oldest first); return how much."""
        chunks = self.chunks
        moved = 0
        while chunks:
            chunk = chunks[0]
            taken = conn.send(chunk, now)
            moved += taken
            if taken < chunk.nbytes:
                if taken:
                    chunks[0] = chunk[taken:]
                break
            chunks.popleft()
        self.size -= moved
        return moved

    def clear(self) -> None:
        self.chunks.clear()
        self.size = 0


class TcpTransport(_FlowControlMixin):
    """An asyncio transport over one TCP connection of a stack.

    It derives from asyncio's own flow-control base of its socket transports (the write-buffer
    limits and the ``pause_writing``/``resume_writing`` rule) because ``loop.sendfile()`` accepts
    no other transports; aiohttp's ``web.FileResponse`` sends files through it.
    """

    _sendfile_compatible = _SendfileMode.FALLBACK  # loop.sendfile(): read the file, write() it

    def __init__(self, api: StackApi, conn: TcpConnection) -> None:
        super().__init__(None, api.loop)
        # Pause while anything waits beyond the connection's send buffer. (The mixin's private
        # helpers are not in typeshed, hence the ignores here and below.)
        self._set_write_buffer_limits(high=0, low=0)  # type: ignore[attr-defined]
        self._api = api
        self._conn = conn
        self._protocol: asyncio.BaseProtocol | None = None
        self._read_mode = _BYTES  # how the protocol takes received bytes (set_protocol)
        self._pending = _Pending()  # written but not yet in the connection's send buffer
        self._reading = True
        self._closing = False
        self._eof_requested = False
        self._eof_pending = False  # the peer's EOF, not yet handed to the protocol
        self._eof_delivered = False
        self._lost = False  # connection_lost was called (or is scheduled)
        self._conn_lost_writes = 0
        self._exc: Exception | None = None
        self._connected: asyncio.Future[None] | None = None
        conn.listener = self

    # ------------------------------------------------------------------ asyncio.BaseTransport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        conn = self._conn
        if name == "peername":
            return _addr(conn.remote)
        if name == "sockname":
            return _addr(conn.local)
        if name == "socket":
            return None  # no operating-system socket: the connection lives in this process
        if name == "tcp_state":
            return conn.state.value
        if name == "connection":
            return conn
        if name == "tcp_info":
            return conn.status()
        if name == "soft_error":
            return conn.soft_error  # the latest ICMP soft error (RFC 9293 §3.9.2.2)
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Send what was written, then close both directions (FIN, RFC 9293 §3.10.4)."""
        if self._closing:
            return
        self._closing = True
        self._reading = False
        if not self._pending:
            self._close_connection()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._read_mode = _read_mode(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        if self._protocol is None:
            raise RuntimeError("transport has no protocol yet")
        return self._protocol

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<TcpTransport {self._conn.label} {state}>"

    # ------------------------------------------------------------------ reading

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if self._closing or self._reading:
            return
        self._reading = True
        self._deliver_data()
        self._maybe_deliver_eof()

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if self._eof_requested:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self._lost or (self._closing and not self._pending):
            # As asyncio: writes to a connection that is gone are dropped, with a warning
            # once they keep coming.
            if self._conn_lost_writes >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("transport.write_after_close", conn=self._conn.label)
            self._conn_lost_writes += 1
            return
        if isinstance(data, memoryview) and (data.format != "B" or data.ndim != 1):
            data = data.cast("B")  # count bytes, not items
        conn = self._conn
        if self._pending:
            self._pending.append(data)
        else:
            taken = conn.send(data, self._now())
            if taken < len(data):
                self._pending.append(memoryview(data)[taken:])
            self._api.kick(conn)
        self._maybe_pause_protocol()  # type: ignore[attr-defined]

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: FIN after everything written so far (RFC 9293 §3.6.1)."""
        if self._closing or self._eof_requested:
            return
        self._eof_requested = True
        if not self._pending and not self._lost:
            self._conn.shutdown(self._now())
            self._api.kick(self._conn)

    def get_write_buffer_size(self) -> int:
        """Bytes written that wait for room in the connection's send buffer."""
        return len(self._pending)

    def abort(self) -> None:
        """Reset the connection (RST, RFC 9293 §3.10.5) and drop everything buffered."""
        self._pending.clear()
        self._closing = True
        self._reading = False
        self._conn.abort(self._now())
        self._api.kick(self._conn)
        self._lose(None)

    # ------------------------------------------------------------------ the protocol

    def attach(self, protocol: asyncio.BaseProtocol) -> None:
        """Give the transport its protocol: ``connection_made``, then whatever already arrived."""
        self.set_protocol(protocol)
        try:
            protocol.connection_made(self)
        except Exception as exc:
            self._fatal_error(exc, "protocol.connection_made() call failed.")
            return
        self._deliver_data()
        self._maybe_deliver_eof()

    # ------------------------------------------------------------------ events from the stack

    def handle_event(self, conn: TcpConnection, event: TcpEvent) -> None:
        """Called by the TCP layer (via the driver) with each connection event, in order."""
        if isinstance(event, DataReceived):
            self._deliver_data()
        elif isinstance(event, SendSpaceAvailable):
            self._refill()
        elif isinstance(event, EofReceived):
            self._eof_pending = True
            self._maybe_deliver_eof()
        elif isinstance(event, Connected):
            if self._connected is not None and not self._connected.done():
                self._connected.set_result(None)
        elif isinstance(event, ConnectionFailed):
            self._exc = failure_exception(event.reason, event.detail)
            if self._connected is not None and not self._connected.done():
                self._connected.set_exception(self._exc)
        elif isinstance(event, ConnectionClosed):
            if self._connected is not None and not self._connected.done():
                self._connected.set_exception(self._exc or ConnectionResetError(104, "Connection closed"))
            self._closing = True
            self._lose(self._exc)

    def _deliver_data(self) -> None:
        protocol = self._protocol
        if protocol is None or self._lost or not self._reading or self._closing:
            return
        conn = self._conn
        if not conn.readable:
            return
        mode = self._read_mode
        if mode is _BUFFERED:
            self._deliver_buffered(cast(asyncio.BufferedProtocol, protocol))
        elif mode is _VIEW:
            # StreamReaderProtocol.data_received -> StreamReader.feed_data copies the view into
            # the reader's buffer at once and keeps nothing: one copy, no bytes in between. A
            # protocol with tcpstack_data_views = True keeps nothing either (or copies itself).
            with conn.rcvbuf.peek() as view:
                n = len(view)
                try:
                    protocol.data_received(view)  # type: ignore[attr-defined]
                except Exception as exc:
                    self._fatal_error(exc, "protocol.data_received() call failed.")
                    return
            receiver.consume(conn, n)
        else:
            data = conn.read()
            try:
                protocol.data_received(data)  # type: ignore[attr-defined]
            except Exception as exc:
                self._fatal_error(exc, "protocol.data_received() call failed.")
                return
        self._api.kick(conn)  # reading may open the window: let the layer send an update

    def _deliver_buffered(self, protocol: asyncio.BufferedProtocol) -> None:
        """asyncio's BufferedProtocol calls (get_buffer, buffer_updated) while bytes remain:
        the receive buffer copies straight into the protocol's buffer."""
        conn = self._conn
        while self._reading and not self._closing and not self._lost:
            readable = conn.readable
            if not readable:
                return
            try:
                # Released before buffer_updated: the protocol may resize its buffer there.
                with memoryview(protocol.get_buffer(readable)) as buf:
                    if not buf.nbytes:
                        raise RuntimeError("get_buffer() returned an empty buffer")
                    n = conn.readinto(buf)
            except Exception as exc:
                self._fatal_error(exc, "protocol.get_buffer() call failed.")
                return
            try:
                protocol.buffer_updated(n)
            except Exception as exc:
                self._fatal_error(exc, "protocol.buffer_updated() call failed.")
                return

    def _maybe_deliver_eof(self) -> None:
        if not self._eof_pending or self._eof_delivered or self._protocol is None or self._lost:
            return
        if not self._reading or self._closing or self._conn.readable:
            return  # the bytes before the FIN first; nothing while paused
        self._eof_delivered = True
        try:
            keep_open = self._protocol.eof_received()  # type: ignore[attr-defined]
        except Exception as exc:
            self._fatal_error(exc, "protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    def _refill(self) -> None:
        if self._lost:
            return
        conn = self._conn
        if self._pending:
            if self._pending.move_to(conn, self._now()):
                self._api.kick(conn)
        self._maybe_resume_protocol()  # type: ignore[attr-defined]
        if not self._pending:
            if self._closing:
                self._close_connection()
            elif self._eof_requested:
                conn.shutdown(self._now())
                self._api.kick(conn)

    def _close_connection(self) -> None:
        """Everything written is in the connection: close it and let the protocol go."""
        if self._lost:
            return
        self._conn.close(self._now())
        self._api.kick(self._conn)
        self._lose(None)

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._pending.clear()
        if self._protocol is not None and (self._connected is None or self._connected.done()):
            self._api.loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Exception | None) -> None:
        protocol = self._protocol
        if protocol is None:
            return
        try:
            protocol.connection_lost(exc)
        except Exception as error:
            self._api.loop.call_exception_handler(
                {"message": "protocol.connection_lost() call failed.", "exception": error, "transport": self}
            )

    def _fatal_error(self, exc: Exception, message: str) -> None:
        """A protocol callback raised: report it and reset this connection (asyncio does the same)."""
        self._api.loop.call_exception_handler(
            {"message": f"Fatal error: {message}", "exception": exc, "transport": self, "protocol": self._protocol}
        )
        self._pending.clear()
        self._closing = True
        self._reading = False
        self._conn.abort(self._now())
        self._api.kick(self._conn)
        self._lose(exc)

    def _now(self) -> float:
        return self._api.loop.time()
