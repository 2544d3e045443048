"""The user API in asyncio's own vocabulary: ``open_connection`` and ``start_server`` returning
:class:`asyncio.StreamReader` / :class:`asyncio.StreamWriter` pairs over tcpstack's TCP.

:class:`TcpTransport` is a complete :class:`asyncio.Transport` over one
:class:`~layers.tcp.connection.TcpConnection`. Call order on its protocol, as asyncio defines:
``connection_made -> data_received* -> eof_received? -> connection_lost``.

Flow control is real both ways: ``write()`` puts bytes into the connection's send buffer and
keeps the overflow in the transport, calling ``pause_writing()`` while any overflow exists, so
``await writer.drain()`` waits exactly while the send buffer is full; ``pause_reading()``
(the StreamReader calls it when its buffer is full) stops taking bytes out of the
connection, so the advertised window closes and the peer stops.

Remote failures reach the user as the built-in exceptions: ``ConnectionRefusedError``,
``ConnectionResetError`` and ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import fields, replace
from typing import Any, Literal, cast, get_args, get_origin, get_type_hints

from framework.stack import Stack
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
from layers.tcp.handler import Listener, TcpLayer
from layers.tcp.policy import TcpOptions
from tcpstack.io.driver import AsyncioDriver

ClientConnectedCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]

_OPTION_NAMES = frozenset(f.name for f in fields(TcpOptions))
_OPTION_TYPES = get_type_hints(TcpOptions)


def _failure_exception(reason: str, detail: str) -> OSError:
    if reason == "refused":
        return ConnectionRefusedError(111, detail or "Connection refused")
    if reason == "timeout":
        return TimeoutError(110, detail or "Connection timed out")
    if reason == "unreachable":
        return ConnectionRefusedError(113, detail or "No route to host")
    return ConnectionResetError(104, detail or "Connection reset by peer")


def _addr(raw: tuple[bytes, int]) -> tuple[str, int]:
    return (socket.inet_ntoa(raw[0]), raw[1])


class TcpTransport(asyncio.Transport):
    """An asyncio transport over one TCP connection of a stack."""

    def __init__(self, api: StackApi, conn: TcpConnection) -> None:
        super().__init__()
        self._api = api
        self._conn = conn
        self._protocol: asyncio.BaseProtocol | None = None
        self._pending = bytearray()  # written but not yet in the connection's send buffer
        self._write_paused = False
        self._reading = True
        self._closing = False
        self._eof_requested = False
        self._eof_pending = False  # peer EOF seen while reading was paused
        self._lost = False
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
        if name == "tcp_state":
            return conn.state.value
        if name == "connection":
            return conn
        if name == "tcp_info":
            return conn.status()
        if name == "soft_error":
            return conn.soft_error  # the latest ICMP soft error (RFC 9293 §3.9.2.2, SHLD-25)
        return default

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        """Send what was written, then close both directions (FIN)."""
        if self._closing:
            return
        self._closing = True
        self._reading = False
        if not self._pending:
            self._conn.close(self._now())
            self._api.kick(self._conn)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        if self._protocol is None:
            raise RuntimeError("transport has no protocol yet")
        return self._protocol

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
        if self._eof_pending and not self._conn.readable:
            self._eof_pending = False
            self._deliver_eof()
        self._api.kick(self._conn)

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._closing or self._eof_requested or self._lost:
            raise RuntimeError("write after close or write_eof")
        conn = self._conn
        if self._pending:
            self._pending += data
        else:
            taken = conn.send(data, self._now())
            if taken < len(data):
                self._pending += memoryview(data)[taken:]
            self._api.kick(conn)
        if self._pending and not self._write_paused:
            self._write_paused = True
            cast(asyncio.Protocol, self._protocol).pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: FIN after everything written so far (RFC 9293 §3.6.1)."""
        if self._eof_requested or self._closing:
            return
        self._eof_requested = True
        if not self._pending:
            self._conn.shutdown(self._now())
            self._api.kick(self._conn)

    def get_write_buffer_size(self) -> int:
        return len(self._pending) + len(self._conn.sndbuf)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, self._conn.sndbuf.capacity)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """The send buffer size is the limit; it is set per connection (``send_buffer``)."""

    def abort(self) -> None:
        """Reset the connection (RST, RFC 9293 §3.10.5) and drop everything buffered."""
        self._pending.clear()
        self._closing = True
        self._conn.abort(self._now())
        self._api.kick(self._conn)

    # ------------------------------------------------------------------ events from the stack

    def handle_event(self, conn: TcpConnection, event: TcpEvent) -> None:
        """Called by the TCP layer (via the driver) with each connection event, in order."""
        if isinstance(event, DataReceived):
            if self._reading:
                self._deliver_data()
        elif isinstance(event, SendSpaceAvailable):
            self._refill()
        elif isinstance(event, EofReceived):
            if self._reading and not conn.readable:
                self._deliver_eof()
            else:
                self._eof_pending = True
        elif isinstance(event, Connected):
            if self._connected is not None and not self._connected.done():
                self._connected.set_result(None)
        elif isinstance(event, ConnectionFailed):
            self._exc = _failure_exception(event.reason, event.detail)
            if self._connected is not None and not self._connected.done():
                self._connected.set_exception(self._exc)
        elif isinstance(event, ConnectionClosed):
            self._connection_lost()

    def _deliver_data(self) -> None:
        conn = self._conn
        protocol = cast(asyncio.Protocol, self._protocol)
        if protocol is None:
            return
        data = conn.read()
        if data:
            self._api.kick(conn)  # reading may open the window: let the layer send an update
            protocol.data_received(data)

    def _deliver_eof(self) -> None:
        protocol = cast(asyncio.Protocol, self._protocol)
        if protocol is None:
            return
        keep_open = protocol.eof_received()
        if not keep_open and not self._closing:
            self.close()

    def _refill(self) -> None:
        conn = self._conn
        if self._pending:
            taken = conn.send(self._pending, self._now()) if not self._lost else 0
            if taken:
                del self._pending[:taken]
                self._api.kick(conn)
        if not self._pending:
            if self._write_paused:
                self._write_paused = False
                cast(asyncio.Protocol, self._protocol).resume_writing()
            if self._closing and not self._lost:
                conn.close(self._now())
                self._api.kick(conn)
            elif self._eof_requested and not self._lost:
                conn.shutdown(self._now())
                self._api.kick(conn)

    def _connection_lost(self) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(self._exc or ConnectionResetError(104, "Connection closed"))
            return
        if self._protocol is not None:
            self._protocol.connection_lost(self._exc)

    def _now(self) -> float:
        return self._api.loop.time()


class TcpServer:
    """What :meth:`StackApi.start_server` returns (the parts of ``asyncio.Server`` that apply)."""

    def __init__(self, api: StackApi, listener: Listener) -> None:
        self._api = api
        self.listener = listener
        self._closed = asyncio.Event()

    @property
    def port(self) -> int:
        return self.listener.port

    def is_serving(self) -> bool:
        return not self.listener.closed

    def close(self) -> None:
        """Stop listening; established connections carry on."""
        self._api.tcp.unlisten(self.listener)
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def serve_forever(self) -> None:
        await self._closed.wait()

    async def __aenter__(self) -> TcpServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class StackApi:
    """The asyncio face of one running stack (its :class:`Stack` and :class:`AsyncioDriver`)."""

    def __init__(self, stack: Stack, driver: AsyncioDriver) -> None:
        self.stack = stack
        self.driver = driver
        self.loop = driver.loop
        layer = next((h for h in stack.pipeline.handlers if isinstance(h, TcpLayer)), None)
        if layer is None:
            raise ValueError("this stack has no tcp layer")
        self.tcp: TcpLayer = layer

    def abort_all(self) -> None:
        """Reset every connection of the stack (used when a server shuts down)."""
        now = self.loop.time()
        for conn in list(self.tcp.connections.values()):
            conn.abort(now, reason="shutdown")
            self.tcp.touch(conn)
        self.driver.schedule_transmit()

    def kick(self, conn: TcpConnection) -> None:
        """A user call changed *conn*: send its output on the next loop turn."""
        self.tcp.touch(conn)
        self.driver.schedule_transmit()

    def _options(self, base: TcpOptions, overrides: dict[str, Any]) -> TcpOptions:
        unknown = set(overrides) - _OPTION_NAMES
        if unknown:
            raise TypeError(f"unknown connection option(s): {', '.join(sorted(unknown))}")
        opts = replace(base, **overrides)
        for f in fields(TcpOptions):
            value = getattr(opts, f.name)
            choices = get_args(_OPTION_TYPES.get(f.name))
            if get_origin(_OPTION_TYPES.get(f.name)) is Literal and value not in choices:
                raise ValueError(f"{f.name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
            lo, hi = f.metadata.get("min"), f.metadata.get("max")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if (lo is not None and value < lo) or (hi is not None and value > hi):
                    raise ValueError(f"{f.name} must be in [{lo}, {hi}], got {value!r}")
        return opts

    async def open_connection(
        self,
        host: str,
        port: int,
        *,
        local_port: int | None = None,
        limit: int = 2**16,
        timeout: float | None = None,
        **options: Any,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to *host*:*port*; return a reader and writer once ESTABLISHED.

        :param options: per-connection settings (:class:`~layers.tcp.policy.TcpOptions`
            fields, e.g. ``send_buffer=``, ``recv_buffer=``).
        :param timeout: give up after this many seconds (``TimeoutError``), else the SYN
            retry limit applies.
        :raises ConnectionRefusedError, TimeoutError, ValueError:
        """
        addr = ipaddress.IPv4Address(host).packed
        opts = self._options(self.tcp.settings.default_options(), options)
        now = self.loop.time()
        conn = self.tcp.connect(addr, port, now=now, local_port=local_port, options=opts)
        transport = TcpTransport(self, conn)
        transport._connected = self.loop.create_future()
        self.kick(conn)
        try:
            await asyncio.wait_for(asyncio.shield(transport._connected), timeout)
        except TimeoutError:
            conn.abort(self.loop.time(), reason="timeout")
            self.kick(conn)
            raise
        reader = asyncio.StreamReader(limit=limit, loop=self.loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=self.loop)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        writer = asyncio.StreamWriter(transport, protocol, reader, self.loop)
        # Data may have arrived with or right after the handshake.
        if conn.readable:
            transport._deliver_data()
        if conn.eof_received and not conn.readable:
            transport._deliver_eof()
        return reader, writer

    async def start_server(
        self,
        client_connected_cb: ClientConnectedCallback,
        port: int,
        *,
        backlog: int = 128,
        limit: int = 2**16,
        syn_backlog: int | None = None,
        **options: Any,
    ) -> TcpServer:
        """Listen on *port*; call ``client_connected_cb(reader, writer)`` per connection.

        :param backlog: the accept queue's bound; connections are handed to the callback as
            their handshake completes, so it never fills here (as asyncio's own servers).
        :param syn_backlog: half-open connections kept (default: the tcp layer's ``syn_backlog``);
            beyond it SYN cookies answer (``syncookies=``) or SYNs are dropped.
        :param options: per-connection settings for accepted connections.
        """
        opts = self._options(self.tcp.settings.default_options(), options)
        loop = self.loop

        def on_accept(conn: TcpConnection) -> None:
            transport = TcpTransport(self, conn)
            reader = asyncio.StreamReader(limit=limit, loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)
            transport.set_protocol(protocol)
            protocol.connection_made(transport)

        listener = self.tcp.listen(port, backlog=backlog, options=opts, on_accept=on_accept, syn_backlog=syn_backlog)
        return TcpServer(self, listener)
