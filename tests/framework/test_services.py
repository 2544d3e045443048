"""The built-in services in process (two stacks on an in-memory link): echo, discard, daytime and
chargen are protocols, so an open connection to them costs no asyncio Task; the bytes are right."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from tcpstack.services import HANDLERS, PROTOCOLS, SERVICES, parse_serve, serve
from tests.framework.test_public_api import SERVER, run, two_stacks

RFC864_LINE = 74


def chargen_expected(n_lines: int) -> bytes:
    chars = bytes(range(32, 127))
    return b"".join((chars * 2)[i % 95 : i % 95 + 72] + b"\r\n" for i in range(n_lines))


def test_the_services_and_their_kinds() -> None:
    assert set(SERVICES) == {"echo", "discard", "daytime", "chargen", "http"}
    assert set(PROTOCOLS) == {"echo", "discard", "daytime", "chargen"} and set(HANDLERS) == {"http"}
    assert parse_serve("echo") == ("echo", 7) and parse_serve("chargen:1900") == ("chargen", 1900)


def test_open_connections_to_protocol_services_run_no_task() -> None:
    async def main() -> None:
        async with two_stacks() as (server, client):
            for name, port in (("echo", 7), ("discard", 9), ("chargen", 19)):
                await serve(server, name, port)
            before = len(asyncio.all_tasks())
            conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
            for port in (7, 9, 19) * 5:
                conns.append(await client.open_connection(SERVER, port))
            await asyncio.sleep(0.05)
            assert len(asyncio.all_tasks()) == before  # 15 open connections, no Task for any
            for _, writer in conns:
                writer.transport.abort()

    run(main)


def test_the_services_bytes() -> None:
    async def main() -> dict[str, Any]:
        async with two_stacks() as (server, client):
            for name, port in (("echo", 7), ("discard", 9), ("daytime", 13), ("chargen", 19)):
                await serve(server, name, port)
            out: dict[str, Any] = {}
            data = bytes(range(256)) * 2000  # 512 KB: more than a window, so echo must wait for us
            r, w = await client.open_connection(SERVER, 7)
            w.write(data)
            w.write_eof()
            out["echo"] = await r.read()
            r, w = await client.open_connection(SERVER, 9)
            w.write(data)
            w.write_eof()
            out["discard"] = await r.read()
            r, w = await client.open_connection(SERVER, 13)
            out["daytime"] = await r.read()
            r, w = await client.open_connection(SERVER, 19)
            got = await r.readexactly(200_000 // RFC864_LINE * RFC864_LINE)
            w.write_eof()  # the peer closes: chargen stops and closes
            rest = await r.read()
            out["chargen"] = got + rest
            return out

    out = run(main)
    assert out["echo"] == bytes(range(256)) * 2000
    assert out["discard"] == b""
    assert re.fullmatch(rb"\w+day, \w+ \d\d, \d{4} \d\d:\d\d:\d\d-UTC\r\n", out["daytime"])
    n = len(out["chargen"])
    assert n % RFC864_LINE == 0 and out["chargen"] == chargen_expected(n // RFC864_LINE)
