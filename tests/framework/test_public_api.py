"""The public ``tcpstack`` API in process: two stacks opened with ``tcpstack.open_stack(link=...)`` on an
in-memory link; asyncio's protocol and streams APIs between them, with asyncio's signatures and semantics."""

from __future__ import annotations

import asyncio
import errno
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import tcpstack
from framework.errors import ConfigError
from tcpstack.control import request
from tcpstack.embed import RunningStack
from tcpstack.io.memory import MemoryLink

SERVER, CLIENT = "10.0.0.2", "10.0.0.1"


@asynccontextmanager
async def two_stacks(**server_kw: Any) -> AsyncIterator[tuple[RunningStack, RunningStack]]:
    la, lb = MemoryLink.pair()
    try:
        async with (
            tcpstack.open_stack(link=lb, address=f"{SERVER}/24", **server_kw) as server,
            tcpstack.open_stack(link=la, address=f"{CLIENT}/24") as client,
        ):
            yield server, client
    finally:
        la.close()
        lb.close()


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(main(), 30))


class Recorder(asyncio.Protocol):
    """Records every protocol call, in order."""

    def __init__(self, keep_open_on_eof: bool = False, reply: bytes = b"") -> None:
        self.calls: list[str] = []
        self.data = bytearray()
        self.keep_open_on_eof = keep_open_on_eof
        self.reply = reply
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.calls.append("connection_made")

    def data_received(self, data: bytes) -> None:
        if not self.calls or self.calls[-1] != "data_received":
            self.calls.append("data_received")
        self.data += data

    def eof_received(self) -> bool:
        self.calls.append("eof_received")
        if self.reply:
            assert self.transport is not None
            self.transport.write(self.reply)  # the sending side is still open after the peer's FIN
            self.transport.close()
        return self.keep_open_on_eof

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append("connection_lost")
        self.lost.set_result(exc)


def test_the_package_exports_the_api() -> None:
    assert {"open_stack", "configure_logging", "RunningStack", "TcpTransport", "TcpServer"} <= set(tcpstack.__all__)
    for name in tcpstack.__all__:
        assert getattr(tcpstack, name) is not None


def test_create_server_and_create_connection_follow_asyncios_protocol_contract() -> None:
    """(transport, protocol) back from create_connection; connection_made -> data_received -> eof_received ->
    connection_lost on both ends; eof_received returning True keeps the sending side open (half-close); the
    transport's extra info is asyncio's (peername, sockname, no socket)."""

    async def main() -> None:
        async with two_stacks() as (srv, cli):
            accepted: list[Recorder] = []

            def factory() -> Recorder:
                accepted.append(Recorder(keep_open_on_eof=True, reply=b"pong" * 1000))
                return accepted[-1]

            server = await srv.create_server(factory, port=5000)
            assert isinstance(server, asyncio.AbstractServer) and server.is_serving()
            assert server.sockets[0].getsockname() == ("0.0.0.0", 5000)
            transport, protocol = await cli.create_connection(lambda: Recorder(), SERVER, 5000)
            assert isinstance(transport, asyncio.Transport) and isinstance(protocol, Recorder)
            assert transport.get_protocol() is protocol
            assert transport.get_extra_info("peername") == (SERVER, 5000)
            assert transport.get_extra_info("sockname")[0] == CLIENT
            assert transport.get_extra_info("socket") is None
            assert transport.get_extra_info("nonsense", "dflt") == "dflt"
            assert transport.can_write_eof()
            transport.writelines([b"ping", b"!" * 10])
            transport.write_eof()
            with pytest.raises(RuntimeError, match="write_eof"):
                transport.write(b"more")
            assert await asyncio.wait_for(protocol.lost, 10) is None
            (peer,) = accepted
            assert await asyncio.wait_for(peer.lost, 10) is None
            assert bytes(peer.data) == b"ping" + b"!" * 10
            assert bytes(protocol.data) == b"pong" * 1000
            assert peer.calls == ["connection_made", "data_received", "eof_received", "connection_lost"]
            # The client's eof_received returned False: the transport closed itself.
            assert protocol.calls == ["connection_made", "data_received", "eof_received", "connection_lost"]
            assert transport.is_closing()
            server.close()
            await server.wait_closed()
            assert not server.is_serving() and server.sockets == ()

    run(main)


def test_flow_control_pauses_and_resumes_the_writer() -> None:
    """A send buffer of 4 KiB: writing 64 KiB pauses the protocol (get_write_buffer_size() > high water),
    the peer reading resumes it once the overflow is at or below the low water; all bytes arrive."""

    class Writer(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.paused = 0
            self.resumed = asyncio.get_running_loop().create_future()

        def pause_writing(self) -> None:
            self.paused += 1

        def resume_writing(self) -> None:
            if not self.resumed.done():
                self.resumed.set_result(None)

    async def main() -> None:
        async with two_stacks() as (srv, cli):
            sink: list[Recorder] = []
            await srv.create_server(lambda: sink.append(Recorder()) or sink[-1], port=5001)
            transport, writer = await cli.create_connection(Writer, SERVER, 5001, send_buffer=4096)
            assert transport.get_write_buffer_limits() == (0, 0)
            transport.set_write_buffer_limits(high=8192)
            assert transport.get_write_buffer_limits() == (2048, 8192)
            with pytest.raises(ValueError):
                transport.set_write_buffer_limits(high=10, low=20)
            transport.write(bytes(65536))
            assert writer.paused == 1 and transport.get_write_buffer_size() > 8192
            await asyncio.wait_for(writer.resumed, 10)
            assert transport.get_write_buffer_size() <= 2048
            transport.close()
            await asyncio.wait_for(sink[0].lost, 10)
            assert len(sink[0].data) == 65536

    run(main)


def test_pause_reading_holds_data_until_resumed() -> None:
    """pause_reading(): no data_received until resume_reading(); then the bytes and the EOF, in order."""

    async def main() -> None:
        async with two_stacks() as (srv, cli):
            got: list[Recorder] = []

            def factory() -> Recorder:
                got.append(Recorder())
                return got[-1]

            await srv.create_server(factory, port=5002)
            transport, _ = await cli.create_connection(Recorder, SERVER, 5002)
            while not got:
                await asyncio.sleep(0.01)
            reader = got[0]
            assert reader.transport is not None and reader.transport.is_reading()
            reader.transport.pause_reading()
            assert not reader.transport.is_reading()
            transport.write(b"held")
            transport.write_eof()
            await asyncio.sleep(0.2)
            assert reader.calls == ["connection_made"]
            reader.transport.resume_reading()
            assert reader.calls == ["connection_made", "data_received", "eof_received"]
            assert bytes(reader.data) == b"held"

    run(main)


def test_abort_resets_the_peer() -> None:
    """abort(): connection_lost(None) here, ConnectionResetError at the peer (RFC 9293 §3.10.5)."""

    async def main() -> None:
        async with two_stacks() as (srv, cli):
            got: list[Recorder] = []
            await srv.create_server(lambda: got.append(Recorder()) or got[-1], port=5003)
            transport, protocol = await cli.create_connection(Recorder, SERVER, 5003)
            transport.write(b"x")
            while not got or not got[0].data:
                await asyncio.sleep(0.01)
            transport.abort()
            assert transport.is_closing()
            assert await asyncio.wait_for(protocol.lost, 5) is None
            assert isinstance(await asyncio.wait_for(got[0].lost, 5), ConnectionResetError)

    run(main)


def test_a_failing_protocol_is_reported_and_its_connection_reset() -> None:
    """An exception from data_received goes to the loop's exception handler and resets that connection only."""

    class Broken(Recorder):
        def data_received(self, data: bytes) -> None:
            raise RuntimeError("application bug")

    async def main() -> None:
        reported: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx))
        async with two_stacks() as (srv, cli):
            await srv.create_server(Broken, port=5004)
            transport, protocol = await cli.create_connection(Recorder, SERVER, 5004)
            transport.write(b"boom")
            assert isinstance(await asyncio.wait_for(protocol.lost, 5), ConnectionResetError)
        assert any("data_received" in ctx["message"] for ctx in reported)

    run(main)


def test_streams_have_asyncios_signatures() -> None:
    """start_server(cb, host=None, port=None, **options) and open_connection(host, port, **options): an echo;
    port=None picks a free port; a host not the stack's is EADDRNOTAVAIL; options are checked by name and value."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main() -> None:
        async with two_stacks() as (srv, cli):
            server = await srv.start_server(echo, SERVER)  # port=None: a free port
            host, port = server.sockets[0].getsockname()
            assert host == SERVER and 49152 <= port <= 65535
            reader, writer = await cli.open_connection(SERVER, port, features={"nagle": False}, limit=1 << 20)
            writer.write(b"x" * 300_000)
            writer.write_eof()
            assert await reader.read() == b"x" * 300_000
            writer.close()
            await writer.wait_closed()
            with pytest.raises(OSError) as info:
                await srv.start_server(echo, "10.9.9.9", 7)
            assert info.value.errno == errno.EADDRNOTAVAIL
            with pytest.raises(TypeError, match="port="):
                await srv.start_server(echo, 7)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="unknown connection option"):
                await cli.open_connection(SERVER, port, no_such_option=1)
            with pytest.raises(ValueError, match="bbr"):
                await cli.open_connection(SERVER, port, congestion_control="bbr")
            with pytest.raises(ValueError, match="recv_buffer"):
                await srv.start_server(echo, port=8, recv_buffer=0)
            with pytest.raises(ConnectionRefusedError):
                await cli.open_connection(SERVER, 9)
            async with server:
                assert server.is_serving()
            assert not server.is_serving()

    run(main)


def test_serve_forever_ends_when_cancelled_and_closes_the_server() -> None:
    async def main() -> None:
        async with two_stacks() as (srv, _):
            server = await srv.create_server(Recorder, port=5005)
            task = asyncio.ensure_future(server.serve_forever())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not server.is_serving()

    run(main)


def test_open_stack_validates_like_tcpstack_up() -> None:
    """Bad settings are a ConfigError listing the problem, before anything runs."""

    async def main() -> None:
        la, lb = MemoryLink.pair()
        try:
            cases: list[tuple[dict[str, Any], str]] = [
                ({"address": "10.0.0.0/24"}, "network or broadcast"),
                ({"address": ["10.0.0.2/24", "10.0.0.3/24"]}, "ipv4 layer takes one"),
                ({"address": "fd00::2/64"}, "IPv6"),
                ({"features": {"nagl": {}}}, "nagl"),
                ({"congestion_control": "vegas"}, "vegas"),
                ({"tun": "tun0"}, "link="),
                ({"config": {"layers": [{"type": "memory"}, {"type": "ipv4", "adress": "x"}]}}, "adress"),
            ]
            for kw, text in cases:
                with pytest.raises(ConfigError, match=text):
                    async with tcpstack.open_stack(link=la, control=False, **kw):
                        pass
        finally:
            la.close()
            lb.close()

    run(main)


def test_open_stack_takes_a_list_of_addresses_and_a_configuration_dict() -> None:
    async def main() -> None:
        la, lb = MemoryLink.pair()
        try:
            config = {"layers": [{"type": "tun"}, {"type": "ipv4"}, {"type": "tcp"}]}
            async with tcpstack.open_stack(link=la, address=["10.1.0.2/16"], config=config) as stack:
                assert stack.address == "10.1.0.2" and stack.device is None
                assert [layer.type for layer in stack.config.layers] == ["memory", "ipv4", "tcp"]
        finally:
            la.close()
            lb.close()

    run(main)


def test_everything_closes_on_an_exception(tmp_path: Path) -> None:
    """The block raising: the exception comes through, the driver is stopped (stack_closed closes the pcap),
    the control socket is gone, connections were reset."""
    seen: dict[str, Any] = {}

    async def main() -> None:
        la, lb = MemoryLink.pair()
        try:
            async with tcpstack.open_stack(link=lb, address=f"{SERVER}/24", pcap=tmp_path / "c.pcap") as srv:
                async with tcpstack.open_stack(link=la, address=f"{CLIENT}/24") as cli:
                    await srv.create_server(Recorder, port=5006)
                    control = tmp_path / "ctl.sock"
                    async with tcpstack.open_stack(link=MemoryLink.pair()[0], control=control) as third:
                        assert third.control_path == control and control.exists()
                        seen["third_loop"] = True
                    assert not control.exists()
                    await cli.create_connection(Recorder, SERVER, 5006)
                    seen["pcap"] = srv.stack.layer("pcap")
                    raise KeyError("application failure")
        finally:
            la.close()
            lb.close()

    with pytest.raises(KeyError, match="application failure"):
        run(main)
    assert seen["pcap"].closed
    assert (tmp_path / "c.pcap").stat().st_size > 24  # header and the handshake's frames


def test_the_control_socket_of_an_embedded_stack_answers_ss(tmp_path: Path) -> None:
    """control=PATH: `tcpstack ss` sees the embedded stack's listener and connection; with link= and
    control=True there is no socket (an in-memory link has no device name to name it after)."""

    async def main() -> None:
        control = tmp_path / "ctl.sock"
        async with two_stacks(control=control) as (srv, cli):
            assert srv.control_path == control and cli.control_path is None
            await srv.create_server(Recorder, port=5007)
            await cli.create_connection(Recorder, SERVER, 5007)
            reply = await asyncio.to_thread(request, control, "ss")
            states = sorted(row["state"] for row in reply["connections"])
            assert states == ["ESTABLISHED", "LISTEN"]
            r = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "tcpstack.cli", "ss", "--control", str(control)],
                capture_output=True,
                text=True,
            )
            assert r.returncode == 0 and "\nESTAB " in r.stdout, r.stderr  # ss's short state names

    run(main)


QUIET = """
import asyncio, structlog, sys
import tcpstack
from tcpstack.io.memory import MemoryLink
{configure}
async def echo(r, w):
    w.write(await r.read(100)); await w.drain(); w.close()
async def main():
    la, lb = MemoryLink.pair()
    async with tcpstack.open_stack(link=lb, address="10.0.0.2/24") as srv, \\
            tcpstack.open_stack(link=la, address="10.0.0.1/24") as cli:
        await srv.start_server(echo, port=7)
        r, w = await cli.open_connection("10.0.0.2", 7)
        w.write(b"hi"); assert await r.read(100) == b"hi"
        w.close(); await w.wait_closed()
    structlog.get_logger("app").warning("app.warning", shown=True)
asyncio.run(main())
"""


def test_the_library_is_quiet_unless_logging_is_configured() -> None:
    """Unconfigured: nothing on stdout, on stderr only warnings and errors. After configure_logging(): the
    stack's events on stderr (stdout still empty)."""
    quiet = subprocess.run([sys.executable, "-c", QUIET.format(configure="")], capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == ""
    assert quiet.stderr.count("\n") == 1 and "app.warning" in quiet.stderr and "[warning" in quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", QUIET.format(configure="tcpstack.configure_logging(level='debug')")],
        capture_output=True,
        text=True,
    )
    assert loud.returncode == 0, loud.stderr
    assert loud.stdout == ""
    assert "tcp.state" in loud.stderr and "tcp.closed" in loud.stderr


def test_an_application_that_configured_structlog_first_keeps_its_configuration() -> None:
    code = (
        "import structlog, logging\n"
        "structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))\n"
        "import tcpstack\n"
        "structlog.get_logger('x').debug('mine')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "mine" in r.stdout, r.stderr
