"""The application's side of sending (docs/architecture.md, "Offload send"): the http service's
``GET /bytes/N`` bodies are views of one laid-out pattern, and the transport keeps immutable data
by reference while the send buffer is full, so a body byte is copied once in Python (into the
send buffer). Each fast path is checked against the plain one: the view against
``pattern_bytes``, the bytes that arrive against what was written."""

from __future__ import annotations

import array
import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpstack.services import BODY_CHUNK, pattern_bytes, pattern_view, serve
from tests.framework.test_public_api import SERVER, Recorder, run, two_stacks


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, BODY_CHUNK), offset=st.integers(0, 1 << 40))
def test_pattern_view_is_pattern_bytes(n: int, offset: int) -> None:
    view = pattern_view(n, offset)
    assert view.readonly and isinstance(view.obj, bytes)
    assert view == pattern_bytes(n, offset)


def test_pattern_view_refuses_more_than_a_chunk() -> None:
    with pytest.raises(ValueError, match="n must be"):
        pattern_view(BODY_CHUNK + 1)
    with pytest.raises(ValueError, match="n must be"):
        pattern_view(-1)


def test_writes_wait_by_reference_or_as_copies_and_arrive_as_written() -> None:
    """A 4 KiB send buffer: what does not fit waits in the transport. ``bytes`` and read-only views
    of ``bytes`` wait as themselves (no copy); a bytearray, a view of one and a non-byte view are
    copied at write(), so changing them afterwards changes nothing that is sent."""
    shared = bytes(range(256)) * 64  # 16 KiB
    mutable = bytearray(b"m" * 5000)
    words = array.array("H", range(1000))  # 2000 bytes, 1000 items
    pieces: list[bytes | bytearray | memoryview] = [
        shared,
        memoryview(shared)[100:9000],
        mutable,
        memoryview(mutable)[10:20],
        memoryview(words),
        b"tail",
    ]
    expected = b"".join(bytes(p) for p in pieces)

    async def main() -> bytes:
        async with two_stacks() as (srv, cli):
            sink: list[Recorder] = []
            await srv.create_server(lambda: sink.append(Recorder()) or sink[-1], port=5101)
            transport, _ = await cli.create_connection(Recorder, SERVER, 5101, send_buffer=4096)
            for p in pieces:
                transport.write(p)
            pending = transport._pending  # type: ignore[attr-defined]
            assert transport.get_write_buffer_size() == len(expected) - 4096 == pending.size
            objs = [c.obj for c in pending.chunks]
            assert objs[0] is shared and objs[1] is shared and objs[-1] == b"tail"  # by reference
            assert all(o is not mutable and o is not words for o in objs)  # copies
            mutable[:] = b"x" * len(mutable)  # the writer reuses its buffers: too late to matter
            words[0] = 0xFFFF
            transport.close()
            await asyncio.wait_for(sink[0].lost, 10)
            return bytes(sink[0].data)

    assert run(main) == expected


def test_http_bytes_body_is_the_pattern() -> None:
    """``GET /bytes/N`` over two in-process stacks, N spanning several chunks and ending mid-period:
    the body is exactly ``pattern_bytes(N)``."""
    n = 3 * BODY_CHUNK + 12_345

    async def main() -> bytes:
        async with two_stacks() as (srv, cli):
            await serve(srv, "http", 80)
            reader, writer = await cli.open_connection(SERVER, 80)
            writer.write(f"GET /bytes/{n} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            assert f"Content-Length: {n}\r\n".encode() in head
            body = await reader.read()
            writer.close()
            return body

    body = run(main)
    assert len(body) == n and body == pattern_bytes(n)
