"""The control socket: requests, stale sockets and never taking over another stack's socket."""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from tcpstack.control import ControlServer, connection_row, format_ss, parse_http_url, request
from tcpstack.demo import closed_connections, summary_table
from tcpstack.testing import StackPair
from tests.helpers import ipv4_stack


def test_answers_ss_and_stats_and_refuses_a_live_socket(tmp_path: Path) -> None:
    """A second stack never takes over a socket a running one answers on; unknown commands get an error."""
    stack, _, _ = ipv4_stack()
    path = tmp_path / "ctl.sock"

    async def main() -> None:
        first = ControlServer(stack, path)
        await first.start()
        with pytest.raises(OSError, match="another running stack"):
            await ControlServer(stack, path).start()
        loop = asyncio.get_running_loop()
        ss = await loop.run_in_executor(None, request, path, "ss")
        stats = await loop.run_in_executor(None, request, path, "stats")
        bad = await loop.run_in_executor(None, request, path, "nope")
        assert ss == {"connections": []}
        assert stats["drops"] == {} and "events" in stats
        assert "unknown command" in bad["error"]
        await first.stop()

    asyncio.run(main())
    assert not path.exists()


def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    """A socket file nobody answers on (a stack that died) is replaced."""
    path = tmp_path / "ctl.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens
    stack, _, _ = ipv4_stack()

    async def main() -> None:
        server = ControlServer(stack, path)
        await server.start()
        await server.stop()

    asyncio.run(main())


def test_format_ss_lists_listeners_and_connections() -> None:
    """The text view has one line per socket and, under each connection, its `ss -ti` line."""
    pair = StackPair(delay=0.01, features={"sack": {}})
    conn = pair.open()
    rows = [{"state": "LISTEN", "local": "*:80", "remote": "*:*", "recv_q": 0, "send_q": 128}]
    rows.append(connection_row(conn.client_conn, pair.now))
    text = format_ss(rows)
    assert "LISTEN" in text and "10.0.0.2:80" in text and "ESTAB" in text
    assert re.search(r" cwnd:\d+ ", text) and "features:sack" in text and f"id:{conn.client_conn.number}" in text


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("http://10.0.0.1/", ("10.0.0.1", 80, "/")),
        ("http://10.0.0.1", ("10.0.0.1", 80, "/")),
        ("http://10.0.0.1:8080/a/b?x=1", ("10.0.0.1", 8080, "/a/b?x=1")),
    ],
)
def test_parse_http_url(url: str, want: tuple[str, int, str]) -> None:
    assert parse_http_url(url) == want


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://10.0.0.1/", "only http://"),
        ("http://example.org/", "IPv4 address"),
        ("http://10.0.0.1:99999/", "bad port"),
        ("ftp://10.0.0.1/", "only http://"),
    ],
)
def test_parse_http_url_rejects_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_http_url(url)


def test_fetch_request_errors_are_replies_not_crashes(tmp_path: Path) -> None:
    """A fetch to a stack without TCP, or with bad parameters, gets an error reply."""
    stack, _, _ = ipv4_stack()
    path = tmp_path / "ctl.sock"

    async def main() -> list[dict[str, object]]:
        server = ControlServer(stack, path)  # no StackApi: this stack has no tcp layer
        await server.start()
        loop = asyncio.get_running_loop()
        try:
            return [
                await loop.run_in_executor(None, lambda: request(path, "fetch", url="http://10.0.0.1/")),
                await loop.run_in_executor(None, lambda: request(path, "fetch", url=5)),
            ]
        finally:
            await server.stop()

    no_tcp, bad = asyncio.run(main())
    assert no_tcp == {"error": "this stack has no tcp layer"}
    assert "error" in bad


def test_demo_summary_table_from_closed_lines(tmp_path: Path) -> None:
    """The demo's table reads tcp.closed events from a JSON-lines log, one row each."""
    log = tmp_path / "stack.err"
    common = {"event": "tcp.closed", "congestion": "cubic", "features": ["sack"], "reason": "normal"}
    lines = [
        {**common, "conn": "10.0.0.2:80>10.0.0.1:40000", "bytes_in": 86, "bytes_out": 1000, "srtt": 0.001, "cwnd": 1},
        {"event": "stack.up"},
        {**common, "conn": "10.0.0.2:50000>10.0.0.1:8080", "bytes_in": 9, "bytes_out": 2, "srtt": None, "cwnd": 3},
    ]
    log.write_text("\n".join(json.dumps(e) for e in lines) + '\nnot json "tcp.closed"\n')
    rows = closed_connections(log)
    assert [r["conn"] for r in rows] == ["10.0.0.2:80>10.0.0.1:40000", "10.0.0.2:50000>10.0.0.1:8080"]
    out = io.StringIO()
    Console(file=out, width=200).print(summary_table(rows))
    text = out.getvalue()
    assert "http :80 <- 10.0.0.1:40000" in text and "client :50000 -> 10.0.0.1:8080" in text
    assert "every connection: cubic sack" in text and "1.00 ms" in text and "1,000" in text


def test_ss_watch_shows_successive_views_then_stops(
    tmp_path: Path, control_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tcpstack ss --watch 0.01 --count 3`: three views, each under a time stamp (not a terminal here)."""
    from tcpstack.control import watch

    assert watch("ss", control_path, False, interval=0.01, count=3) == 0
    out = capsys.readouterr().out
    assert out.count("--- ") == 3 and out.count("State") == 3
    assert watch("ss", tmp_path / "none.sock", False, interval=0.01, count=2) == 1
    assert "no stack answers" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- bad requests


@pytest.fixture
def control_path(tmp_path: Path) -> Iterator[Path]:
    """A control server for a stack (ipv4 only, so fetch answers "no tcp layer"), on its own event loop
    in a thread, as in `tcpstack up`; its socket path."""
    import threading

    stack, _, _ = ipv4_stack()
    path = tmp_path / "ctl.sock"
    ready = threading.Event()
    stop = threading.Event()

    def serve() -> None:
        async def main() -> None:
            server = ControlServer(stack, path)
            await server.start()
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.01)
            await server.stop()

        asyncio.run(main())

    t = threading.Thread(target=serve)
    t.start()
    try:
        assert ready.wait(10)
        yield path
    finally:
        stop.set()
        t.join(10)


def raw_request(path: Path, data: bytes, *, half_close: bool = False) -> bytes:
    """Send *data* as it is and read until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(path))
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


BAD_REQUESTS = {
    "not JSON": (b"ss please\n", "request is not JSON"),
    "not UTF-8": (b'{"cmd": "\xff\xfe"}\n', "request is not UTF-8 text"),
    "10 kB of open brackets": (b"[" * 10_000 + b"\n", "request is nested too deeply"),
    "arrays nested 5,000 deep": (b"[" * 5_000 + b"]" * 5_000 + b"\n", "request is nested too deeply"),
    "objects nested 2,000 deep": (b'{"a":' * 2_000 + b"1" + b"}" * 2_000 + b"\n", "nested too deeply"),
    "an array": (b'["ss"]\n', "request must be a JSON object"),
    "a string": (b'"ss"\n', "request must be a JSON object"),
    "no command": (b"{}\n", "unknown command None"),
    "an unknown command": (b'{"cmd": "reboot"}\n', "unknown command 'reboot'"),
    "a command that is a list": (b'{"cmd": ["ss"]}\n', "unknown command ['ss']"),
    "a huge command": (b'{"cmd": "' + b"x" * 10_000 + b'"}\n', "unknown command 'xxxx"),
    "a number too long to parse": (b'{"cmd": ' + b"9" * 5_000 + b"}\n", "request is not JSON"),
    "a line over the limit": (b'{"cmd": "ss", "pad": "' + b"x" * 100_000 + b'"}\n', "request longer than 16384"),
    "a fetch with a number for a url": (b'{"cmd": "fetch", "url": 5}\n', "this stack has no tcp layer"),
}


@pytest.mark.parametrize(("data", "why"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_request_gets_an_error_reply_and_the_server_keeps_serving(
    control_path: Path, data: bytes, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every malformed request gets one JSON line {"error": ...} naming what is wrong; nothing is logged
    with a traceback; `ss` is answered afterwards."""
    reply = raw_request(control_path, data)
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1, reply[:200]
    answer = json.loads(reply)
    assert set(answer) == {"error"} and why in answer["error"], answer
    assert len(answer["error"]) < 200
    assert request(control_path, "ss") == {"connections": []}
    assert not [r for r in caplog.records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]


def test_request_without_newline_is_answered_at_end_of_input(control_path: Path) -> None:
    """`printf '{"cmd": "ss"}' | nc -U SOCKET`: the request ends with the client's end of input."""
    assert json.loads(raw_request(control_path, b'{"cmd": "ss"}', half_close=True)) == {"connections": []}


@pytest.mark.parametrize("data", [b"", b'{"cmd": "s'], ids=["nothing", "half a line"])
def test_client_leaving_mid_request_does_not_disturb_the_server(
    control_path: Path, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that connects, sends part of a line (or nothing) and disconnects costs nothing; the next
    request is answered."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(control_path))
        s.sendall(data)
    assert request(control_path, "stats")["drops"] == {}
    assert not [r for r in caplog.records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]
