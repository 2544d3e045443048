"""What :meth:`StackApi.start_server <tcpstack.streams.StackApi.start_server>` and
:meth:`~tcpstack.streams.StackApi.create_server` return: a listener with the interface of
:class:`asyncio.Server` (``close``, ``wait_closed``, ``is_serving``, ``serve_forever``,
``start_serving``, ``sockets``, ``get_loop``, ``async with``)."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

from layers.tcp.handler import Listener

if TYPE_CHECKING:
    from tcpstack.streams import StackApi


class ListenerInfo:
    """Stands in a server's ``sockets`` list: ``getsockname()`` like a listening socket's."""

    def __init__(self, address: str, port: int) -> None:
        self.family = socket.AF_INET
        self.type = socket.SOCK_STREAM
        self._name = (address, port)

    def getsockname(self) -> tuple[str, int]:
        return self._name

    def __repr__(self) -> str:
        return f"<ListenerInfo {self._name[0]}:{self._name[1]}>"


class TcpServer(asyncio.AbstractServer):
    """A listening TCP port of a stack, served as :class:`asyncio.Server` serves one."""

    def __init__(self, api: StackApi, listener: Listener, address: str) -> None:
        self._api = api
        self.listener = listener
        self._address = address
        self._closed = asyncio.Event()
        self._serving_forever: asyncio.Future[None] | None = None

    @property
    def port(self) -> int:
        return self.listener.port

    @property
    def sockets(self) -> tuple[ListenerInfo, ...]:
        """One entry per listening address (``getsockname()`` works on it); empty once closed."""
        if self.listener.closed:
            return ()
        return (ListenerInfo(self._address, self.listener.port),)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._api.loop

    def is_serving(self) -> bool:
        return not self.listener.closed

    async def start_serving(self) -> None:
        """A server listens from the moment it is created (``start_serving=True``)."""

    def close(self) -> None:
        """Stop listening; connections already accepted carry on."""
        if self.listener.closed and self._closed.is_set():
            return
        self._api.tcp.unlisten(self.listener)
        self._closed.set()
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def serve_forever(self) -> None:
        """Wait until the server is closed; cancelling it closes the server (as asyncio's)."""
        if self._serving_forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self.listener.closed:
            raise RuntimeError(f"server {self!r} is closed")
        self._serving_forever = self._api.loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    async def __aenter__(self) -> TcpServer:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        return f"<TcpServer {self._address}:{self.listener.port}{'' if self.is_serving() else ' closed'}>"
