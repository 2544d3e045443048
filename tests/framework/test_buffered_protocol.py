"""Receiving with fewer copies through the public API (issue 11 item 3): two stacks opened with
``tcpstack.open_stack(link=...)`` on an in-memory link whose reads scribble over the driver's
reused read buffer first, so a view of an old frame kept anywhere would corrupt the bytes;
an :class:`asyncio.BufferedProtocol` application (get_buffer/buffer_updated) and a streams
application receive bulk data intact (SHA-256), with asyncio's call order and error rules."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import tcpstack
from tcpstack.embed import RunningStack
from tcpstack.io.memory import MemoryLink

SERVER, CLIENT = "10.0.0.2", "10.0.0.1"
DATA = os.urandom(3 << 20)


class ScribblingLink(MemoryLink):
    """Overwrites the whole lent buffer before every read: what the stack kept of a previous
    frame without copying it turns into 0xEE bytes."""

    reads = 0

    def readinto(self, buf: bytearray | memoryview) -> int:
        ScribblingLink.reads += 1
        buf[:] = b"\xee" * len(buf)
        return super().readinto(buf)


@asynccontextmanager
async def two_stacks() -> AsyncIterator[tuple[RunningStack, RunningStack]]:
    a, b = MemoryLink.pair()
    la, lb = ScribblingLink(a._sock, a.mtu), ScribblingLink(b._sock, b.mtu)
    try:
        async with (
            tcpstack.open_stack(link=lb, address=f"{SERVER}/24") as server,
            tcpstack.open_stack(link=la, address=f"{CLIENT}/24") as client,
        ):
            yield server, client
    finally:
        la.close()
        lb.close()


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(main(), 60))


class Sink(asyncio.BufferedProtocol):
    """Hashes what it receives through a small buffer of its own; records the calls."""

    def __init__(self, size: int = 1000, pause_every: int = 0) -> None:
        self.buf = bytearray(size)
        self.sha = hashlib.sha256()
        self.received = 0
        self.calls: list[str] = []
        self.hints: list[int] = []
        self.pause_every = pause_every
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.calls.append("connection_made")

    def get_buffer(self, sizehint: int) -> bytearray:
        self.hints.append(sizehint)
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        if self.calls[-1] != "buffer_updated":
            self.calls.append("buffer_updated")
        assert 0 < nbytes <= len(self.buf)
        self.sha.update(memoryview(self.buf)[:nbytes])
        self.received += nbytes
        self.buf[:nbytes] = b"\x00" * nbytes  # the application reuses its buffer too
        if self.pause_every and self.received // self.pause_every != (self.received - nbytes) // self.pause_every:
            transport = self.transport
            assert transport is not None
            transport.pause_reading()
            asyncio.get_running_loop().call_later(0.01, transport.resume_reading)

    def eof_received(self) -> bool:
        self.calls.append("eof_received")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append("connection_lost")
        self.lost.set_result(exc)


class Watch(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def _send_all(cli: RunningStack, port: int) -> None:
    transport, _ = await cli.create_connection(asyncio.Protocol, SERVER, port)
    for i in range(0, len(DATA), 100_000):
        transport.write(DATA[i : i + 100_000])
    transport.write_eof()


def test_a_buffered_protocol_receives_bulk_data_intact_through_its_own_buffer() -> None:
    """get_buffer(sizehint) -> buffer_updated(n)* -> eof_received -> connection_lost; the
    sizehint is the bytes readable; the bytes hash as sent, though every frame was read into a
    buffer the link scribbles over before the next read."""

    async def main() -> Sink:
        async with two_stacks() as (srv, cli):
            sinks: list[Sink] = []
            await srv.create_server(lambda: sinks.append(Sink(size=1000)) or sinks[-1], port=6000)
            await _send_all(cli, 6000)
            while not sinks:
                await asyncio.sleep(0.01)
            assert await asyncio.wait_for(sinks[0].lost, 50) is None
            return sinks[0]

    reads = ScribblingLink.reads
    sink = run(main)
    assert ScribblingLink.reads > reads + 2000  # the driver read through readinto
    assert sink.received == len(DATA)
    assert sink.sha.digest() == hashlib.sha256(DATA).digest()
    assert sink.calls == ["connection_made", "buffer_updated", "eof_received", "connection_lost"]
    assert max(sink.hints) > 1000 and min(sink.hints) > 0


def test_pause_reading_in_buffer_updated_holds_the_rest_until_resumed() -> None:
    async def main() -> Sink:
        async with two_stacks() as (srv, cli):
            sinks: list[Sink] = []
            await srv.create_server(lambda: sinks.append(Sink(size=4096, pause_every=300_000)) or sinks[-1], port=6001)
            await _send_all(cli, 6001)
            while not sinks:
                await asyncio.sleep(0.01)
            assert await asyncio.wait_for(sinks[0].lost, 50) is None
            return sinks[0]

    sink = run(main)
    assert sink.sha.digest() == hashlib.sha256(DATA).digest()
    assert sink.calls[-2:] == ["eof_received", "connection_lost"]


def test_an_empty_buffer_or_a_failing_get_buffer_is_asyncios_fatal_error() -> None:
    """As asyncio's own transports: reported to the loop's exception handler, that connection reset."""

    class Empty(Sink):
        def get_buffer(self, sizehint: int) -> bytearray:
            return bytearray()

    class Failing(Sink):
        def buffer_updated(self, nbytes: int) -> None:
            raise ValueError("application bug")

    async def main() -> list[dict[str, Any]]:
        reported: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx))
        async with two_stacks() as (srv, cli):
            for port, cls in ((6002, Empty), (6003, Failing)):
                await srv.create_server(cls, port=port)
                transport, watch = await cli.create_connection(Watch, SERVER, port)
                transport.write(b"x" * 5000)
                assert isinstance(await asyncio.wait_for(watch.lost, 10), ConnectionResetError)
        return reported

    reported = run(main)
    messages = [ctx["message"] for ctx in reported]
    assert any("get_buffer() call failed" in m for m in messages), messages
    assert any(isinstance(ctx.get("exception"), RuntimeError) for ctx in reported)
    assert any("buffer_updated() call failed" in m for m in messages), messages


def test_a_streams_application_receives_bulk_data_intact() -> None:
    """The streams API (StreamReaderProtocol gets views of the receive buffer) over the same
    scribbling link, with reads of odd sizes."""

    async def main() -> bytes:
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sha = hashlib.sha256()
            while chunk := await reader.read(7777):
                sha.update(chunk)
            writer.close()
            done.set_result(sha.digest())

        async with two_stacks() as (srv, cli):
            await srv.start_server(handle, port=6004)
            await _send_all(cli, 6004)
            return await asyncio.wait_for(done, 50)

    assert run(main) == hashlib.sha256(DATA).digest()


def test_a_stream_reader_is_fed_views_and_other_protocols_get_bytes() -> None:
    """asyncio's own StreamReaderProtocol gets read-only views of the receive buffer (its
    StreamReader copies them at once: no bytes object in between); a subclass, which might keep
    what it is given, and any other protocol get bytes."""

    types: dict[str, set[type]] = {"exact": set(), "subclass": set()}
    readers: list[asyncio.StreamReader] = []  # the protocol holds its reader weakly

    def reader_for(kind: str) -> asyncio.StreamReader:
        class Spy(asyncio.StreamReader):
            def feed_data(self, data: bytes) -> None:
                types[kind].add(type(data))
                super().feed_data(data)

        readers.append(Spy())
        return readers[-1]

    class Sub(asyncio.StreamReaderProtocol):
        pass

    async def main() -> None:
        async with two_stacks() as (srv, cli):
            await srv.create_server(lambda: asyncio.StreamReaderProtocol(reader_for("exact")), port=6005)
            await srv.create_server(lambda: Sub(reader_for("subclass")), port=6006)
            for port in (6005, 6006):
                transport, _ = await cli.create_connection(Watch, SERVER, port)
                transport.write(DATA[:300_000])
            while not types["exact"] or not types["subclass"]:
                await asyncio.sleep(0.01)

    run(main)
    assert types == {"exact": {memoryview}, "subclass": {bytes}}


def test_a_protocol_that_asks_for_views_gets_them_and_the_bytes_are_taken() -> None:
    """``tcpstack_data_views = True`` (the discard service sets it): ``data_received`` gets
    read-only views of the receive buffer, no copy; what it hashes during the calls is what was
    sent, and the window reopens as it reads (all 3 MB arrive through a 512 KiB buffer). A
    protocol that sets it to anything but ``True`` gets bytes."""

    class Viewer(asyncio.Protocol):
        tcpstack_data_views = True

        def __init__(self) -> None:
            self.sha = hashlib.sha256()
            self.types: set[type] = set()
            self.received = 0
            self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        def data_received(self, data: bytes) -> None:
            self.types.add(type(data))
            self.sha.update(data)
            self.received += len(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self.lost.set_result(exc)

    class Truthy(Viewer):
        tcpstack_data_views = 1  # type: ignore[assignment]

    async def main() -> list[Viewer]:
        async with two_stacks() as (srv, cli):
            got: list[Viewer] = []
            await srv.create_server(lambda: got.append(Viewer()) or got[-1], port=6007)
            await srv.create_server(lambda: got.append(Truthy()) or got[-1], port=6008)
            await _send_all(cli, 6007)
            await _send_all(cli, 6008)
            while len(got) < 2:
                await asyncio.sleep(0.01)
            for viewer in got:
                assert await asyncio.wait_for(viewer.lost, 50) is None
            return got

    viewer, truthy = run(main)
    assert viewer.types == {memoryview} and truthy.types == {bytes}
    assert viewer.received == truthy.received == len(DATA)
    assert viewer.sha.digest() == truthy.sha.digest() == hashlib.sha256(DATA).digest()


def test_the_discard_service_takes_views() -> None:
    from tcpstack.services import Discard
    from tcpstack.transport import _VIEW, _read_mode

    assert _read_mode(Discard()) is _VIEW
