"""An unmodified aiohttp web application, served on a stack through ``stack.create_server``.

``python aiohttp_app.py CONTROL_SOCKET STATIC_FILE``: prints ``ready`` once it listens on port 8080.
Routes: ``/json`` and ``/items/{n}`` (JSON), ``/static`` (the file, ``web.FileResponse``),
``/stream`` (10 MiB of :func:`tcpstack.services.pattern_bytes` in 64 KiB pieces, ``web.StreamResponse``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

from aiohttp import web

import tcpstack
from tcpstack.services import pattern_bytes

STREAM_BYTES = 10 * 1024 * 1024
PIECE = 64 * 1024


def make_app(static: Path) -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"hello": "world", "peer": request.remote})

    async def item(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.json_response({"n": n, "square": n * n})

    async def static_file(request: web.Request) -> web.FileResponse:
        return web.FileResponse(static)

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = STREAM_BYTES
        await response.prepare(request)
        for offset in range(0, STREAM_BYTES, PIECE):
            await response.write(pattern_bytes(PIECE, offset))
        await response.write_eof()
        return response

    app = web.Application()
    app.add_routes(
        [
            web.get("/json", hello),
            web.get("/items/{n}", item),
            web.get("/static", static_file),
            web.get("/stream", stream),
        ]
    )
    return app


async def main(control: str, static: Path) -> None:
    runner = web.AppRunner(make_app(static))
    await runner.setup()
    try:
        async with tcpstack.open_stack(tun="tun0", address="10.0.0.2/24", control=control) as stack:
            assert runner.server is not None
            server = await stack.create_server(runner.server, port=8080)
            print("ready", flush=True)
            await server.serve_forever()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
