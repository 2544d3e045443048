"""The control socket: requests, stale sockets and never taking over another stack's socket."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from framework.control import ControlServer, format_ss, request
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
