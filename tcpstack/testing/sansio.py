"""The kit's sans-IO half: constants, explicit time, plugin hosts, and :class:`TcpConnection`
builders for every RFC 9293 state (real segments fed at explicit times), with
:class:`ConnectionBuilder` as the ``tcpstack_conn`` fixture's face."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from functools import cache
from typing import Any, Protocol

from layers.tcp.connection import TcpConnection
from layers.tcp.events import (
    TcpEvent,
)
from layers.tcp.extensions import congestion_controls
from layers.tcp.features import merge
from layers.tcp.policy import ConnInfo, TcpOptions, TcpSetup
from layers.tcp.seq import MASK
from layers.tcp.setup import connection_setup, resolve_overrides
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, FIN, SYN, TcpRepr
from tcpstack.plugins import PluginHost

S = TcpState

LOCAL_IP = "10.0.0.1"
REMOTE_IP = "10.0.0.2"
LOCAL_ADDR = socket.inet_aton(LOCAL_IP)
REMOTE_ADDR = socket.inet_aton(REMOTE_IP)
LOCAL_PORT = 80
REMOTE_PORT = 49500
LOCAL_SEQ = 10_000  # our ISS
REMOTE_SEQ = 0x4000_0000  # the peer's ISN (our IRS)
L1 = LOCAL_SEQ + 1  # our first data byte
R1 = REMOTE_SEQ + 1  # the peer's first data byte
LOCAL_MSS = 1460  # what we advertise (MTU 1500 - 40)
BUFFER = 64
PEER_WINDOW = 256

#: A segment from the peer to us (flags ACK; set seq/ack/payload per test).
SEND = TcpRepr(REMOTE_PORT, LOCAL_PORT, 0, 0, ACK, PEER_WINDOW)
#: A segment from us to the peer (window 64: the whole empty buffer).
RECV = TcpRepr(LOCAL_PORT, REMOTE_PORT, 0, 0, ACK, BUFFER)


# ====================================================================== time and hosts


class VirtualClock:
    """Explicit time for sans-IO tests: ``now`` only moves when the test says so."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def advance(self, seconds: float) -> float:
        """Move forward by *seconds* (never backwards); return the new time."""
        if seconds < 0:
            raise ValueError(f"time cannot go backwards (advance by {seconds})")
        self.now += seconds
        return self.now

    def advance_to(self, t: float) -> float:
        """Move to the absolute time *t* (at or after ``now``)."""
        if t < self.now:
            raise ValueError(f"time cannot go backwards (from {self.now} to {t})")
        self.now = t
        return self.now


class Clock(Protocol):
    """Anything with a current time: a :class:`VirtualClock` or a :class:`Simulation`."""

    @property
    def now(self) -> float: ...


@cache
def builtin_host() -> PluginHost:
    """A shared host with the built-in plugins only (no entry points, no extras)."""
    return PluginHost(entry_points=False)


def plugin_host(extra: Iterable[object] = (), *, entry_points: bool = False) -> PluginHost:
    """A fresh host: the built-in plugins, *extra* plugin objects (modules or instances) and,
    with *entry_points*, the installed ``tcpstack`` entry-point group."""
    return PluginHost(entry_points=entry_points, extra=list(extra))


# ====================================================================== sans-IO connection


def make_setup(
    features: Mapping[str, Any] | None = None,
    *,
    host: PluginHost | None = None,
    congestion_control: str | None = None,
    **options: Any,
) -> TcpSetup:
    """A :class:`TcpSetup` for LOCAL -> REMOTE with 64-byte buffers, a 1 s minimum RTO, the
    RFC 5681 initial window and ``min_snd_mss = 1`` (a test's tiny peer MSS is honoured as
    written), *features* resolved against *host*'s registry (default: the built-in plugins) and
    installed by the plugins' own ``tcp_connection_setup`` hooks."""
    host = host or builtin_host()
    opts: dict[str, Any] = {
        "send_buffer": BUFFER,
        "recv_buffer": BUFFER,
        "min_rto": 1.0,
        "initial_window": "rfc5681",
        "min_snd_mss": 1,
    }
    opts.update(options)
    info = ConnInfo(local=(LOCAL_ADDR, LOCAL_PORT), remote=(REMOTE_ADDR, REMOTE_PORT), mss=LOCAL_MSS)
    problems: list[str] = []
    resolved = merge({}, resolve_overrides(host.registry, features or {}, congestion_control, problems))
    if problems:
        raise ValueError("; ".join(problems))
    defaults = {
        name: alg.settings() for name, alg in congestion_controls(host.registry).items() if alg.settings is not None
    }
    return connection_setup(host, info, TcpOptions(**opts), resolved, congestion_control, defaults)


def closed(
    features: Mapping[str, Any] | None = None,
    *,
    host: PluginHost | None = None,
    congestion_control: str | None = None,
    passive: bool = True,
    iss: int = LOCAL_SEQ,
    local_mss: int = LOCAL_MSS,
    **options: Any,
) -> TcpConnection:
    """A fresh TCB in CLOSED (nothing sent yet); *options* are :class:`TcpOptions` fields."""
    setup = make_setup(features, host=host, congestion_control=congestion_control, **options)
    return TcpConnection(setup, iss=iss, now=0.0, passive=passive, local_mss=local_mss)


def listen(features: Mapping[str, Any] | None = None, **kw: Any) -> TcpConnection:
    """A passive TCB in LISTEN, as the layer's listener holds it before a SYN arrives."""
    conn = closed(features, passive=True, **kw)
    conn.state = S.LISTEN
    return conn


def peer_syn(
    *,
    irs: int = REMOTE_SEQ,
    mss: int | None = None,
    window: int = PEER_WINDOW,
    wscale: int | None = None,
    ts: tuple[int, int] | None = None,
    payload: bytes = b"",
) -> TcpRepr:
    """The peer's SYN ``<SEQ=IRS><CTL=SYN>`` with the options it offers."""
    return replace(SEND, seq=irs, ack=0, flags=SYN, window=window, mss=mss, wscale=wscale, ts=ts, payload=payload)


def _syn_sent(features: Mapping[str, Any] | None, **kw: Any) -> tuple[TcpConnection, TcpRepr]:
    conn = closed(features, passive=False, **kw)
    conn.open_active(0.0)  # RFC 9293 §3.10.1: OPEN in CLOSED (active) sends <SEQ=ISS><CTL=SYN>
    [ours], _ = drain(conn, 0.0)
    return conn, ours


def _syn_received(
    features: Mapping[str, Any] | None,
    *,
    irs: int = REMOTE_SEQ,
    peer_mss: int | None = None,
    syn_window: int = PEER_WINDOW,
    peer_wscale: int | None = None,
    peer_ts: int | None = None,
    **kw: Any,
) -> tuple[TcpConnection, TcpRepr]:
    conn = listen(features, **kw)
    ts = (peer_ts, 0) if peer_ts is not None else None
    # RFC 9293 §3.10.7.2: a SYN in LISTEN leads to SYN-RECEIVED and our SYN-ACK.
    conn.open_passive(peer_syn(irs=irs, mss=peer_mss, window=syn_window, wscale=peer_wscale, ts=ts), 0.0)
    [ours], _ = drain(conn, 0.0)
    return conn, ours


def syn_sent(features: Mapping[str, Any] | None = None, **kw: Any) -> TcpConnection:
    """CLOSED + active OPEN: SYN-SENT, our SYN already drained."""
    return _syn_sent(features, **kw)[0]


def syn_received(features: Mapping[str, Any] | None = None, **kw: Any) -> TcpConnection:
    """LISTEN + the peer's SYN: SYN-RECEIVED, our SYN-ACK already drained (*irs*, *peer_mss*,
    *syn_window*, *peer_wscale*, *peer_ts* describe the peer's SYN)."""
    return _syn_received(features, **kw)[0]


def handshake(
    features: Mapping[str, Any] | None = None,
    *,
    active: bool = False,
    irs: int = REMOTE_SEQ,
    peer_mss: int | None = None,
    peer_window: int = PEER_WINDOW,
    syn_window: int = PEER_WINDOW,
    peer_wscale: int | None = None,
    peer_ts: int | None = None,
    **kw: Any,
) -> tuple[TcpConnection, TcpRepr]:
    """ESTABLISHED at t=0 through a real three-way handshake (RFC 9293 §3.5), passive by
    default (``active=True`` goes through SYN-SENT). The peer offers *peer_mss*,
    *peer_wscale* and *peer_ts* (its TSval; ``None``: no timestamps option) in its SYN or
    SYN-ACK; *peer_window* is the window of its SYN-ACK or final ACK, *syn_window* that of its
    SYN. Returns the connection (outputs and the ``Connected`` event drained) and the SYN or
    SYN-ACK we sent. The handshake's RTT sample is 0 s, so the RTO is ``min_rto``."""
    iss = kw.get("iss", LOCAL_SEQ)
    if active:
        conn, ours = _syn_sent(features, **kw)
        ts = (peer_ts, 0) if peer_ts is not None else None
        echo = (peer_ts, ours.ts[0]) if peer_ts is not None and ours.ts is not None else ts
        synack = replace(
            peer_syn(irs=irs, mss=peer_mss, window=peer_window, wscale=peer_wscale, ts=echo),
            flags=SYN | ACK,
            ack=(iss + 1) & MASK,
        )
        conn.segment_received(synack, 0.0)
    else:
        conn, ours = _syn_received(
            features, irs=irs, peer_mss=peer_mss, syn_window=syn_window, peer_wscale=peer_wscale, peer_ts=peer_ts, **kw
        )
        echo = (peer_ts, ours.ts[0]) if peer_ts is not None and ours.ts is not None else None
        final = replace(SEND, seq=(irs + 1) & MASK, ack=(iss + 1) & MASK, window=peer_window, ts=echo)
        conn.segment_received(final, 0.0)
    assert conn.state is S.ESTABLISHED, conn.state
    drain(conn, 0.0)
    return conn, ours


def established(features: Mapping[str, Any] | None = None, **kw: Any) -> TcpConnection:
    """ESTABLISHED at t=0 through a real handshake; see :func:`handshake` for the options."""
    return handshake(features, **kw)[0]


def fin_wait_1(features: Mapping[str, Any] | None = None, *, half: bool = False, **kw: Any) -> TcpConnection:
    """ESTABLISHED + close() (``half=True``: shutdown()): FIN-WAIT-1, our FIN drained."""
    conn = established(features, **kw)
    if half:
        conn.shutdown(0.0)
    else:
        conn.close(0.0)  # RFC 9293 §3.10.4: CLOSE in ESTABLISHED sends a FIN
    assert conn.state is S.FIN_WAIT_1
    drain(conn, 0.0)
    return conn


def _peer_sends(conn: TcpConnection, seg: TcpRepr, state: TcpState) -> TcpConnection:
    """Deliver the peer's *seg* at t=0, check the state it leads to, drain our reply."""
    send(conn, t=0.0, seg=seg)
    assert conn.state is state, conn.state
    drain(conn, 0.0)
    return conn


def fin_wait_2(features: Mapping[str, Any] | None = None, **kw: Any) -> TcpConnection:
    """FIN-WAIT-1 + the peer's ACK of our FIN."""
    conn = fin_wait_1(features, **kw)
    return _peer_sends(conn, replace(SEND, seq=conn.rcv_nxt, ack=conn.snd_max), S.FIN_WAIT_2)


def closing(features: Mapping[str, Any] | None = None, **kw: Any) -> TcpConnection:
    """FIN-WAIT-1 + the peer's FIN that does not acknowledge ours (simultaneous close)."""
    conn = fin_wait_1(features, **kw)
    return _peer_sends(conn, replace(SEND, seq=conn.rcv_nxt, ack=conn.snd_una, flags=FIN | ACK), S.CLOSING)


def time_wait(features: Mapping[str, Any] | None = None, **kw: Any) -> TcpConnection:
    """FIN-WAIT-2 + the peer's FIN: TIME-WAIT (RCV.NXT = REMOTE_SEQ + 2)."""
    conn = fin_wait_2(features, **kw)
    return _peer_sends(conn, replace(SEND, seq=conn.rcv_nxt, ack=conn.snd_max, flags=FIN | ACK), S.TIME_WAIT)


def close_wait(features: Mapping[str, Any] | None = None, **kw: Any) -> TcpConnection:
    """ESTABLISHED + the peer's FIN: CLOSE-WAIT (RCV.NXT = REMOTE_SEQ + 2)."""
    conn = established(features, **kw)
    return _peer_sends(conn, replace(SEND, seq=conn.rcv_nxt, ack=conn.snd_max, flags=FIN | ACK), S.CLOSE_WAIT)


def last_ack(features: Mapping[str, Any] | None = None, **kw: Any) -> TcpConnection:
    """CLOSE-WAIT + close(): LAST-ACK, our FIN (seq LOCAL_SEQ + 1) drained."""
    conn = close_wait(features, **kw)
    conn.close(0.0)
    assert conn.state is S.LAST_ACK
    drain(conn, 0.0)
    return conn


#: The builder of each state (each builds on the one before it by feeding real segments).
STATE_BUILDERS: dict[TcpState, Callable[..., TcpConnection]] = {
    S.CLOSED: closed,
    S.LISTEN: listen,
    S.SYN_SENT: syn_sent,
    S.SYN_RECEIVED: syn_received,
    S.ESTABLISHED: established,
    S.FIN_WAIT_1: fin_wait_1,
    S.FIN_WAIT_2: fin_wait_2,
    S.CLOSING: closing,
    S.TIME_WAIT: time_wait,
    S.CLOSE_WAIT: close_wait,
    S.LAST_ACK: last_ack,
}


def as_state(state: TcpState | str) -> TcpState:
    """``TcpState.FIN_WAIT_1``, ``"FIN-WAIT-1"``, ``"FIN_WAIT_1"`` and ``"fin-wait-1"`` alike."""
    if isinstance(state, TcpState):
        return state
    try:
        return TcpState[state.upper().replace("-", "_")]
    except KeyError:
        known = ", ".join(s.value for s in TcpState)
        raise ValueError(f"unknown TCP state {state!r} (known: {known})") from None


def send(conn: TcpConnection, *, t: float, seg: TcpRepr | Iterable[TcpRepr]) -> None:
    """Feed one segment (or several, as one batch) from the peer at time *t*."""
    segs = [seg] if isinstance(seg, TcpRepr) else list(seg)
    for s in segs:
        conn.segment_received(s, t)


def recv(conn: TcpConnection, *, t: float) -> list[TcpRepr]:
    """Run the connection's timer if it is due at *t*, then return what it sends at *t*."""
    timer = conn.get_timer()
    if timer is not None and timer <= t:
        conn.handle_timer(t)
    return conn.segments_to_send(t)


def recv_nothing(conn: TcpConnection, *, t: float) -> None:
    """Assert that the connection sends nothing at *t*."""
    out = recv(conn, t=t)
    assert out == [], [str(s) for s in out]


def drain(conn: TcpConnection, t: float) -> tuple[list[TcpRepr], list[TcpEvent]]:
    """Take every pending segment and event."""
    return conn.segments_to_send(t), events(conn)


def events(conn: TcpConnection) -> list[TcpEvent]:
    """Take every queued event, oldest first."""
    out = []
    while (ev := conn.next_event()) is not None:
        out.append(ev)
    return out


def run_until(conn: TcpConnection, t: float) -> list[tuple[float, TcpRepr]]:
    """Fire every timer due up to *t*, each at its own due time; return ``(time, segment)``
    for everything sent on the way (including a final look at *t*)."""
    sent: list[tuple[float, TcpRepr]] = []
    while (timer := conn.get_timer()) is not None and timer <= t:
        conn.handle_timer(timer)
        sent.extend((timer, s) for s in conn.segments_to_send(timer))
    sent.extend((t, s) for s in conn.segments_to_send(t))
    return sent


def peer_segment(conn: TcpConnection, payload: bytes = b"", *, flags: int = ACK, **fields: Any) -> TcpRepr:
    """The peer's next in-order segment: SEQ = RCV.NXT, ACK = everything we sent (SND.MAX),
    carrying *payload*; *fields* override any other :class:`TcpRepr` field (``ts=``, ...)."""
    seg = replace(SEND, seq=conn.rcv_nxt, ack=conn.snd_max, flags=flags, payload=payload)
    return replace(seg, **fields) if fields else seg


class ConnectionBuilder:
    """Sans-IO connections in a chosen state with features installed by the plugins of
    *host*, and the small helpers to drive them on *clock* (the ``tcpstack_conn`` fixture).

    Connections are built at t=0 from LOCAL (10.0.0.1:80) to REMOTE (10.0.0.2:49500); keep
    the clock at or after 0.
    """

    STATES = tuple(s.value for s in STATE_BUILDERS)

    def __init__(self, host: PluginHost | None = None, clock: VirtualClock | None = None) -> None:
        self.host = host or builtin_host()
        self.clock = clock or VirtualClock()

    def __call__(
        self,
        state: TcpState | str = S.ESTABLISHED,
        features: Mapping[str, Any] | None = None,
        *,
        congestion_control: str | None = None,
        **kw: Any,
    ) -> TcpConnection:
        """A connection in *state* with *features* (``{name: settings}``) and *kw*
        (:class:`TcpOptions` fields and the builders' peer options: ``active``, ``peer_mss``,
        ``peer_window``, ``peer_wscale``, ``peer_ts``, ``half`` ...)."""
        target = as_state(state)
        conn = STATE_BUILDERS[target](features, host=self.host, congestion_control=congestion_control, **kw)
        assert conn.state is target, (conn.state, target)
        return conn

    def segment(self, conn: TcpConnection, payload: bytes = b"", **fields: Any) -> TcpRepr:
        """The peer's next in-order segment (see :func:`peer_segment`)."""
        return peer_segment(conn, payload, **fields)

    def send(self, conn: TcpConnection, seg: TcpRepr | Iterable[TcpRepr]) -> None:
        """Feed the peer's segment(s) at ``clock.now``."""
        send(conn, t=self.clock.now, seg=seg)

    def recv(self, conn: TcpConnection) -> list[TcpRepr]:
        """Fire a due timer, then take what the connection sends at ``clock.now``."""
        return recv(conn, t=self.clock.now)

    def drain(self, conn: TcpConnection) -> tuple[list[TcpRepr], list[TcpEvent]]:
        """Take every pending segment and event at ``clock.now``."""
        return drain(conn, self.clock.now)

    def advance(self, conn: TcpConnection, seconds: float) -> list[tuple[float, TcpRepr]]:
        """Move the clock by *seconds*, firing every timer due on the way at its own time."""
        return run_until(conn, self.clock.advance(seconds))
