"""`fetch` (the stack as an HTTP client, behind `tcpstack fetch`) against odd servers, in process: two stacks on
an in-memory link, each with the ordinary asyncio driver; the server is a stack's own stream API."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tcpstack.control import fetch, parse_http_url
from tcpstack.io.driver import AsyncioDriver
from tcpstack.io.memory import MemoryLink
from tcpstack.streams import StackApi
from tcpstack.testing import make_stack

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run_fetch(handler: Handler, url_path: str = "/x", **kw: Any) -> tuple[dict[str, Any] | BaseException, int]:
    """Serve *handler* on 10.0.0.2:80, fetch it from 10.0.0.1; (the reply or the exception, connections the
    client stack still holds afterwards)."""

    async def main() -> tuple[dict[str, Any] | BaseException, int]:
        la, lb = MemoryLink.pair()
        sa, sb = make_stack("10.0.0.1/24"), make_stack("10.0.0.2/24")
        da, db = AsyncioDriver(sa, la), AsyncioDriver(sb, lb)
        da.start()
        db.start()
        try:
            server = await StackApi(sb, db).start_server(handler, port=80)
            client = StackApi(sa, da)
            try:
                result: dict[str, Any] | BaseException = await fetch(client, f"http://10.0.0.2:80{url_path}", **kw)
            except Exception as exc:
                result = exc
            # Let a reset or FIN go out: wait until the client holds no open connection (a condition,
            # not a fixed sleep, so a loaded machine cannot make it fail), at most a generous 10 s.
            deadline = asyncio.get_running_loop().time() + 10
            while (held := open_connections(client)) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            server.close()
            return result, held
        finally:
            da.stop()
            db.stop()
            la.close()
            lb.close()

    return asyncio.run(main())


def open_connections(api: StackApi) -> int:
    return sum(1 for c in api.tcp.connections.values() if c.state.value in ("ESTABLISHED", "CLOSE-WAIT"))


def reply_with(response: bytes, *, then_close: bool = True, capture: list[bytes] | None = None) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        if capture is not None:
            capture.append(request)
        writer.write(response)
        await writer.drain()
        if then_close:
            writer.close()
        else:
            await asyncio.sleep(30)

    return handler


def test_a_normal_reply_is_counted_and_hashed(tmp_path: Path) -> None:
    body = b"hello world\n" * 1000
    out = tmp_path / "body"
    seen: list[bytes] = []
    handler = reply_with(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body, capture=seen)
    reply, held = run_fetch(handler, "/a b/ü?q=1 2", output=str(out))
    assert isinstance(reply, dict), reply
    assert reply["status"] == 200 and reply["bytes"] == len(body) and out.read_bytes() == body
    assert reply["sha256"] == hashlib.sha256(body).hexdigest() and held == 0
    # RFC 3986 §2.1: the path is percent-encoded, so the request line stays three fields.
    assert seen[0].startswith(b"GET /a%20b/%C3%BC?q=1%202 HTTP/1.0\r\n"), seen


def test_bytes_beyond_content_length_are_not_read() -> None:
    """A server that sends more than it announced: exactly Content-Length bytes are the body."""
    reply, _ = run_fetch(reply_with(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA-BYTES"))
    assert isinstance(reply, dict) and reply["bytes"] == 5
    assert reply["sha256"] == hashlib.sha256(b"hello").hexdigest()


def test_a_short_body_is_an_error_and_the_connection_is_reset() -> None:
    reply, held = run_fetch(reply_with(b"HTTP/1.0 200 OK\r\nContent-Length: 50\r\n\r\nonly this"))
    assert isinstance(reply, ConnectionError) and "after 9 of 50 bytes" in str(reply)
    assert held == 0


def test_timeout_bounds_the_whole_fetch() -> None:
    """Headers at once, then silence: the fetch gives up at its timeout (not a timeout per phase)."""
    stall = reply_with(b"HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\nsome", then_close=False)

    start = time.monotonic()
    reply, held = run_fetch(stall, timeout=0.5)
    elapsed = time.monotonic() - start
    assert isinstance(reply, TimeoutError), reply
    # Only a bound on a hang: the server stalls for 30 s, so a fetch that ignored its timeout would end
    # after that, with a short-body error rather than TimeoutError (a loaded machine only makes it later).
    assert elapsed < 20 and held == 0


def test_an_unwritable_output_fails_before_connecting(tmp_path: Path) -> None:
    reply, held = run_fetch(reply_with(b"HTTP/1.0 200 OK\r\n\r\nx"), output=str(tmp_path / "no" / "such" / "dir"))
    assert isinstance(reply, FileNotFoundError) and held == 0


def test_not_http_is_an_error() -> None:
    reply, held = run_fetch(reply_with(b"SSH-2.0-OpenSSH\r\n\r\n"))
    assert isinstance(reply, ValueError) and "not an HTTP response" in str(reply) and held == 0


@pytest.mark.parametrize("url", ["http://10.0.0.1:0/", "http://10.0.0.1:65536/"])
def test_bad_ports_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="bad port"):
        parse_http_url(url)
