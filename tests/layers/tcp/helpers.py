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

The reusable core (the constants, the state constructors, ``send``/``recv``/``drain``,
``decode``, ``stack_config``, ``make_stack``, ``App``) lives in :mod:`tcpstack.testing`, the
plugin-author kit shipped with the package, and is re-exported here under the same names.

The frame builders here pack headers with :mod:`struct` and the Internet checksum, never
with the code under test's emitters, so the tests don't trust what they test.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any

from framework.checksum import internet_checksum
from layers.ipv4.wire import Ipv4Repr
from layers.tcp.connection import TcpConnection
from layers.tcp.wire import ACK, SYN, TcpRepr
from tcpstack.testing import (
    BUFFER,
    L1,
    LOCAL_ADDR,
    LOCAL_IP,
    LOCAL_MSS,
    LOCAL_PORT,
    LOCAL_SEQ,
    MASK,
    PEER_WINDOW,
    R1,
    RECV,
    REMOTE_ADDR,
    REMOTE_IP,
    REMOTE_PORT,
    REMOTE_SEQ,
    SEND,
    App,
    S,
    close_wait,
    closed,
    closing,
    decode,
    drain,
    established,
    events,
    fin_wait_1,
    fin_wait_2,
    last_ack,
    listen,
    make_setup,
    make_stack,
    peer_syn,
    recv,
    recv_nothing,
    run_until,
    send,
    stack_config,
    syn_received,
    syn_sent,
    tcp_layer,
    time_wait,
)

__all__ = [
    "BUFFER",
    "L1",
    "LOCAL_ADDR",
    "LOCAL_IP",
    "LOCAL_MSS",
    "LOCAL_PORT",
    "LOCAL_SEQ",
    "MASK",
    "PEER_WINDOW",
    "R1",
    "RECV",
    "REMOTE_ADDR",
    "REMOTE_IP",
    "REMOTE_PORT",
    "REMOTE_SEQ",
    "SEND",
    "App",
    "LayerHarness",
    "S",
    "close_wait",
    "closed",
    "closing",
    "data",
    "decode",
    "drain",
    "established",
    "events",
    "fin_wait_1",
    "fin_wait_2",
    "frame",
    "ip_header",
    "last_ack",
    "listen",
    "make_setup",
    "make_stack",
    "peer_syn",
    "recv",
    "recv_nothing",
    "run_until",
    "send",
    "stack_config",
    "syn_received",
    "syn_sent",
    "tcp_bytes",
    "tcp_layer",
    "time_wait",
]


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
