"""The kit's two-stack half: stacks built from configuration on an in-memory link, wired in a
:class:`~framework.simulation.Simulation` that records every segment (:class:`TapSimulation`),
with :class:`StackPair` / :class:`PairConnection` as the ``tcpstack_pair`` fixture's face."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from framework.errors import WireError
from framework.simulation import Simulation, _Direction
from framework.stack import Stack
from layers.ipv4.wire import Ipv4Repr
from layers.tcp.connection import TcpConnection
from layers.tcp.events import (
    ConnectionClosed,
    ConnectionFailed,
    DataReceived,
    EofReceived,
    SendSpaceAvailable,
    TcpEvent,
)
from layers.tcp.handler import TcpLayer
from layers.tcp.policy import TcpOptions
from layers.tcp.wire import ACK, TcpRepr, pseudo_base
from tcpstack.config import build_stack, config_from_dict
from tcpstack.plugins import PluginHost
from tcpstack.streams import find_tcp_layer
from tcpstack.testing.sansio import LOCAL_IP, Clock, S, plugin_host

# ====================================================================== stacks on a wire


def decode(frm: bytes) -> tuple[Ipv4Repr, TcpRepr]:
    """Parse one TCP/IPv4 frame a stack sent; the TCP checksum is verified over the
    pseudo-header (RFC 9293 §3.1)."""
    ip, payload = Ipv4Repr.parse(memoryview(frm))
    assert ip.protocol == 6, ip
    seg = TcpRepr.parse(payload, pseudo_base(ip.src, ip.dst))
    seg.payload = bytes(seg.payload)
    return ip, seg


def stack_config(
    address: str = f"{LOCAL_IP}/24",
    *,
    mtu: int = 1500,
    fault: dict[str, Any] | None = None,
    pcap: str | None = None,
    **tcp: Any,
) -> dict[str, Any]:
    """A configuration dict: memory link, [pcap,] [fault,] ipv4 at *address*, tcp with *tcp*
    settings (every feature off unless *tcp* names some, RFC 5681 initial window, fixed ISN
    secret). *pcap*: a capture file (``.pcapng``: with decision comments) just above the link."""
    layers: list[dict[str, Any]] = [{"type": "memory", "mtu": mtu}]
    if pcap is not None:
        layers.append({"type": "pcap", "path": pcap})
    if fault is not None:
        layers.append({"type": "fault", **fault})
    layers.append({"type": "ipv4", "address": address, "ident_seed": 0})
    layers.append(
        {
            "type": "tcp",
            "isn_secret": "00" * 16,
            "port_seed": 1,
            "default_features": False,
            "initial_window": "rfc5681",
            **tcp,
        }
    )
    return {"layers": layers}


def make_stack(address: str = f"{LOCAL_IP}/24", *, host: PluginHost | None = None, **kw: Any) -> Stack:
    """A stack from :func:`stack_config`, validated and built against *host* (default: a fresh
    host with the built-in plugins only)."""
    host = host or PluginHost(entry_points=False)
    return build_stack(config_from_dict(stack_config(address, **kw), host=host))


def tcp_layer(stack: Stack) -> TcpLayer:
    """The stack's TCP layer (:func:`tcpstack.streams.find_tcp_layer`, which must find one)."""
    tcp = find_tcp_layer(stack)
    assert tcp is not None, "the stack has no TCP layer"
    return tcp


class TapSimulation(Simulation):
    """A :class:`Simulation` that records every frame put on a wire: ``(time, sender, segment)``
    in ``tap`` for TCP, the raw frame in ``other`` for anything else (ICMP, corrupted frames)."""

    def __init__(self) -> None:
        super().__init__()
        self.tap: list[tuple[float, Stack, TcpRepr]] = []
        self.other: list[tuple[float, Stack, bytes]] = []
        """Frames that are not valid TCP/IPv4 (ICMP, or corrupted by a fault layer), raw."""
        self._peer_of: dict[int, Stack] = {}

    def wire(self, a: Stack, b: Stack, **kw: Any) -> None:
        super().wire(a, b, **kw)
        self._peer_of[id(a)] = b
        self._peer_of[id(b)] = a

    def _send(self, d: _Direction, frame: bytes) -> None:
        sender = self._peer_of[id(d.dst)]
        try:
            self.tap.append((self.now, sender, decode(frame)[1]))
        except (WireError, AssertionError):
            self.other.append((self.now, sender, bytes(frame)))
        super()._send(d, frame)

    def segments(self, sender: Stack) -> list[tuple[float, TcpRepr]]:
        """``(time, segment)`` for every segment *sender* put on the wire."""
        return [(t, seg) for t, s, seg in self.tap if s is sender]

    def data_segments(self, sender: Stack) -> list[tuple[float, TcpRepr]]:
        """``(time, segment)`` for each segment with payload that *sender* put on the wire."""
        return [(t, seg) for t, seg in self.segments(sender) if len(seg.payload)]

    def pure_acks(self, sender: Stack) -> list[tuple[float, TcpRepr]]:
        """Segments from *sender* that carry only an ACK (no payload, SYN, FIN or RST)."""
        return [(t, seg) for t, seg in self.segments(sender) if seg.flags == ACK and not len(seg.payload)]


class App:
    """A user of one connection in a simulation: writes ``to_send`` (and whatever
    :meth:`write` adds), then half-closes unless ``auto_shutdown=False``; records what it
    reads, EOF, failures and the end of the connection."""

    def __init__(
        self,
        clock: Clock,
        tcp: TcpLayer,
        to_send: bytes = b"",
        *,
        close_after_eof: bool = False,
        auto_shutdown: bool = True,
    ) -> None:
        self.clock = clock
        self.tcp = tcp
        self.to_send = memoryview(to_send)
        self.sent = 0
        self.received = bytearray()
        self.eof = False
        self.closed = False
        self.failures: list[ConnectionFailed] = []
        self.close_after_eof = close_after_eof
        self.auto_shutdown = auto_shutdown
        self.conn: TcpConnection | None = None
        self._shut = False

    def attach(self, conn: TcpConnection) -> None:
        self.conn = conn
        conn.listener = self
        self.pump()

    def write(self, data: bytes) -> None:
        """Queue *data* behind what is still unsent and send what the window allows."""
        if self._shut:
            raise ValueError("this side already half-closed its connection")
        self.to_send = memoryview(bytes(self.to_send) + bytes(data))
        self.pump()

    def shutdown(self) -> None:
        """Half-close (send our FIN) once everything queued has been written."""
        self.auto_shutdown = True
        self.pump()

    def pump(self) -> None:
        conn = self.conn
        if conn is None or self._shut:
            return
        if conn.state not in (S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED, S.CLOSE_WAIT):
            return
        now = self.clock.now
        if self.sent < len(self.to_send):
            self.sent += conn.send(self.to_send[self.sent :], now)
        if self.auto_shutdown and self.sent == len(self.to_send) and conn.state in (S.ESTABLISHED, S.CLOSE_WAIT):
            # (CLOSE in SYN-SENT deletes the TCB, RFC 9293 §3.10.4: wait for Connected.)
            self._shut = True
            conn.shutdown(now)
        self.tcp.touch(conn)

    def handle_event(self, conn: TcpConnection, event: TcpEvent) -> None:
        if isinstance(event, DataReceived):
            self.received += conn.read()
            self.tcp.touch(conn)
        elif isinstance(event, SendSpaceAvailable):
            self.pump()
        elif isinstance(event, EofReceived):
            self.received += conn.read()
            self.eof = True
            if self.close_after_eof and self._shut:
                conn.close(self.clock.now)
                self.tcp.touch(conn)
        elif isinstance(event, ConnectionFailed):
            self.failures.append(event)
        elif isinstance(event, ConnectionClosed):
            self.closed = True
        else:
            self.pump()


CLIENT_ADDRESS = "10.0.0.1/24"
SERVER_ADDRESS = "10.0.0.2/24"


class PairConnection:
    """One connection between the two stacks of a :class:`StackPair`: ``client`` and
    ``server`` are the :class:`App` at each end (``.received``, ``.eof``, ``.failures``)."""

    def __init__(self, pair: StackPair, port: int, client: App, server: App) -> None:
        self.pair = pair
        self.port = port
        self.client = client
        self.server = server

    @property
    def client_conn(self) -> TcpConnection:
        """The client's :class:`TcpConnection` (its policies: ``.ack_policy``, ``.cc`` ...)."""
        assert self.client.conn is not None
        return self.client.conn

    @property
    def server_conn(self) -> TcpConnection:
        """The server's :class:`TcpConnection` (exists once the handshake completed)."""
        assert self.server.conn is not None, "the server has not accepted this connection yet"
        return self.server.conn

    @property
    def established(self) -> bool:
        c, s = self.client.conn, self.server.conn
        return c is not None and s is not None and c.state is S.ESTABLISHED and s.state is S.ESTABLISHED

    def send(self, data: bytes) -> None:
        """The client writes *data* (it leaves when the pair runs)."""
        self.client.write(data)

    def reply(self, data: bytes) -> None:
        """The server writes *data*."""
        self.server.write(data)

    def close(self) -> None:
        """The client half-closes after its queued data; the server closes when it sees EOF."""
        self.server.close_after_eof = True
        self.server.shutdown()
        self.client.shutdown()


class StackPair:
    """Two stacks from :func:`stack_config` (client 10.0.0.1, server 10.0.0.2) on one wire of a
    :class:`TapSimulation` (the ``tcpstack_pair`` fixture).

    :param extra: plugin objects (modules or instances) each stack's host registers.
    :param entry_points: also load the installed ``tcpstack`` entry-point group.
    :param delay, bandwidth, queue_limit: the wire (see :meth:`Simulation.wire`).
    :param client_tcp, server_tcp: ``tcp`` layer settings for one side only.
    :param stack: ``stack_config`` options for both (``mtu``, ``fault``) and ``tcp`` settings
        for both (``default_features``, ``congestion_control``, ``features`` ...).
    """

    def __init__(
        self,
        *,
        extra: Iterable[object] = (),
        entry_points: bool = False,
        delay: float = 0.0005,
        bandwidth: float | None = None,
        queue_limit: int | None = None,
        client_tcp: Mapping[str, Any] | None = None,
        server_tcp: Mapping[str, Any] | None = None,
        **stack: Any,
    ) -> None:
        extra = list(extra)
        self.client_host = plugin_host(extra, entry_points=entry_points)
        self.server_host = plugin_host(extra, entry_points=entry_points)
        self.client = make_stack(CLIENT_ADDRESS, host=self.client_host, **{**stack, **(client_tcp or {})})
        self.server = make_stack(SERVER_ADDRESS, host=self.server_host, **{**stack, **(server_tcp or {})})
        self.sim = TapSimulation()
        self.sim.wire(self.client, self.server, delay=delay, bandwidth=bandwidth, queue_limit=queue_limit)
        self.connections: list[PairConnection] = []
        self._next_port = 80

    @property
    def now(self) -> float:
        """The simulation's virtual time."""
        return self.sim.now

    def open(
        self,
        *,
        port: int | None = None,
        features: Mapping[str, Any] | None = None,
        congestion_control: str | None = None,
        server_features: Mapping[str, Any] | None = None,
        server_congestion_control: str | None = None,
        handshake: bool = True,
        timeout: float = 10.0,
    ) -> PairConnection:
        """Listen on the server (on a new *port*, by default 80, 81, ...) and connect from the
        client. *features* and *congestion_control* apply to the client's connection only,
        ``server_*`` to the server's (through the listener, like ``start_server(features=)``).
        With *handshake*, run until both ends are ESTABLISHED (at most *timeout* seconds).

        :raises ValueError: for an unknown feature, setting or algorithm.
        """
        if port is None:
            port = self._next_port
        self._next_port = max(self._next_port, port + 1)
        tc, ts = tcp_layer(self.client), tcp_layer(self.server)
        server = App(self.sim, ts, auto_shutdown=False)
        ts.listen(port, options=_options(ts, server_features, server_congestion_control), on_accept=server.attach)
        client = App(self.sim, tc, auto_shutdown=False)
        remote = socket.inet_aton(SERVER_ADDRESS.split("/")[0])
        options = _options(tc, features, congestion_control)
        client.attach(tc.connect(remote, port, now=self.sim.now, options=options))
        conn = PairConnection(self, port, client, server)
        self.connections.append(conn)
        if handshake:
            done = self.run(until=self.now + timeout, condition=lambda: conn.established or bool(client.failures))
            assert done and conn.established, f"no handshake on port {port} by t={self.now}: {client.failures}"
        return conn

    def run(self, *, until: float | None = None, condition: Callable[[], bool] | None = None) -> bool:
        """Advance virtual time until *condition* holds, time reaches *until*, or nothing is
        left to do; return whether *condition* holds (``True`` without one)."""
        self.sim.run(until=until, condition=condition)
        return condition() if condition is not None else True

    def run_for(self, seconds: float, *, condition: Callable[[], bool] | None = None) -> bool:
        """:meth:`run` for at most *seconds* of virtual time from now."""
        return self.run(until=self.now + seconds, condition=condition)

    def segments(self, side: str) -> list[tuple[float, TcpRepr]]:
        """``(time, segment)`` for every segment ``"client"`` or ``"server"`` put on the wire."""
        return self.sim.segments(self._stack(side))

    def data_segments(self, side: str) -> list[tuple[float, TcpRepr]]:
        """Segments with payload from ``"client"`` or ``"server"``."""
        return self.sim.data_segments(self._stack(side))

    def pure_acks(self, side: str) -> list[tuple[float, TcpRepr]]:
        """Segments from ``"client"`` or ``"server"`` that carry only an ACK."""
        return self.sim.pure_acks(self._stack(side))

    def _stack(self, side: str) -> Stack:
        if side not in ("client", "server"):
            raise ValueError(f"side must be 'client' or 'server', not {side!r}")
        return self.client if side == "client" else self.server


def _options(tcp: TcpLayer, features: Mapping[str, Any] | None, congestion_control: str | None) -> TcpOptions | None:
    """The layer's default options with per-connection *features* and algorithm, or ``None``."""
    if features is None and congestion_control is None:
        return None
    return replace(tcp.settings.default_options(), features=dict(features or {}), congestion_control=congestion_control)
