"""Test vocabulary for the TCP layer (design notes C8: smoltcp's test style in Python).

Two harnesses:

1. The sans-IO :class:`~layers.tcp.connection.TcpConnection`, built directly:

   - ``SEND``/``RECV`` are template :class:`TcpRepr` segments (peer -> us and us -> peer);
     ``dataclasses.replace(SEND, seq=..., payload=...)`` plays smoltcp's ``..SEND_TEMPL``;
   - state constructors :func:`closed`, :func:`listen`, :func:`syn_sent`, :func:`syn_received`,
     :func:`established`, :func:`fin_wait_1`, :func:`fin_wait_2`, :func:`closing`,
     :func:`time_wait`, :func:`close_wait`, :func:`last_ack` each build on the previous one by
     feeding real segments at ``t=0`` and drain everything they produced, so a test starts
     from a quiet connection;
   - :func:`send` feeds ``segment_received``; :func:`recv` runs ``handle_timer`` when a timer
     is due and returns ``segments_to_send``; :func:`recv_nothing` asserts that is empty.

   Buffers are 64 bytes so windows stay readable (``window=61`` after 3 bytes), and the
   minimum RTO is RFC 6298's 1 s so retransmissions fall at 1, 3, 7, ... s.

2. A stack (memory link + ipv4 + tcp, built from a configuration like ``tcpstack up``) with
   :class:`LayerHarness`, which injects crafted segments as IPv4 frames and decodes what
   comes out of ``frames_to_send``; and :func:`make_stack` / :class:`App` for two stacks in a
   :class:`~framework.simulation.Simulation`.

The frame builders here pack headers with :mod:`struct` and the Internet checksum, never
with the code under test's emitters, so the tests don't trust what they test.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, cast

from framework.checksum import internet_checksum
from framework.config import build_stack, config_from_dict
from framework.plugins import PluginHost
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
from layers.tcp.policy import ConnInfo, TcpOptions, TcpSetup
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, FIN, SYN, TcpRepr, pseudo_base

S = TcpState
MASK = 0xFFFFFFFF

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


# ====================================================================== sans-IO connection


def make_setup(**options: Any) -> TcpSetup:
    """A :class:`TcpSetup` for LOCAL -> REMOTE with 64-byte buffers, a 1 s minimum RTO and the
    RFC 5681 initial window (tests name IW10 when they want it)."""
    opts: dict[str, Any] = {"send_buffer": BUFFER, "recv_buffer": BUFFER, "min_rto": 1.0, "initial_window": "rfc5681"}
    opts.update(options)
    info = ConnInfo(local=(LOCAL_ADDR, LOCAL_PORT), remote=(REMOTE_ADDR, REMOTE_PORT), mss=LOCAL_MSS)
    return TcpSetup(info=info, options=TcpOptions(**opts))


def closed(*, passive: bool = True, iss: int = LOCAL_SEQ, local_mss: int = LOCAL_MSS, **options: Any) -> TcpConnection:
    """A fresh TCB in CLOSED (nothing sent yet)."""
    return TcpConnection(make_setup(**options), iss=iss, now=0.0, passive=passive, local_mss=local_mss)


def listen(**kw: Any) -> TcpConnection:
    """A passive TCB in LISTEN, as the layer's listener holds it before a SYN arrives."""
    conn = closed(passive=True, **kw)
    conn.state = S.LISTEN
    return conn


def peer_syn(
    *, irs: int = REMOTE_SEQ, mss: int | None = None, window: int = PEER_WINDOW, payload: bytes = b""
) -> TcpRepr:
    """The peer's SYN ``<SEQ=IRS><CTL=SYN>``."""
    return replace(SEND, seq=irs, ack=0, flags=SYN, window=window, mss=mss, payload=payload)


def syn_received(
    *, irs: int = REMOTE_SEQ, peer_mss: int | None = None, syn_window: int = PEER_WINDOW, **kw: Any
) -> TcpConnection:
    """LISTEN + the peer's SYN: SYN-RECEIVED, our SYN-ACK already drained."""
    conn = listen(**kw)
    conn.open_passive(peer_syn(irs=irs, mss=peer_mss, window=syn_window), 0.0)
    drain(conn, 0.0)
    return conn


def syn_sent(**kw: Any) -> TcpConnection:
    """CLOSED + active OPEN: SYN-SENT, our SYN already drained."""
    conn = closed(passive=False, **kw)
    conn.open_active(0.0)
    drain(conn, 0.0)
    return conn


def established(
    *,
    active: bool = False,
    irs: int = REMOTE_SEQ,
    peer_mss: int | None = None,
    peer_window: int = PEER_WINDOW,
    **kw: Any,
) -> TcpConnection:
    """ESTABLISHED at t=0 through a real handshake (passive by default; ``active=True`` goes
    through SYN-SENT). Outputs and the ``Connected`` event are drained. The handshake's RTT
    sample is 0 s, so the RTO is ``min_rto`` (1 s by default)."""
    iss = kw.get("iss", LOCAL_SEQ)
    if active:
        conn = syn_sent(**kw)
        synack = replace(SEND, seq=irs, ack=(iss + 1) & MASK, flags=SYN | ACK, window=peer_window, mss=peer_mss)
        conn.segment_received(synack, 0.0)
    else:
        conn = syn_received(irs=irs, peer_mss=peer_mss, **kw)
        conn.segment_received(replace(SEND, seq=(irs + 1) & MASK, ack=(iss + 1) & MASK, window=peer_window), 0.0)
    assert conn.state is S.ESTABLISHED, conn.state
    drain(conn, 0.0)
    return conn


def fin_wait_1(*, half: bool = False, **kw: Any) -> TcpConnection:
    """ESTABLISHED + close() (``half=True``: shutdown()): FIN-WAIT-1, our FIN drained."""
    conn = established(**kw)
    if half:
        conn.shutdown(0.0)
    else:
        conn.close(0.0)
    assert conn.state is S.FIN_WAIT_1
    drain(conn, 0.0)
    return conn


def _peer_sends(conn: TcpConnection, seg: Any, state: TcpState) -> TcpConnection:
    """Deliver the peer's *seg* at t=0, check the state it leads to, drain our reply."""
    send(conn, t=0.0, seg=seg)
    assert conn.state is state
    drain(conn, 0.0)
    return conn


def fin_wait_2(**kw: Any) -> TcpConnection:
    """FIN-WAIT-1 + the peer's ACK of our FIN."""
    conn = fin_wait_1(**kw)
    return _peer_sends(conn, replace(SEND, seq=conn.rcv_nxt, ack=conn.snd_max), S.FIN_WAIT_2)


def closing(**kw: Any) -> TcpConnection:
    """FIN-WAIT-1 + the peer's FIN that does not acknowledge ours (simultaneous close)."""
    conn = fin_wait_1(**kw)
    return _peer_sends(conn, replace(SEND, seq=conn.rcv_nxt, ack=conn.snd_una, flags=FIN | ACK), S.CLOSING)


def time_wait(**kw: Any) -> TcpConnection:
    """FIN-WAIT-2 + the peer's FIN: TIME-WAIT (RCV.NXT = REMOTE_SEQ + 2)."""
    conn = fin_wait_2(**kw)
    return _peer_sends(conn, replace(SEND, seq=conn.rcv_nxt, ack=conn.snd_max, flags=FIN | ACK), S.TIME_WAIT)


def close_wait(**kw: Any) -> TcpConnection:
    """ESTABLISHED + the peer's FIN: CLOSE-WAIT (RCV.NXT = REMOTE_SEQ + 2)."""
    conn = established(**kw)
    return _peer_sends(conn, replace(SEND, seq=conn.rcv_nxt, ack=conn.snd_max, flags=FIN | ACK), S.CLOSE_WAIT)


def last_ack(**kw: Any) -> TcpConnection:
    """CLOSE-WAIT + close(): LAST-ACK, our FIN (seq LOCAL_SEQ + 1) drained."""
    conn = close_wait(**kw)
    conn.close(0.0)
    assert conn.state is S.LAST_ACK
    drain(conn, 0.0)
    return conn


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
    """Take every pending segment and event (used by the state constructors)."""
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


def data(n: int, start: int = 0) -> bytes:
    """*n* recognisable bytes (a repeating alphabet starting at *start*)."""
    alphabet = b"abcdefghijklmnopqrstuvwxyz"
    return bytes(alphabet[(start + i) % 26] for i in range(n))


# ====================================================================== frames on the wire


def ip_header(src: bytes, dst: bytes, payload_len: int, *, proto: int = 6, ident: int = 0, ttl: int = 64) -> bytes:
    """A 20-byte IPv4 header with DF and a correct checksum."""
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ident, 0x4000, ttl, proto, 0, src, dst)
    return hdr[:10] + internet_checksum(hdr).to_bytes(2, "big") + hdr[12:]


def tcp_bytes(
    seg: TcpRepr,
    *,
    src: bytes = REMOTE_ADDR,
    dst: bytes = LOCAL_ADDR,
    options: bytes | None = None,
    data_offset: int | None = None,
    reserved: int = 0,
    checksum: int | None = None,
) -> bytes:
    """Raw TCP bytes for *seg*, built with struct (not ``TcpRepr.emit``).

    *options* are raw option bytes (padded with zeros to 4 bytes); when ``None``, the MSS
    option is written if ``seg.mss`` is set. *data_offset* (in 32-bit words) and *checksum*
    override the computed values, for malformed-segment tests.
    """
    if options is None:
        options = struct.pack("!BBH", 2, 4, seg.mss) if seg.mss is not None else b""
    options += b"\0" * (-len(options) % 4)
    hlen = 20 + len(options)
    doff = hlen // 4 if data_offset is None else data_offset
    payload = bytes(seg.payload)
    hdr = struct.pack(
        "!HHIIBBHHH",
        seg.src_port,
        seg.dst_port,
        seg.seq & MASK,
        seg.ack & MASK,
        (doff << 4) | (reserved & 0x0F),
        seg.flags,
        seg.window,
        0,
        seg.urgent,
    )
    raw = hdr + options + payload
    if checksum is None:
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(raw))
        checksum = internet_checksum(pseudo + raw)
    return raw[:16] + checksum.to_bytes(2, "big") + raw[18:]


def frame(seg: TcpRepr | bytes, *, src: bytes = REMOTE_ADDR, dst: bytes = LOCAL_ADDR, **kw: Any) -> bytes:
    """An IPv4 datagram carrying *seg* (a TcpRepr, or raw TCP bytes)."""
    tcp = seg if isinstance(seg, bytes) else tcp_bytes(seg, src=src, dst=dst, **kw)
    return ip_header(src, dst, len(tcp)) + tcp


def decode(frm: bytes) -> tuple[Ipv4Repr, TcpRepr]:
    """Parse one frame the stack sent; the TCP checksum is verified over the pseudo-header."""
    ip, payload = Ipv4Repr.parse(memoryview(frm))
    assert ip.protocol == 6, ip
    seg = TcpRepr.parse(payload, pseudo_base(ip.src, ip.dst))
    seg.payload = bytes(seg.payload)
    return ip, seg


def stack_config(
    address: str = f"{LOCAL_IP}/24", *, mtu: int = 1500, fault: dict[str, Any] | None = None, **tcp: Any
) -> dict[str, Any]:
    """A configuration dict: memory link, [fault,] ipv4 at *address*, tcp with *tcp* settings."""
    layers: list[dict[str, Any]] = [{"type": "memory", "mtu": mtu}]
    if fault is not None:
        layers.append({"type": "fault", **fault})
    layers.append({"type": "ipv4", "address": address, "ident_seed": 0})
    # Every feature off by default: each test names the features it turns on (design notes C8).
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


def make_stack(address: str = f"{LOCAL_IP}/24", **kw: Any) -> Stack:
    """Build a stack from :func:`stack_config` with built-in plugins only."""
    cfg = config_from_dict(stack_config(address, **kw), host=PluginHost(entry_points=False))
    return build_stack(cfg)


def tcp_layer(stack: Stack) -> TcpLayer:
    return cast(TcpLayer, stack.layer("tcp"))


class LayerHarness:
    """One stack at 10.0.0.1 whose TCP layer is driven with crafted frames from 10.0.0.2."""

    def __init__(self, *, mtu: int = 1500, **tcp: Any) -> None:
        self.stack = make_stack(mtu=mtu, **tcp)
        self.tcp = tcp_layer(self.stack)
        self.now = 0.0

    def inject(self, seg: TcpRepr | bytes, *, t: float, src: bytes = REMOTE_ADDR, **kw: Any) -> list[TcpRepr]:
        """Deliver *seg* (a TcpRepr or raw TCP bytes) at *t*; return the segments sent back."""
        return self.inject_frame(frame(seg, src=src, **kw), t=t)

    def inject_frame(self, frm: bytes, *, t: float) -> list[TcpRepr]:
        self.now = t
        self.stack.receive_frame(frm, now=t)
        return self.output(t=t)

    def output(self, *, t: float) -> list[TcpRepr]:
        """Decode every frame the stack sends at *t* (after delivering events)."""
        self.now = t
        out = [decode(f)[1] for f in self.stack.frames_to_send(now=t)]
        self.stack.dispatch_events()
        out += [decode(f)[1] for f in self.stack.frames_to_send(now=t)]
        return out

    def output_frames(self, *, t: float) -> list[tuple[Ipv4Repr, TcpRepr]]:
        self.now = t
        return [decode(f) for f in self.stack.frames_to_send(now=t)]

    def advance(self, t: float) -> list[tuple[float, TcpRepr]]:
        """Fire every timer due up to *t* at its own due time; ``(time, segment)`` sent."""
        sent: list[tuple[float, TcpRepr]] = []
        while (timer := self.stack.get_timer()) is not None and timer <= t:
            self.stack.handle_timer(now=timer)
            sent.extend((timer, s) for s in self.output(t=timer))
        self.now = t
        return sent

    def drops(self, reason: str, layer: str = "tcp") -> int:
        return self.stack.stats.drops[(layer, reason)]

    def handshake(
        self,
        port: int = LOCAL_PORT,
        *,
        t: float = 0.0,
        remote_port: int = REMOTE_PORT,
        irs: int = REMOTE_SEQ,
        mss: int | None = None,
        window: int = PEER_WINDOW,
        options: bytes | None = None,
    ) -> tuple[TcpConnection, TcpRepr]:
        """Open a connection from the peer to *port* (a listener must exist); return the
        TCB and our SYN-ACK."""
        syn = replace(SEND, src_port=remote_port, dst_port=port, seq=irs, ack=0, flags=SYN, window=window, mss=mss)
        out = self.inject(syn, t=t, options=options)
        assert len(out) == 1 and out[0].flags == SYN | ACK, [str(s) for s in out]
        synack = out[0]
        ack = replace(SEND, src_port=remote_port, dst_port=port, seq=irs + 1, ack=synack.seq + 1, window=window)
        assert self.inject(ack, t=t) == []
        conn = self.tcp.connections[(REMOTE_ADDR, remote_port, port)]
        assert conn.state is S.ESTABLISHED
        return conn, synack

    def user(self, conn: TcpConnection) -> None:
        """After a user call on *conn*: let the layer send its output at the next flush."""
        self.tcp.touch(conn)


# ====================================================================== two stacks


class App:
    """A user of one connection in a simulation: writes ``to_send``, then half-closes;
    records what it reads, EOF, failures and the end of the connection."""

    def __init__(self, clock: Any, tcp: TcpLayer, to_send: bytes = b"", *, close_after_eof: bool = False) -> None:
        self.clock = clock  # anything with a ``now`` attribute (the Simulation)
        self.tcp = tcp
        self.to_send = memoryview(to_send)
        self.sent = 0
        self.received = bytearray()
        self.eof = False
        self.closed = False
        self.failures: list[ConnectionFailed] = []
        self.close_after_eof = close_after_eof
        self.conn: TcpConnection | None = None
        self._shut = False

    def attach(self, conn: TcpConnection) -> None:
        self.conn = conn
        conn.listener = self
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
        if self.sent == len(self.to_send) and conn.state in (S.ESTABLISHED, S.CLOSE_WAIT):
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
