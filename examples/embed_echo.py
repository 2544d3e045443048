"""Echo (RFC 862) on port 7 of a stack this program embeds: ``python examples/embed_echo.py [CONTROL]``.

Needs the TUN device tun0 (docs/quickstart.md); ``tcpstack ss`` lists its connections (at the
control socket path CONTROL if given). It prints nothing: see docs/embedding.md for logging.
"""

import asyncio
import contextlib
import sys

import tcpstack


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def main() -> None:
    control = sys.argv[1] if len(sys.argv) > 1 else True
    async with tcpstack.open_stack(tun="tun0", address="10.0.0.2/24", control=control) as stack:
        server = await stack.start_server(echo, port=7)
        await server.serve_forever()


with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: close everything and exit quietly
    asyncio.run(main())
