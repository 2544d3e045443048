"""The control socket: requests, stale sockets and never taking over another stack's socket."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from pathlib import Path

import pytest
from rich.console import Console

from framework.control import ControlServer, format_ss, parse_http_url, request
from framework.demo import closed_connections, summary_table
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
    """The text view has one line per socket and the TCP facts under each connection."""
    rows = [
        {"state": "LISTEN", "local": "*:80", "remote": "*:*"},
        {
            "state": "ESTABLISHED",
            "local": "10.0.0.2:80",
            "remote": "10.0.0.1:5000",
            "features": ["sack"],
            "congestion": "cubic",
            "srtt_ms": 1.5,
            "rto_ms": 200.0,
            "cwnd": 14480,
            "ssthresh": None,
            "mss": 1448,
            "in_flight": 0,
            "snd_wnd": 65535,
            "rcv_wnd": 65535,
            "send_queue": 0,
            "recv_queue": 0,
            "retransmits": 0,
            "bytes_sent": 10,
            "bytes_received": 20,
        },
    ]
    text = format_ss(rows)
    assert "LISTEN" in text and "10.0.0.1:5000" in text and "cwnd:14480" in text and "features:sack" in text


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


def test_ss_watch_shows_successive_views_then_stops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`tcpstack ss --watch 0.01 --count 3`: three views, each under a time stamp (not a terminal here)."""
    import threading

    from framework.control import watch

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
        assert ready.wait(30)  # only bounds a hang
        assert watch("ss", path, False, interval=0.01, count=3) == 0
    finally:
        stop.set()
        t.join(5)
    out = capsys.readouterr().out
    assert out.count("--- ") == 3 and out.count("State") == 3
    assert watch("ss", tmp_path / "none.sock", False, interval=0.01, count=2) == 1
    assert "no stack answers" in capsys.readouterr().err
