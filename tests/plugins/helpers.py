"""Vocabulary for the per-connection plugin tests (design notes C8: three levels of test).

1. The policy object alone: construct ``DelayedAck``, ``Nagle``, ``Cubic`` ... directly.
2. Behaviour on one connection with explicit time: :func:`closed_with` / :func:`established_with`
   build a sans-IO :class:`~layers.tcp.connection.TcpConnection` whose policies were installed
   by the plugins' own ``tcp_connection_setup`` hooks (through a :class:`PluginHost` holding the
   built-in plugins only), with the 64-byte buffers of ``tests/layers/tcp/helpers.py``; the peer
   may offer window scaling and timestamps in its SYN.
3. Wiring: stacks from configuration (:func:`make_stack`) or from a host with extra plugins
   (:func:`stack_from_host`), two of them in a :class:`TapSimulation` that records every frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from framework.config import build_stack, config_from_dict
from framework.plugins import PluginHost
from framework.simulation import Simulation, _Direction
from framework.stack import Stack
from layers.tcp.connection import TcpConnection
from layers.tcp.features import merge, resolve
from layers.tcp.policy import TcpSetup
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, SYN, TcpRepr
from tests.layers.tcp.helpers import (
    L1,
    LOCAL_MSS,
    LOCAL_SEQ,
    PEER_WINDOW,
    R1,
    REMOTE_SEQ,
    SEND,
    App,
    decode,
    drain,
    make_setup,
    stack_config,
    tcp_layer,
)

S = TcpState
MASK = 0xFFFFFFFF

#: Built-in plugins only (no entry points), shared by the sans-IO tests.
HOST = PluginHost(entry_points=False)


def setup_with(features: Mapping[str, Any], *, congestion_control: str | None = None, **options: Any) -> TcpSetup:
    """A :class:`TcpSetup` (64-byte buffers, 1 s minimum RTO) with *features* resolved against
    the built-in registry and installed by the plugins' ``tcp_connection_setup`` hooks."""
    setup = make_setup(**options)
    problems: list[str] = []
    setup.features = merge({}, resolve(HOST.registry, features, "features", problems))
    assert not problems, problems
    if congestion_control is not None:
        alg = HOST.registry.congestion[congestion_control]
        setup.congestion = alg.factory(setup.info.mss, None)
        setup.congestion_name = congestion_control
    HOST.pm.hook.tcp_connection_setup(setup=setup)
    return setup


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
    setup = setup_with(features, congestion_control=congestion_control, **options)
    return TcpConnection(setup, iss=iss, now=0.0, passive=passive, local_mss=local_mss)


def peer_syn(
    *,
    irs: int = REMOTE_SEQ,
    mss: int | None = None,
    window: int = PEER_WINDOW,
    wscale: int | None = None,
    ts: tuple[int, int] | None = None,
) -> TcpRepr:
    """The peer's SYN ``<SEQ=IRS><CTL=SYN>`` with the options it offers."""
    return replace(SEND, seq=irs, ack=0, flags=SYN, window=window, mss=mss, wscale=wscale, ts=ts)


def established_with(
    features: Mapping[str, Any],
    *,
    active: bool = False,
    peer_ts: int | None = None,
    peer_wscale: int | None = None,
    peer_mss: int | None = None,
    peer_window: int = PEER_WINDOW,
    **options: Any,
) -> tuple[TcpConnection, TcpRepr]:
    """ESTABLISHED at t=0 through a real handshake in which the peer offers *peer_ts* (its
    TSval; ``None``: no timestamps option) and *peer_wscale*. Returns the connection (outputs
    and events drained) and the SYN or SYN-ACK we sent. The peer's later TSvals are the test's
    to choose; its handshake TSecr echoes ours."""
    ts = (peer_ts, 0) if peer_ts is not None else None
    if active:
        conn = closed_with(features, passive=False, **options)
        conn.open_active(0.0)
        [ours], _ = drain(conn, 0.0)
        echo = (peer_ts, ours.ts[0]) if peer_ts is not None and ours.ts is not None else ts
        synack = replace(
            peer_syn(mss=peer_mss, window=peer_window, wscale=peer_wscale, ts=echo),
            flags=SYN | ACK,
            ack=(LOCAL_SEQ + 1) & MASK,
        )
        conn.segment_received(synack, 0.0)
    else:
        conn = closed_with(features, passive=True, **options)
        conn.state = S.LISTEN
        conn.open_passive(peer_syn(mss=peer_mss, window=peer_window, wscale=peer_wscale, ts=ts), 0.0)
        [ours], _ = drain(conn, 0.0)
        echo = (peer_ts, ours.ts[0]) if peer_ts is not None and ours.ts is not None else None
        conn.segment_received(replace(SEND, seq=R1, ack=L1, window=peer_window, ts=echo), 0.0)
    assert conn.state is S.ESTABLISHED, conn.state
    drain(conn, 0.0)
    return conn, ours


def make_stack(address: str = "10.0.0.1/24", **tcp: Any) -> Stack:
    """A memory-link stack from ``tests/layers/tcp/helpers.stack_config`` (``default_features =
    false`` unless *tcp* says otherwise), built-in plugins only."""
    return build_stack(config_from_dict(stack_config(address, **tcp), host=PluginHost(entry_points=False)))


def stack_from_host(host: PluginHost, address: str = "10.0.0.1/24", **tcp: Any) -> Stack:
    """Like :func:`make_stack` but validated and built against *host* (extra plugins)."""
    return build_stack(config_from_dict(stack_config(address, **tcp), host=host))


class TapSimulation(Simulation):
    """A :class:`Simulation` that records every frame put on a wire: ``(time, sender, segment)``."""

    def __init__(self) -> None:
        super().__init__()
        self.tap: list[tuple[float, Stack, TcpRepr]] = []
        self._peer_of: dict[int, Stack] = {}

    def wire(self, a: Stack, b: Stack, **kw: Any) -> None:
        super().wire(a, b, **kw)
        self._peer_of[id(a)] = b
        self._peer_of[id(b)] = a

    def _send(self, d: _Direction, frame: bytes) -> None:
        sender = self._peer_of[id(d.dst)]
        self.tap.append((self.now, sender, decode(frame)[1]))
        super()._send(d, frame)

    def data_segments(self, sender: Stack) -> list[tuple[float, TcpRepr]]:
        """``(time, segment)`` for each segment with payload that *sender* put on the wire."""
        return [(t, seg) for t, s, seg in self.tap if s is sender and len(seg.payload)]

    def pure_acks(self, sender: Stack) -> list[tuple[float, TcpRepr]]:
        """Segments from *sender* that carry only an ACK (no payload, SYN, FIN or RST)."""
        return [(t, seg) for t, s, seg in self.tap if s is sender and seg.flags == ACK and not len(seg.payload)]


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
