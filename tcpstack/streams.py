"""The user API in asyncio's own vocabulary, with asyncio's signatures.

:class:`StackApi` is the asyncio face of one running stack (what :func:`tcpstack.open_stack`
yields):

- the protocol API, as ``loop.create_connection`` / ``loop.create_server``:
  ``await api.create_connection(protocol_factory, host, port, **options)`` returns
  ``(transport, protocol)``; ``await api.create_server(protocol_factory, host=None, port=None,
  **options)`` returns a :class:`~tcpstack.server.TcpServer` (an :class:`asyncio.AbstractServer`);
  the transport is a :class:`~tcpstack.transport.TcpTransport` (an :class:`asyncio.Transport`);
- the streams API, built on it exactly as asyncio builds its own: ``await
  api.open_connection(host, port, **options)`` returns an :class:`asyncio.StreamReader` /
  :class:`asyncio.StreamWriter` pair, ``await api.start_server(client_connected_cb, host=None,
  port=None, **options)`` calls ``client_connected_cb(reader, writer)`` per connection.

``options`` are per-connection settings, the fields of :class:`~layers.tcp.policy.TcpOptions`
(``features=``, ``congestion_control=``, ``send_buffer=``, ``recv_buffer=``, ...): an unknown
name is a :class:`TypeError`, a value out of range a :class:`ValueError`. Remote failures reach
the user as the built-in exceptions: ``ConnectionRefusedError``, ``ConnectionResetError`` and
``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import random
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import fields, replace
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from framework.stack import Stack
from layers.tcp.connection import TcpConnection
from layers.tcp.handler import TcpLayer
from layers.tcp.policy import TcpOptions
from tcpstack.io.driver import AsyncioDriver
from tcpstack.server import ListenerInfo, TcpServer
from tcpstack.transport import TcpTransport, failure_exception

__all__ = ["ClientConnectedCallback", "ListenerInfo", "StackApi", "TcpServer", "TcpTransport", "failure_exception"]

ClientConnectedCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]
_P = TypeVar("_P", bound=asyncio.BaseProtocol)

_OPTION_NAMES = frozenset(f.name for f in fields(TcpOptions))
_OPTION_TYPES = get_type_hints(TcpOptions)
_ANY_HOST = (None, "", "0.0.0.0")


def find_tcp_layer(stack: Stack) -> TcpLayer | None:
    """The stack's TCP layer, or ``None`` if its configuration has none."""
    return next((h for h in stack.pipeline.handlers if isinstance(h, TcpLayer)), None)


class StackApi:
    """The asyncio face of one running stack (its :class:`Stack` and :class:`AsyncioDriver`).

    :raises ValueError: if the stack has no tcp layer.
    """

    def __init__(self, stack: Stack, driver: AsyncioDriver) -> None:
        self._bind(stack, driver)
        if self._tcp is None:
            raise ValueError("this stack has no tcp layer")

    def _bind(self, stack: Stack, driver: AsyncioDriver) -> None:
        self.stack = stack
        self.driver = driver
        self.loop = driver.loop
        self._tcp = find_tcp_layer(stack)
        self._servers: list[TcpServer] = []

    @property
    def tcp(self) -> TcpLayer:
        """The stack's TCP layer."""
        if self._tcp is None:
            raise ValueError('this stack has no tcp layer (add [[layers]] type = "tcp")')
        return self._tcp

    @property
    def address(self) -> str:
        """The stack's own IPv4 address."""
        return socket.inet_ntoa(self.tcp.address)

    def abort_all(self) -> None:
        """Reset every connection of the stack (used when a server shuts down)."""
        if self._tcp is None:
            return
        now = self.loop.time()
        for conn in list(self._tcp.connections.values()):
            conn.abort(now, reason="shutdown")
            self._tcp.touch(conn)
        self.driver.schedule_transmit()

    def close_servers(self) -> None:
        """Close every server opened through this API (connections already accepted carry on)."""
        for server in self._servers:
            server.close()
        self._servers.clear()

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

    def _check_local_host(self, host: object) -> str:
        """The address a server listens on: any (``None``, ``""``, ``"0.0.0.0"``) or the stack's own.

        :raises OSError: ``EADDRNOTAVAIL`` for any other address, as ``bind()`` would.
        """
        if isinstance(host, int):
            raise TypeError(f"host must be a string, not {host!r} (the port goes by keyword: port={host})")
        hosts: Iterable[object] = [host] if host is None or isinstance(host, str) else host  # type: ignore[assignment]
        own = self.address
        chosen = "0.0.0.0"
        for h in hosts:
            if h in _ANY_HOST:
                continue
            if h != own:
                raise OSError(errno.EADDRNOTAVAIL, f"cannot listen on {h!r}: the stack's address is {own}")
            chosen = own
        return chosen

    def _free_port(self) -> int:
        tcp = self.tcp
        used = set(tcp.listeners) | {conn.local[1] for conn in tcp.connections.values()}
        lo, hi = tcp.settings.ephemeral_low, tcp.settings.ephemeral_high  # a worker's own slice
        start = random.randint(lo, hi)
        for i in range(hi - lo + 1):
            port = lo + (start - lo + i) % (hi - lo + 1)
            if port not in used:
                return port
        raise OSError(errno.EADDRINUSE, "no free port to listen on")

    # ------------------------------------------------------------------ the protocol API

    async def create_connection(
        self,
        protocol_factory: Callable[[], _P],
        host: str | None = None,
        port: int | None = None,
        *,
        local_addr: tuple[str | None, int] | None = None,
        local_port: int | None = None,
        timeout: float | None = None,
        ssl: object = None,
        **options: Any,
    ) -> tuple[TcpTransport, _P]:
        """Connect to *host*:*port* (``loop.create_connection``); once ESTABLISHED, call
        ``protocol_factory()`` and return ``(transport, protocol)``.

        :param local_addr: ``(host, port)`` to connect from; the host must be the stack's
            address (or ``None``); or give *local_port* alone.
        :param timeout: give up after this many seconds (``TimeoutError``), else the SYN
            retry limit applies (``syn_retries_timeout``).
        :param options: per-connection settings (:class:`~layers.tcp.policy.TcpOptions`).
        :raises ConnectionRefusedError, TimeoutError, ValueError, TypeError:
        """
        if ssl is not None:
            raise ValueError("ssl is not supported by tcpstack's transports")
        if host is None or port is None:
            raise ValueError("host and port must be given (tcpstack has no sock= connections)")
        if local_addr is not None:
            self._check_local_host(local_addr[0])
            local_port = local_addr[1] or local_port
        addr = ipaddress.IPv4Address(host).packed
        opts = self._options(self.tcp.settings.default_options(), options)
        conn = self.tcp.connect(addr, port, now=self.loop.time(), local_port=local_port, options=opts)
        transport = TcpTransport(self, conn)
        connected = transport._connected = self.loop.create_future()
        self.kick(conn)
        try:
            await asyncio.wait_for(asyncio.shield(connected), timeout)
        except (TimeoutError, asyncio.CancelledError):
            connected.cancel()  # nobody waits for it any more
            conn.abort(self.loop.time(), reason="timeout")
            self.kick(conn)
            raise
        protocol = protocol_factory()
        transport.attach(protocol)
        return transport, protocol

    async def create_server(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | Iterable[str] | None = None,
        port: int | None = None,
        *,
        backlog: int = 128,
        syn_backlog: int | None = None,
        start_serving: bool = True,
        ssl: object = None,
        **options: Any,
    ) -> TcpServer:
        """Listen on *port* (``loop.create_server``); per connection, call ``protocol_factory()``
        and hand it a :class:`~tcpstack.transport.TcpTransport`.

        :param host: ``None``, ``""`` or ``"0.0.0.0"`` (any), or the stack's own address.
        :param port: ``None`` or 0 picks a free port (``server.sockets[0].getsockname()``).
        :param backlog: the accept queue's bound; connections are handed over as their
            handshake completes, so it never fills here (as asyncio's own servers).
        :param syn_backlog: half-open connections kept (default: the tcp layer's ``syn_backlog``);
            beyond it SYN cookies answer (``syncookies=``) or SYNs are dropped.
        :param start_serving: must be true: a server listens from its creation.
        :param options: per-connection settings for accepted connections.
        :raises OSError: ``EADDRNOTAVAIL`` for an address not the stack's.
        """
        if ssl is not None:
            raise ValueError("ssl is not supported by tcpstack's transports")
        if not start_serving:
            raise ValueError("start_serving=False is not supported: a server listens from its creation")
        address = self._check_local_host(host)
        opts = self._options(self.tcp.settings.default_options(), options)
        loop = self.loop

        def on_accept(conn: TcpConnection) -> None:
            transport = TcpTransport(self, conn)
            try:
                protocol = protocol_factory()
            except Exception as exc:
                loop.call_exception_handler(
                    {"message": "protocol_factory() failed for an accepted connection", "exception": exc}
                )
                transport.abort()
                return
            transport.attach(protocol)

        listener = self.tcp.listen(
            port or self._free_port(), backlog=backlog, options=opts, on_accept=on_accept, syn_backlog=syn_backlog
        )
        server = TcpServer(self, listener, address)
        self._servers.append(server)
        return server

    # ------------------------------------------------------------------ the streams API

    async def open_connection(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        limit: int = 2**16,
        **kwds: Any,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to *host*:*port*; return a reader and writer once ESTABLISHED
        (``asyncio.open_connection``). *kwds* go to :meth:`create_connection`."""
        loop = self.loop
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await self.create_connection(lambda: protocol, host, port, **kwds)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return reader, writer

    async def start_server(
        self,
        client_connected_cb: ClientConnectedCallback,
        host: str | Iterable[str] | None = None,
        port: int | None = None,
        *,
        limit: int = 2**16,
        **kwds: Any,
    ) -> TcpServer:
        """Listen on *port*; call ``client_connected_cb(reader, writer)`` per connection
        (``asyncio.start_server``). *kwds* go to :meth:`create_server`."""
        loop = self.loop

        def factory() -> asyncio.StreamReaderProtocol:
            reader = asyncio.StreamReader(limit=limit, loop=loop)
            return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

        return await self.create_server(factory, host, port, **kwds)
