"""tcpstack: a user-space TCP/IP stack in Python, and its public API.

.. code-block:: python

    import asyncio
    import tcpstack

    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main():
        async with tcpstack.open_stack(tun="tun0", address="10.0.0.2/24") as stack:
            server = await stack.start_server(echo, port=7)
            await server.serve_forever()

    asyncio.run(main())

:func:`open_stack` opens a stack with the defaults and validation of ``tcpstack up`` and yields a
:class:`RunningStack`, whose ``open_connection``, ``start_server``, ``create_connection`` and
``create_server`` take asyncio's arguments and return what asyncio's return. The library logs
nothing below ``warning`` unless the application calls :func:`configure_logging`.
Guide: docs/embedding.md.
"""

from tcpstack.logging import configure_logging, install_quiet_default

install_quiet_default()  # before anything logs: quiet unless the application configures logging

from framework.errors import ConfigError, LinkError, StackError  # noqa: E402
from tcpstack.embed import RunningStack, open_stack  # noqa: E402
from tcpstack.server import TcpServer  # noqa: E402
from tcpstack.streams import StackApi  # noqa: E402
from tcpstack.transport import TcpTransport  # noqa: E402

__all__ = [
    "ConfigError",
    "LinkError",
    "RunningStack",
    "StackApi",
    "StackError",
    "TcpServer",
    "TcpTransport",
    "configure_logging",
    "open_stack",
]
