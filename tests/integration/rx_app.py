"""A receiving application for tests/integration/test_rx_copies_wire.py, run in the namespace:
``python rx_app.py CONTROL [--offload] [--buffer BYTES] [--no-hash]``. On tun0 at 10.0.0.2 it
serves two ports that read everything a client sends and answer ``"<bytes> <sha256 hex>\\n"``
once the client's FIN arrives: 9001 with the streams API (a StreamReader, reads of 64 KiB), 9002
with an ``asyncio.BufferedProtocol`` (the receive buffer copies straight into the application's
own buffer, 5000 bytes unless ``--buffer``). ``--no-hash`` only counts (for measuring the stack's
CPU per MB without SHA-256's). Prints ``ready`` once both listen; Ctrl-C (SIGINT) closes everything."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys

import tcpstack

BUFFER = int(sys.argv[sys.argv.index("--buffer") + 1]) if "--buffer" in sys.argv else 5000
HASH = "--no-hash" not in sys.argv


async def stream_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sha = hashlib.sha256()
    n = 0
    while chunk := await reader.read(65536):
        if HASH:
            sha.update(chunk)
        n += len(chunk)
    writer.write(f"{n} {sha.hexdigest()}\n".encode())
    await writer.drain()
    writer.close()


class BufferedApp(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buf = bytearray(BUFFER)
        self.sha = hashlib.sha256()
        self.n = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        if HASH:
            self.sha.update(memoryview(self.buf)[:nbytes])
        self.n += nbytes

    def eof_received(self) -> bool:
        assert self.transport is not None
        self.transport.write(f"{self.n} {self.sha.hexdigest()}\n".encode())
        return False  # close after the answer


async def main() -> None:
    control = sys.argv[1]
    offload = "--offload" in sys.argv[2:]
    async with tcpstack.open_stack(tun="tun0", address="10.0.0.2/24", control=control, offload=offload) as stack:
        await stack.start_server(stream_app, port=9001)
        server = await stack.create_server(BufferedApp, port=9002)
        print("ready", flush=True)
        await server.serve_forever()


with contextlib.suppress(KeyboardInterrupt):
    asyncio.run(main())
