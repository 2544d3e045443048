"""Vocabulary for the per-connection plugin tests (design notes C8: three levels of test).

1. The policy object alone: construct ``DelayedAck``, ``Nagle``, ``Cubic`` ... directly.
2. Behaviour on one connection with explicit time: :func:`closed_with` / :func:`established_with`
   build a sans-IO :class:`~layers.tcp.connection.TcpConnection` whose policies were installed
   by the plugins' own ``tcp_connection_setup`` hooks (through a :class:`PluginHost` holding the
   built-in plugins only), with the 64-byte buffers of ``tests/layers/tcp/helpers.py``; the peer
   may offer window scaling and timestamps in its SYN.
3. Wiring: stacks from configuration (:func:`make_stack`) or from a host with extra plugins
   (:func:`stack_from_host`), two of them in a :class:`TapSimulation` that records every frame.

The builders and :class:`TapSimulation` are :mod:`tcpstack.testing`'s (the plugin-author kit
shipped with the package); the functions here only bind them to the built-in host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from framework.stack import Stack
from layers.tcp.connection import TcpConnection
from layers.tcp.policy import TcpSetup
from layers.tcp.wire import TcpRepr
from tcpstack.plugins import PluginHost
from tcpstack.testing import (
    L1,
    LOCAL_MSS,
    LOCAL_SEQ,
    R1,
    App,
    TapSimulation,
    builtin_host,
    handshake,
    make_setup,
    make_stack,
    peer_syn,
    tcp_layer,
)
from tcpstack.testing import closed as _closed

__all__ = [
    "HOST",
    "L1",
    "R1",
    "Sink",
    "TapSimulation",
    "closed_with",
    "established_with",
    "make_stack",
    "peer_syn",
    "setup_with",
    "stack_from_host",
    "transfer",
]

#: Built-in plugins only (no entry points), shared by the sans-IO tests.
HOST = builtin_host()


def setup_with(features: Mapping[str, Any], *, congestion_control: str | None = None, **options: Any) -> TcpSetup:
    """A :class:`TcpSetup` (64-byte buffers, 1 s minimum RTO) with *features* resolved against
    the built-in registry and installed by the plugins' ``tcp_connection_setup`` hooks."""
    return make_setup(features, host=HOST, congestion_control=congestion_control, **options)


def closed_with(
    features: Mapping[str, Any],
    *,
    passive: bool = True,
    iss: int = LOCAL_SEQ,
    local_mss: int = LOCAL_MSS,
    congestion_control: str | None = None,
    **options: Any,
) -> TcpConnection:
    """A fresh TCB in CLOSED with *features* installed by their plugins."""
    return _closed(
        features,
        host=HOST,
        passive=passive,
        iss=iss,
        local_mss=local_mss,
        congestion_control=congestion_control,
        **options,
    )


def established_with(
    features: Mapping[str, Any], *, peer_window: int = 256, **options: Any
) -> tuple[TcpConnection, TcpRepr]:
    """ESTABLISHED at t=0 through a real handshake in which the peer offers ``peer_ts`` (its
    TSval; ``None``: no timestamps option) and ``peer_wscale`` (see
    :func:`tcpstack.testing.handshake`); the peer's SYN and later segments all carry
    *peer_window*. Returns the connection (outputs and events drained) and the SYN or SYN-ACK
    we sent. The peer's later TSvals are the test's to choose; its handshake TSecr echoes ours."""
    return handshake(features, host=HOST, peer_window=peer_window, syn_window=peer_window, **options)


def stack_from_host(host: PluginHost, address: str = "10.0.0.1/24", **tcp: Any) -> Stack:
    """Like :func:`make_stack` but validated and built against *host* (extra plugins)."""
    return make_stack(address, host=host, **tcp)


class Sink:
    """A user of one connection that reads everything and never closes."""

    def __init__(self, tcp: Any) -> None:
        self.tcp = tcp
        self.received = bytearray()
        self.conn: TcpConnection | None = None

    def attach(self, conn: TcpConnection) -> None:
        self.conn = conn
        conn.listener = self

    def handle_event(self, conn: TcpConnection, event: Any) -> None:
        data = conn.read()
        if data:
            self.received += data
            self.tcp.touch(conn)


def transfer(
    client_stack: Stack,
    server_stack: Stack,
    payload: bytes,
    *,
    delay: float = 0.005,
    bandwidth: float | None = None,
    client_options: Any = None,
    until: float = 120.0,
    on_step: Any = None,
) -> tuple[TapSimulation, App, App]:
    """Client at 10.0.0.1 sends *payload* to a server at 10.0.0.2:80 and half-closes; run until
    the server saw EOF (bounded by *until* seconds of virtual time)."""
    sim = TapSimulation()
    sim.wire(client_stack, server_stack, delay=delay, bandwidth=bandwidth)
    tc, ts = tcp_layer(client_stack), tcp_layer(server_stack)
    server = App(sim, ts)
    ts.listen(80, on_accept=server.attach)
    client = App(sim, tc, payload)
    client.attach(tc.connect(bytes([10, 0, 0, 2]), 80, now=0.0, options=client_options))
    if on_step is not None:
        sim.on_step = on_step
    sim.run(until=until, condition=lambda: server.eof or bool(client.failures or server.failures))
    assert not client.failures and not server.failures, (client.failures, server.failures)
    assert server.eof, f"transfer did not finish by t={sim.now}"
    assert bytes(server.received) == payload
    return sim, client, server
