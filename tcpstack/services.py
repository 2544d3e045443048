"""Classic TCP services for ``tcpstack up --serve NAME:PORT``.

- ``echo`` (RFC 862): sends back what it receives; closes when the peer closes.
- ``discard`` (RFC 863): reads and throws away; closes when the peer closes.
- ``daytime`` (RFC 867): one line with the date and time, then closes first.
- ``chargen`` (RFC 864): the rotating 72-character line pattern until the peer closes.
- ``http``: HTTP/1.1. ``GET /bytes/N`` returns N deterministic bytes (:func:`pattern_bytes`);
  ``POST`` (any path) returns the hex SHA-256 of its body; ``GET /`` a short index. So curl can
  check integrity both ways.

The first four are asyncio protocols on the connection's transport (``create_server``): an
accepted connection costs a few callbacks, not a Task with a StreamReader and a StreamWriter
(docs/architecture.md, "Cheap connections"). ``http`` is a streams handler.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

import structlog

if TYPE_CHECKING:
    from tcpstack.server import TcpServer
    from tcpstack.streams import StackApi

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

logger = structlog.get_logger("tcpstack.services")

#: RFC 864 §"TCP Based Character Generator Service": the 95 printable ASCII characters.
_CHARGEN = bytes(range(32, 127))
# Byte i of the pattern is (7*i + i // 251) mod 256, which repeats every 251*256 bytes.
_PERIOD = 251 * 256
_ONE_PERIOD = bytes(((i * 7) + (i // 251)) & 0xFF for i in range(_PERIOD))


def pattern_bytes(n: int, offset: int = 0) -> bytes:
    """The deterministic body of ``GET /bytes/N``: byte *i* is ``(7*i + i // 251) mod 256``
    (no short period, so a misplaced segment changes the SHA-256)."""
    start = offset % _PERIOD
    reps = (start + n) // _PERIOD + 1
    return (_ONE_PERIOD * reps)[start : start + n]


#: How much of a ``GET /bytes/N`` body the http service writes at once.
BODY_CHUNK = 1 << 18
_pattern_run: memoryview | None = None


def pattern_view(n: int, offset: int = 0) -> memoryview:
    """``pattern_bytes(n, offset)`` without making it (*n* at most :data:`BODY_CHUNK`): a read-only
    view of the pattern laid out once, over a chunk and a period, on first use (320 KB). The
    transport keeps such a view by reference while the send buffer is full, so the body's one copy
    in Python is the one into the send buffer (docs/architecture.md, "Offload send")."""
    global _pattern_run
    if not 0 <= n <= BODY_CHUNK:
        raise ValueError(f"pattern_view: n must be 0-{BODY_CHUNK}, not {n}")
    if _pattern_run is None:
        _pattern_run = memoryview(pattern_bytes(BODY_CHUNK + _PERIOD))
    start = offset % _PERIOD
    return _pattern_run[start : start + n]


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, TimeoutError):
        pass


class _Service(asyncio.Protocol):
    """A service as an asyncio protocol on the connection's transport: no Task, no
    StreamReader/StreamWriter per connection, only callbacks (what accepting costs)."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def eof_received(self) -> bool:
        return False  # the peer closed: close too, after what was written (a FIN follows it)


class Echo(_Service):
    """RFC 862: sends back what it receives; closes when the peer closes. While the peer does
    not read what comes back, it stops reading (the window closes: back-pressure)."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


class Discard(_Service):
    """RFC 863: reads and throws away; closes when the peer closes. It keeps nothing, so it takes
    the received bytes as views of the receive buffer (``tcpstack_data_views``): not copied at
    all."""

    tcpstack_data_views = True

    def data_received(self, data: bytes) -> None:
        pass


class Daytime(_Service):
    """RFC 867: one line with the date and time, then closes first. "Weekday, Month Day, Year
    Time-Zone" is a suggestion; any ASCII line is allowed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        now = datetime.datetime.now(datetime.UTC)
        self.transport.write(now.strftime("%A, %B %d, %Y %H:%M:%S-UTC\r\n").encode())
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        pass


def _chargen_block() -> bytes:
    """RFC 864's lines, each the 72 characters after the previous line's first, until the
    pattern repeats (95 lines): the stream is this block over and over."""
    lines = [(_CHARGEN * 2)[start : start + 72] + b"\r\n" for start in range(len(_CHARGEN))]
    return b"".join(lines) * 9  # ~63 KB per write


_CHARGEN_BLOCK = _chargen_block()


class Chargen(_Service):
    """RFC 864: the rotating 72-character line pattern until the peer closes; writes while the
    connection takes them (``pause_writing``/``resume_writing``), reads and ignores input."""

    def __init__(self) -> None:
        self._paused = False
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._fill()

    def _fill(self) -> None:
        transport = self.transport
        while not self._paused and not self._done and not transport.is_closing():
            transport.write(_CHARGEN_BLOCK)  # pauses us once the send buffer is full

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._fill()

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        self._done = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._done = True


async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A small HTTP/1.1 server: keep-alive, Content-Length bodies, GET /bytes/N, POST → SHA-256."""
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            except asyncio.LimitOverrunError:
                await _respond(writer, 431, b"header too large\n", close=True)
                break
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                await _respond(writer, 400, b"bad request line\n", close=True)
                break
            method, path, version = parts
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if method == "POST":
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    digest = await _chunked_sha256(reader)
                else:
                    length = int(headers.get("content-length", "0") or 0)
                    digest = await _body_sha256(reader, length)
                await _respond(writer, 200, (digest + "\n").encode(), close=close)
            elif method in ("GET", "HEAD"):
                if path.startswith("/bytes/") and path[7:].isdigit():
                    n = int(path[7:])
                    await _respond_stream(writer, n, head_only=method == "HEAD", close=close)
                elif path == "/":
                    body = b"tcpstack http service: GET /bytes/N, POST -> sha256\n"
                    await _respond(writer, 200, body, close=close, head_only=method == "HEAD")
                else:
                    await _respond(writer, 404, b"not found\n", close=close)
            else:
                await _respond(writer, 405, b"method not allowed\n", close=close)
            if close:
                break
    except (ConnectionError, TimeoutError, ValueError):
        return
    await _close(writer)


async def _body_sha256(reader: asyncio.StreamReader, length: int) -> str:
    h = hashlib.sha256()
    left = length
    while left:
        chunk = await reader.read(min(left, 1 << 16))
        if not chunk:
            raise ConnectionResetError("body ended early")
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest()


async def _chunked_sha256(reader: asyncio.StreamReader) -> str:
    h = hashlib.sha256()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return h.hexdigest()
        h.update(await reader.readexactly(size))
        await reader.readexactly(2)


async def _respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, *, close: bool, head_only: bool = False
) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 431: "Too Large"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\nServer: tcpstack\r\n\r\n"
    ).encode()
    writer.write(head if head_only else head + body)
    await writer.drain()


async def _respond_stream(writer: asyncio.StreamWriter, n: int, *, head_only: bool, close: bool) -> None:
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\nServer: tcpstack\r\n\r\n"
    ).encode()
    writer.write(head)
    if not head_only:
        sent = 0
        while sent < n:
            size = min(BODY_CHUNK, n - sent)
            writer.write(pattern_view(size, sent))  # no copy until the send buffer's
            sent += size
            await writer.drain()
    await writer.drain()


def _shielded(handler: Handler) -> Handler:
    """Run *handler*; when the server shuts down and cancels it, end quietly."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except asyncio.CancelledError:
            writer.transport.abort()

    run.__name__ = handler.__name__
    return run


#: Services as protocol factories (``create_server``): a connection costs callbacks, no Task.
PROTOCOLS: dict[str, Callable[[], asyncio.Protocol]] = {
    "echo": Echo,
    "discard": Discard,
    "daytime": Daytime,
    "chargen": Chargen,
}
#: Services as streams handlers (``start_server``): HTTP parses its requests with a reader.
HANDLERS: dict[str, Handler] = {"http": _shielded(http)}
SERVICES = (*PROTOCOLS, *HANDLERS)


async def serve(api: StackApi, name: str, port: int) -> TcpServer:
    """Listen on *port* with service *name* (one of :data:`SERVICES`)."""
    if name in PROTOCOLS:
        return await api.create_server(PROTOCOLS[name], port=port)
    return await api.start_server(HANDLERS[name], port=port)


#: Well-known ports, used when ``--serve NAME`` gives no port.
DEFAULT_PORTS = {"echo": 7, "discard": 9, "daytime": 13, "chargen": 19, "http": 80}


def parse_serve(spec: str) -> tuple[str, int]:
    """``"echo:7"`` or ``"http"`` to ``(name, port)``.

    :raises ValueError: with a clear message for an unknown service or a bad port.
    """
    name, _, port_s = spec.partition(":")
    if name not in SERVICES:
        raise ValueError(f"--serve {spec!r}: unknown service {name!r} (known: {', '.join(SERVICES)})")
    if not port_s:
        return name, DEFAULT_PORTS[name]
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"--serve {spec!r}: port must be 1-65535")
    return name, int(port_s)
