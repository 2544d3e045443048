"""The TCP layer (RFC 9293): demultiplexing, listeners, RST for closed ports, ISNs, ports.

Per segment the layer does a constant amount of work: one dict lookup by the 4-tuple, the
connection's own processing, and marking the connection "dirty". Output is produced once per
batch in :meth:`TcpLayer.flush`, for dirty connections only. Timers live in a heap keyed by
each connection's next deadline, with stale entries skipped lazily, so neither costs grow with
the number of connections (a stack that ticks every connection per packet or per timer
slows down as connections accumulate).

Compiled with mypyc when a compiled build exists (pyproject.toml ``[tool.tcpstack.compiled]``):
the layer's own per-connection work (early demux's slow half, the passive open, flush, timers,
events) runs compiled. It holds no ``@hookimpl`` function (pluggy marks those by setting an
attribute, which a compiled function does not take): the layer's plugin, which registers it, is
layers/tcp/handler.py.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import os
import random
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

import structlog

from framework.capabilities import capabilities_below
from framework.context import Context
from framework.errors import ConfigError, InvalidStateError, WireError
from framework.handler import BaseHandler, PacketHandler
from framework.netlayer import NetHeader, NetworkLayer, network_layer_below
from framework.packet import Packet
from framework.plugins import PluginHost
from framework.registry import Registry
from framework.stack import Stack
from framework.stats import Stats
from layers.tcp import cookie_handshake, fastpath
from layers.tcp.buffers import OooPool
from layers.tcp.connection import TcpConnection
from layers.tcp.demux import EarlyDemux, find_rx_path
from layers.tcp.features import (
    defaults,
    merge,
    resolve_algorithm_settings,
)
from layers.tcp.policy import ConnInfo, TcpOptions, TcpSetup
from layers.tcp.seq import MASK, seq_add, seq_gt
from layers.tcp.settings import TcpSettings
from layers.tcp.setup import SetupHook, connection_setup, resolve_overrides, trial_setup
from layers.tcp.state import TcpState
from layers.tcp.syncookies import (
    VALID_FOR,
    ListenerCodecs,
    SynCookies,
)
from layers.tcp.txframe import TxPath, TxTemplate, find_direct
from layers.tcp.wire import ACK, FIN, HEADER_LEN, PROTO_TCP, RST, SYN, TcpRepr, pseudo_base

logger = structlog.get_logger("tcpstack.tcp")

S = TcpState
EPHEMERAL_LOW = 49152  # RFC 6056 §2.1: the IANA ephemeral range
EPHEMERAL_HIGH = 65535

Key = tuple[bytes, int, int]  # (remote address, remote port, local port)
_PORTS = struct.Struct("!HH")  # RFC 9293 §3.1: source and destination port


class Listener:
    """A passive OPEN on one port, with a SYN queue (half-open connections) and an accept queue
    (completed handshakes not yet accepted), each bounded (RFC 4987 §3.2-3.6)."""

    def __init__(
        self,
        port: int,
        backlog: int,
        options: TcpOptions,
        on_accept: Callable[[TcpConnection], None] | None,
        syn_backlog: int = 256,
    ) -> None:
        self.port = port
        self.backlog = backlog
        self.syn_backlog = syn_backlog
        self.options = options
        self.on_accept = on_accept
        self.accept_queue: deque[TcpConnection] = deque()
        self.embryonic: set[TcpConnection] = set()
        self.closed = False
        self.features: dict[str, Any] = {}  # resolved per-listener feature overrides
        self.cookie_sent_at = float("-inf")  # when this listener last answered with a SYN cookie
        self.codecs: ListenerCodecs | None = None  # its features' cookie codecs (computed once)

    @property
    def syn_queue_full(self) -> bool:
        return len(self.embryonic) >= self.syn_backlog

    @property
    def accept_queue_full(self) -> bool:
        """Only connections nobody takes at once wait here (``on_accept`` takes them)."""
        return self.on_accept is None and len(self.accept_queue) >= self.backlog

    @property
    def full(self) -> bool:
        return self.syn_queue_full or self.accept_queue_full

    def accept(self) -> TcpConnection | None:
        return self.accept_queue.popleft() if self.accept_queue else None


class TcpLayer(BaseHandler):
    """The TCP pipeline handler: owns every connection and listener of the stack."""

    def __init__(self, name: str, settings: TcpSettings) -> None:
        self.name = name
        self.settings = settings
        self.address = b"\0\0\0\0"
        self.tso_max = 0
        self._csum_offload = False
        self._tx: TxPath | None = None  # the send path, when attach finds one (layers/tcp/txframe.py)
        self.tx_direct = False
        self._net_header_len = 20
        self._setup_failed_logged = float("-inf")
        self.mtu = 1500
        self.connections: dict[Key, TcpConnection] = {}
        self.listeners: dict[int, Listener] = {}
        self._dirty: dict[TcpConnection, None] = {}
        self._timers: list[tuple[float, int, TcpConnection]] = []
        self._timer_of: dict[TcpConnection, float | None] = {}
        self._tie = 0
        self._eventful: dict[TcpConnection, None] = {}
        secret = settings.isn_secret
        self._isn_key = bytes.fromhex(secret) if secret else os.urandom(16)
        cookie_secret = settings.syncookie_secret
        self._cookies = SynCookies(bytes.fromhex(cookie_secret) if cookie_secret else os.urandom(16))
        self._ports = random.Random(settings.port_seed if settings.port_seed is not None else os.urandom(8))
        self._pseudo_in = 0
        self._log: Any = logger
        self.on_new_connection: Callable[[TcpConnection], None] | None = None
        self.host: PluginHost | None = None
        self.registry: Registry | None = None
        self._algorithms_from: Registry | None = None  # the registry _algorithm_settings asked
        self._setup_hook: SetupHook | None = None  # the tcp_connection_setup hook, run directly
        self.ooo_pool = OooPool(settings.ooo_memory)  # out-of-order data of every connection
        self._below: tuple[PacketHandler, ...] = ()
        self.early_demux: EarlyDemux | None = None  # set when the stack takes it (install_early_demux)
        # Connection numbers (ConnInfo.number): next_number, then every number_step-th; `up --workers`
        # gives worker i of n the start i + 1 and the step n, so numbers stay unique across workers.
        self.next_number = 1
        self.number_step = 1
        #: Stack-wide objects plugins keep for their connections, by plugin name, filled in their
        #: ``stack_configured``; every connection's setup sees it as ``TcpSetup.shared``.
        self.shared: dict[str, Any] = {}

    # ------------------------------------------------------------------ assembly

    def attach(self, below: Sequence[PacketHandler], above: Sequence[PacketHandler]) -> None:
        net = network_layer_below(below)
        if net is None:
            raise ConfigError(["tcp: needs a network layer (ipv4) below it"])
        self.net: NetworkLayer = net
        self.address = net.local_addresses()[0]
        self.mtu = net.mtu_to(None)
        self._net_header_len = net.header_len
        self._make_header = net.make_header  # bound once: the per-segment call is one call
        # Link offload (docs/architecture.md, "TUN offload"): the device completes checksums
        # and, if it can, cuts super-segments; both need the checksum left partial.
        caps = capabilities_below(below)
        self._csum_offload = caps is not None and caps.checksum_tx
        self.tso_max = caps.max_super_segment if caps is not None and caps.checksum_tx else 0
        # The send path (layers/tcp/txframe.py): frames built whole when nothing but IPv4 and the
        # link lie below; a middleware in between gets Packets through the pipeline instead.
        direct = find_direct(below)
        self._tx = TxPath(direct[0], direct[1], self._csum_offload) if direct is not None else None
        self.tx_direct = self._tx is not None  # tests set it false to compare the pipeline path
        self._below = tuple(below)

    def install_early_demux(self, stack: Stack) -> None:
        """Take predicted segments straight from the link (layers/tcp/demux.py) when the
        pipeline's shape lets this layer do the link's and the IPv4 layer's part exactly:
        decided once, when the stack is assembled."""
        if not (self.settings.early_demux and self.settings.fast_path) or self.early_demux is not None:
            return
        path = find_rx_path(stack.pipeline, self, self._below)
        if path is None:
            return
        demux = EarlyDemux(self, self.connections, path[0], path[1], stack.stats)
        if stack.set_early_receive(demux.receive):
            self.early_demux = demux

    @property
    def local_mss(self) -> int:
        """RFC 9293 §3.7.1 / RFC 6691: MTU minus the fixed network and TCP headers."""
        return self.mtu - self._net_header_len - 20

    # ------------------------------------------------------------------ receive

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        ip = pkt.net
        if pkt.error is not None:
            self._net_error(pkt, ctx)
            return None
        if ip is None or ip.protocol != PROTO_TCP:
            return pkt  # not ours: pass it on
        # MUST-3: verify, unless the link vouches for it (TUN offload: a local kernel's partial sum).
        pseudo = pseudo_base(ip.src, ip.dst) if self.settings.verify_checksum and not pkt.csum_ok else None
        raw = cast(memoryview, pkt.payload)
        now = ctx.now
        conn: TcpConnection | None = None
        if len(raw) >= HEADER_LEN:
            # Early demux: the connection from the raw ports, then header prediction
            # (layers/tcp/fastpath.py; docs/architecture.md, "Receive fast path").
            sport, dport = _PORTS.unpack_from(raw)
            conn = self.connections.get((ip.src, sport, dport))
            if conn is not None and conn.fast_path:
                kind = fastpath.receive(conn, raw, pseudo, ip.tos & 3, now)
                if kind:
                    if kind == fastpath.BAD_CHECKSUM:
                        ctx.stats.drop("tcp", "bad_checksum")
                        return None
                    ctx.stats.count("tcp.fast_path" if kind == fastpath.DATA else "tcp.fast_ack")
                    if conn.drop_reason is not None:
                        ctx.stats.drop("tcp", conn.drop_reason)
                        conn.drop_reason = None
                    self._dirty[conn] = None
                    return None
        try:
            seg = TcpRepr.parse(raw, pseudo)
        except WireError as exc:
            ctx.stats.drop("tcp", exc.reason)
            return None
        seg.ip_ecn = ip.tos & 3  # RFC 3168 §5: the ECN field travels with the segment
        if conn is not None:
            st = conn.state
            if st is S.ESTABLISHED:
                pass
            elif st is S.TIME_WAIT and seg.flags & SYN and not seg.flags & (ACK | RST):
                # MAY-2 / SHLD-4: a new SYN may reopen a TIME-WAIT 4-tuple if its sequence
                # number is above everything of the old incarnation.
                if seq_gt(seg.seq, conn.rcv_nxt) and seg.dst_port in self.listeners:
                    self._remove(conn, now)
                    self._listen_segment(self.listeners[seg.dst_port], ip, seg, ctx)
                    return None
            elif st is S.SYN_RECEIVED and seg.flags & ACK and not seg.flags & RST:
                listener = conn.listener_ref
                if listener is not None and listener.accept_queue_full:
                    # RFC 4987 §3.2: no room to queue the completed connection: drop the ACK
                    # (as Linux does); the SYN-ACK is retransmitted and the peer tries again.
                    ctx.stats.drop("tcp", "accept_queue_full")
                    return None
            conn.segment_received(seg, now)
            if conn.drop_reason is not None:  # out-of-order data over its memory budget
                ctx.stats.drop("tcp", conn.drop_reason)
                conn.drop_reason = None
            self._touch(conn)
            if st is S.SYN_RECEIVED:
                self._settle(conn)
            return None
        listener = self.listeners.get(seg.dst_port)
        if listener is not None and not listener.closed:
            self._listen_segment(listener, ip, seg, ctx)
            return None
        self._no_tcb(ip, seg, ctx)
        return None

    def early_segment(
        self, conn: TcpConnection, raw: memoryview, pseudo: int | None, ecn: int, now: float, stats: Stats
    ) -> bool:
        """Early demux's second half (layers/tcp/demux.py): a segment of an existing connection
        that header prediction refused (the handshake's last ACK, a FIN, anything out of the
        ordinary), processed as :meth:`receive` processes it once the link and the IPv4 layer
        passed it up. ``False``, having changed nothing, where :meth:`receive` would do more
        than that (a SYN that may reopen TIME-WAIT, a full accept queue, a malformed header):
        the frame then goes up the pipeline."""
        st = conn.state
        if st is S.TIME_WAIT:
            return False
        if st is S.SYN_RECEIVED:
            listener = conn.listener_ref
            if listener is not None and listener.accept_queue_full:
                return False
        try:
            seg = TcpRepr.parse(raw, pseudo)
        except WireError:
            return False
        seg.ip_ecn = ecn  # RFC 3168 §5: the ECN field travels with the segment
        conn.segment_received(seg, now)
        if conn.drop_reason is not None:  # out-of-order data over its memory budget
            stats.drop("tcp", conn.drop_reason)
            conn.drop_reason = None
        self._dirty[conn] = None
        if st is S.SYN_RECEIVED:
            self._settle(conn)
        return True

    def early_syn(
        self, src: bytes, dport: int, raw: memoryview, pseudo: int | None, ecn: int, now: float, stats: Stats
    ) -> bool:
        """Early demux's part for a segment of no connection (layers/tcp/demux.py): a plain SYN
        to a listener with room, which :meth:`_listen_segment` would put in its SYN queue,
        done as it does it. ``False``, having changed nothing, for anything else (a RST, an
        ACK, a SYN with FIN, a full queue, SYN cookies to send, no listener, a header that does
        not parse): the frame then goes up the pipeline, which answers or counts it."""
        # The flags byte (RFC 9293 §3.1, octet 13) first: a stray ACK or RST to a listening port
        # is not parsed (nor its checksum summed) here and again by the pipeline.
        if raw[13] & (SYN | ACK | RST | FIN) != SYN:
            return False
        listener = self.listeners.get(dport)
        if listener is None or listener.closed or listener.accept_queue_full or listener.syn_queue_full:
            return False
        if len(self.connections) >= self.settings.max_connections or listener.options.syncookies == "always":
            return False
        try:
            seg = TcpRepr.parse(raw, pseudo)
        except WireError:
            return False
        seg.ip_ecn = ecn  # RFC 3168 §5: the ECN field travels with the segment
        # RFC 9293 §3.10.7.2, LISTEN, "third": a SYN (as _listen_segment, past its checks).
        conn = self._passive_connection(listener, src, seg, now, stats, None)
        if conn is not None:
            conn.open_passive(seg, now)
        return True

    def _listen_segment(self, listener: Listener, ip: NetHeader, seg: TcpRepr, ctx: Context) -> None:
        """RFC 9293 §3.10.7.2, LISTEN, with SYN cookies (RFC 4987 §3.6)."""
        flags = seg.flags
        if flags & RST:
            ctx.stats.drop("tcp", "rst_to_listener")  # first: an incoming RST is ignored
            return
        if flags & ACK:
            # A cookie is checked only on a listener that sent cookies lately (as Linux does), so
            # an ACK flood costs no hash otherwise.
            if not flags & SYN and ctx.now - listener.cookie_sent_at < VALID_FOR:
                if cookie_handshake.cookie_ack(self, listener, ip, seg, ctx):
                    return
            # second: any acknowledgment is bad in LISTEN: <SEQ=SEG.ACK><CTL=RST>
            self._send_rst(ip, seg, ctx)
            return
        if not flags & SYN:
            ctx.stats.drop("tcp", "no_syn_to_listener")
            return
        if flags & FIN:
            ctx.stats.drop("tcp", "syn_fin")
            return
        if listener.accept_queue_full:
            # RFC 4987 §3.2: the application is not keeping up; a cookie would only complete a
            # handshake nobody accepts. Drop (never reset): the client retransmits.
            ctx.stats.drop("tcp", "accept_queue_full")
            return
        if len(self.connections) >= self.settings.max_connections:
            ctx.stats.drop("tcp", "too_many_connections")  # a cookie would complete into nothing
            return
        mode = listener.options.syncookies
        if mode == "always" or (mode == "auto" and listener.syn_queue_full):
            cookie_handshake.send_cookie(self, listener, ip, seg, ctx)
            return
        if listener.syn_queue_full:
            ctx.stats.drop("tcp", "backlog_full")  # a full SYN queue drops the SYN; it never resets
            return
        conn = self._passive_connection(listener, ip.src, seg, ctx.now, ctx.stats, None)
        if conn is not None:
            conn.open_passive(seg, ctx.now)

    def _passive_connection(
        self, listener: Listener, src: bytes, seg: TcpRepr, now: float, stats: Stats, iss: int | None
    ) -> TcpConnection | None:
        """A new connection in the listener's SYN queue (``None`` if a plugin failed)."""
        local = (self.address, seg.dst_port)
        remote = (src, seg.src_port)
        try:
            conn = self._new_connection(
                local, remote, listener.options, passive=True, now=now, overrides=listener.features, iss=iss
            )
        except Exception as exc:  # a plugin failed for this connection (clashes were checked earlier)
            stats.drop("tcp", "setup_failed")
            if now - self._setup_failed_logged >= 1.0:  # at most one line a second under a SYN flood
                self._setup_failed_logged = now
                self._log.error("tcp.setup_failed", port=seg.dst_port, error=f"{type(exc).__name__}: {exc}")
            return None
        conn.listener_ref = listener
        listener.embryonic.add(conn)
        self._touch(conn)
        return conn

    def _no_tcb(self, ip: NetHeader, seg: TcpRepr, ctx: Context) -> None:
        """RFC 9293 §3.10.7.1: CLOSED (no TCB): answer anything but a RST with a RST."""
        if seg.flags & RST:
            ctx.stats.drop("tcp", "rst_no_tcb")  # RFC 9293 §3.10.7.1: never answer a RST
            return
        ctx.stats.count("tcp.rst_sent_no_tcb")
        self._send_rst(ip, seg, ctx)

    def _send_rst(self, ip: NetHeader, seg: TcpRepr, ctx: Context) -> None:
        if seg.flags & ACK:
            rst = TcpRepr(seg.dst_port, seg.src_port, seg.ack, 0, RST, 0)  # <SEQ=SEG.ACK><CTL=RST>
        else:
            # <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; SYN and FIN count in SEG.LEN (RFC 9293 §3.4)
            rst = TcpRepr(seg.dst_port, seg.src_port, 0, seq_add(seg.seq, seg.seg_len), RST | ACK, 0)
        self._transmit(ip.dst, ip.src, rst, ctx)

    def _net_error(self, pkt: Packet, ctx: Context) -> None:
        """An error the network layer reports about one of our segments (ICMP on IPv4):
        ``pkt.net`` and ``pkt.payload`` are the quoted header and segment (RFC 9293 §3.9.2.2)."""
        quoted = cast(NetHeader, pkt.net)
        data = bytes(pkt.payload[:8])
        if len(data) < 8:
            ctx.stats.drop("tcp", "icmp_quote_short")
            return
        sport = int.from_bytes(data[0:2], "big")
        dport = int.from_bytes(data[2:4], "big")
        seq = int.from_bytes(data[4:8], "big")
        conn = self.connections.get((quoted.dst, dport, sport))
        if conn is None or pkt.error is None:
            ctx.stats.drop("tcp", "icmp_no_connection")
            return
        conn.icmp_error(pkt.error, seq, ctx.now)
        self._touch(conn)

    # ------------------------------------------------------------------ output

    def flush(self, ctx: Context) -> None:
        """Emit the output of every connection touched since the last flush."""
        if not self._dirty:
            return
        dirty = self._dirty
        self._dirty = {}
        now = ctx.now
        tx = self._tx if self.tx_direct else None
        for conn in dirty:
            segs = conn.segments_to_send(now)
            if segs:
                local, remote = conn.local, conn.remote
                if tx is not None:
                    tpl = tx.template(conn, local[0], remote[0], local[1], remote[1])
                    for seg in segs:
                        tx.send(tpl, seg, ctx)
                else:
                    for seg in segs:
                        self._transmit(local[0], remote[0], seg, ctx)
            if conn.events:
                self._eventful[conn] = None
            st = conn.state
            if st is S.CLOSED or st is S.LISTEN:
                self._remove(conn, now)
            else:
                self._schedule(conn)
            self._update_listener(conn)

    def _transmit(self, src: bytes, dst: bytes, seg: TcpRepr, ctx: Context) -> None:
        if self._tx is not None and self.tx_direct:  # a reply without a connection (RST, cookie)
            self._tx.send(TxTemplate(src, dst, seg.src_port, seg.dst_port), seg, ctx)
            return
        seg.pseudo = pseudo_base(src, dst)
        pkt = Packet(b"", self._make_header(src, dst, PROTO_TCP, tos=seg.ip_ecn, dont_frag=True))
        if self._csum_offload:
            seg.csum_partial = pkt.csum_partial = True  # the device completes it (MUST-2 still met)
            pkt.gso_size = seg.gso_size
        pkt.push(seg)
        ctx.transmit(self, pkt)

    def _touch(self, conn: TcpConnection) -> None:
        self._dirty[conn] = None

    def touch(self, conn: TcpConnection) -> None:
        """Mark *conn* as having output after a user call (the API calls this)."""
        self._dirty[conn] = None

    @property
    def has_output(self) -> bool:
        return bool(self._dirty)

    def _settle(self, conn: TcpConnection) -> None:
        """A handshake that completes goes to its listener's accept queue at once, not at the
        end of the batch, so a batch of ACKs cannot overfill it (RFC 4987 §3.2). Listeners with
        ``on_accept`` still get the connection at flush time, outside packet processing."""
        listener = conn.listener_ref
        if listener is not None and listener.on_accept is None and conn.state is not S.SYN_RECEIVED:
            self._update_listener(conn)

    def _update_listener(self, conn: TcpConnection) -> None:
        listener: Listener | None = getattr(conn, "listener_ref", None)
        if listener is None:
            return
        if conn.state is not S.SYN_RECEIVED:
            listener.embryonic.discard(conn)
            conn.listener_ref = None
            if conn.state in (S.ESTABLISHED, S.CLOSE_WAIT) and not listener.closed:
                # RFC 9293 §3.10.7.4: accept() returns only connections that completed the handshake.
                if listener.on_accept is not None:
                    listener.on_accept(conn)
                else:
                    listener.accept_queue.append(conn)

    # ------------------------------------------------------------------ timers

    def _schedule(self, conn: TcpConnection) -> None:
        t = conn.get_timer()
        if self._timer_of.get(conn) == t:
            return
        self._timer_of[conn] = t
        if t is not None:
            self._tie += 1
            heapq.heappush(self._timers, (t, self._tie, conn))
            if len(self._timers) > 4 * len(self.connections) + 64:
                self._compact_timers()

    def _compact_timers(self) -> None:
        self._timers = [(t, tie, c) for t, tie, c in self._timers if self._timer_of.get(c) == t]
        heapq.heapify(self._timers)

    def poll_at(self) -> float | None:
        timers = self._timers
        while timers:
            t, _, conn = timers[0]
            if self._timer_of.get(conn) == t:
                return t
            heapq.heappop(timers)
        return None

    def handle_timer(self, ctx: Context) -> None:
        now = ctx.now
        timers = self._timers
        while timers and timers[0][0] <= now:
            t, _, conn = heapq.heappop(timers)
            if self._timer_of.get(conn) != t:
                continue
            self._timer_of[conn] = None
            conn.handle_timer(now)
            self._touch(conn)
        self.flush(ctx)

    # ------------------------------------------------------------------ events

    def dispatch_events(self) -> None:
        """Hand queued events to each connection's listener object (``handle_event``).

        Connections touched since the last flush count too, and a handshake completed since
        then is accepted first: the driver dispatches before it flushes, so that what the
        application answers (a reply, its FIN after the peer's) goes out with the ACK, in one
        segment (RFC 9293 §3.10.7.4: the ACK rides on outgoing data)."""
        if self._dirty:
            eventful = self._eventful
            for conn in tuple(self._dirty):  # on_accept may open connections
                self._update_listener(conn)
                if conn.events:
                    eventful[conn] = None
        while self._eventful:
            eventful = self._eventful
            self._eventful = {}
            for conn in eventful:
                target = conn.listener
                if target is None:
                    continue
                while conn.events:
                    event = conn.events.popleft()
                    try:
                        target.handle_event(conn, event)
                    except Exception:
                        # A failing listener (application code) must not cost other
                        # connections their events, nor this one its later events.
                        self._log.exception("tcp.listener_failed", conn=conn.label, tcp_event=type(event).__name__)

    # ------------------------------------------------------------------ plugins

    def bind(self, host: PluginHost) -> None:
        """Called when the stack is assembled: per-connection plugins come from *host*."""
        self.host = host
        self.registry = host.registry
        self._setup_hook = SetupHook(host)  # no pluggy caller per connection (layers/tcp/setup.py)
        if not self.settings.resolved_features and not self.settings.features and self.settings.default_features:
            problems: list[str] = []
            self.settings.resolved_features = defaults(host.registry, problems)

    def _algorithm_settings(self) -> dict[str, Any]:
        """Each algorithm's settings object (the ``congestion`` table over its defaults)."""
        s = self.settings
        registry = self.registry
        # Once per registry: an empty table (no [congestion] settings) is an answer too.
        if not s.resolved_congestion and registry is not None and self._algorithms_from is not registry:
            s.resolved_congestion = resolve_algorithm_settings(registry, s.congestion, "congestion", [])
            self._algorithms_from = registry
        return s.resolved_congestion

    def resolve_features(self, options: TcpOptions) -> dict[str, Any]:
        """Validate *options*' feature overrides and algorithm name.

        :raises ValueError: listing every unknown feature, bad setting or unknown algorithm.
        """
        problems: list[str] = []
        resolved: dict[str, Any] = {}
        # Read untyped: a caller's wrong type (a dict for the algorithm's name) gets resolve_overrides'
        # clear ValueError, not the TypeError a typed read raises in the compiled build.
        untyped: Any = options
        if self.registry is not None:
            resolved = resolve_overrides(self.registry, untyped.features, untyped.congestion_control, problems)
        elif options.features or options.congestion_control:
            problems.append("features: this stack has no plugin host")
        if not problems and self.host is not None and (options.features or options.congestion_control):
            # Only a call that changes the stack's defaults needs a trial: those were tried when
            # the configuration was checked.
            features = merge(self.settings.resolved_features, resolved)
            name = options.congestion_control or self.settings.congestion_control
            error = trial_setup(self.host, features, name, options, self._algorithm_settings())
            if error is not None:
                problems.append(f"features: {error}")
        if problems:
            raise ValueError("; ".join(problems))
        return resolved

    def _setup(self, info: ConnInfo, options: TcpOptions, overrides: dict[str, Any]) -> TcpSetup:
        """Features and congestion control for one connection, through the one setup path
        (layers/tcp/setup.py: the setup hook's implementations run once per connection, called
        directly, never per segment)."""
        base = self.settings.resolved_features
        # No per-listener overrides (the usual case): merge's result without its copy and loop.
        features = merge(base, overrides) if overrides else {k: v for k, v in base.items() if v is not None}
        name = options.congestion_control or self.settings.congestion_control
        algorithms = self._algorithm_settings()
        return connection_setup(
            self.host, info, options, features, name, algorithms, hook=self._setup_hook, shared=self.shared
        )

    # ------------------------------------------------------------------ connections

    def _new_connection(
        self,
        local: tuple[bytes, int],
        remote: tuple[bytes, int],
        options: TcpOptions,
        *,
        passive: bool,
        now: float,
        overrides: dict[str, Any] | None = None,
        iss: int | None = None,
    ) -> TcpConnection:
        info = ConnInfo(
            local=local, remote=remote, mss=min(options.mss or self.local_mss, self.local_mss), number=self.next_number
        )
        self.next_number += self.number_step
        setup = self._setup(info, options, overrides or {})
        conn = TcpConnection(
            setup,
            iss=self.isn(local, remote, now) if iss is None else iss,
            now=now,
            passive=passive,
            local_mss=min(options.mss or self.local_mss, self.local_mss),
        )
        conn.listener_ref = None
        conn.fast_path = self.settings.fast_path
        conn.tso_max = self.tso_max
        conn.rcvbuf.pool = self.ooo_pool
        self.connections[(remote[0], remote[1], local[1])] = conn
        if self.on_new_connection is not None:
            self.on_new_connection(conn)
        return conn

    def connect(
        self,
        remote_addr: bytes,
        remote_port: int,
        *,
        now: float,
        local_port: int | None = None,
        options: TcpOptions | None = None,
    ) -> TcpConnection:
        """Active OPEN (RFC 9293 §3.10.1). The SYN leaves at the next flush.

        :raises ValueError: for a broadcast/multicast/invalid remote (MUST-46) or bad port.
        :raises InvalidStateError: if the 4-tuple is in use or no port is free.
        """
        _check_remote(remote_addr, remote_port)
        if self.net.is_broadcast(remote_addr):
            # RFC 9293 §3.9.1.1, MUST-46: OPEN to a broadcast address is an error.
            raise ValueError(
                f"cannot connect to {ipaddress.IPv4Address(remote_addr)} (MUST-46: our subnet's broadcast address)"
            )
        if len(self.connections) >= self.settings.max_connections:
            raise InvalidStateError("too many connections")
        if local_port is None:
            local_port = self._ephemeral_port(remote_addr, remote_port)
        elif (remote_addr, remote_port, local_port) in self.connections:
            raise InvalidStateError("that 4-tuple is already in use")
        opts = options or self.settings.default_options()
        overrides = self.resolve_features(opts)
        conn = self._new_connection(
            (self.address, local_port), (remote_addr, remote_port), opts, passive=False, now=now, overrides=overrides
        )
        conn.open_active(now)
        self._touch(conn)
        return conn

    def listen(
        self,
        port: int,
        *,
        backlog: int = 128,
        options: TcpOptions | None = None,
        on_accept: Callable[[TcpConnection], None] | None = None,
        syn_backlog: int | None = None,
    ) -> Listener:
        """Passive OPEN on *port* (RFC 9293 §3.10.1).

        :raises InvalidStateError: if something already listens on *port*.
        """
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1-65535, got {port}")
        if backlog < 1:
            raise ValueError(f"backlog must be at least 1, got {backlog}")
        if syn_backlog is not None and syn_backlog < 1:
            raise ValueError(f"syn_backlog must be at least 1, got {syn_backlog}")
        if port in self.listeners:
            raise InvalidStateError(f"port {port} is already listening")
        opts = options or self.settings.default_options()
        listener = Listener(port, backlog, opts, on_accept, syn_backlog or self.settings.syn_backlog)
        listener.features = self.resolve_features(opts)
        self.listeners[port] = listener
        return listener

    def unlisten(self, listener: Listener) -> None:
        listener.closed = True
        if self.listeners.get(listener.port) is listener:
            del self.listeners[listener.port]

    def _ephemeral_port(self, remote_addr: bytes, remote_port: int) -> int:
        """RFC 6056 §3.3.1 (Algorithm 1): a random start, then the next free port."""
        low = self.settings.ephemeral_low  # a worker's slice under `up --workers`
        span = self.settings.ephemeral_high - low + 1
        start = self._ports.randrange(span)
        for i in range(span):
            port = low + (start + i) % span
            if (remote_addr, remote_port, port) not in self.connections and port not in self.listeners:
                return port
        raise InvalidStateError("no free ephemeral port")

    def isn(self, local: tuple[bytes, int], remote: tuple[bytes, int], now: float) -> int:
        """RFC 6528 §3 (MUST-8, SHLD-1): ISN = M + F(localip, localport, remoteip, remoteport,
        secretkey), M a 4-microsecond timer, F a keyed hash (BLAKE2s here)."""
        if self.settings.initial_sequence is not None:
            return self.settings.initial_sequence
        material = local[0] + local[1].to_bytes(2, "big") + remote[0] + remote[1].to_bytes(2, "big")
        f = int.from_bytes(hashlib.blake2s(material, key=self._isn_key, digest_size=4).digest(), "big")
        m = int(now * 250_000)
        return (m + f) & MASK

    def _remove(self, conn: TcpConnection, now: float) -> None:
        if conn.probe is not None:
            conn.probe.on_delete(conn, now)  # the probe feature's close record
        if self._tx is not None:
            self._tx.forget(conn)
        key = (conn.remote[0], conn.remote[1], conn.local[1])
        if self.connections.get(key) is conn:
            del self.connections[key]
        self._timer_of.pop(conn, None)
        conn.rcvbuf.release_ooo()  # its out-of-order data leaves the stack-wide budget
        self._update_listener(conn)
        listener: Listener | None = getattr(conn, "listener_ref", None)
        if listener is not None:
            listener.embryonic.discard(conn)


def _check_remote(addr: bytes, port: int) -> None:
    if len(addr) != 4:
        raise ValueError("remote address must be 4 bytes")
    ip = ipaddress.IPv4Address(addr)
    if ip.is_multicast or ip.is_unspecified or addr == b"\xff\xff\xff\xff" or ip.is_reserved:
        raise ValueError(f"cannot connect to {ip} (MUST-46: broadcast/multicast/invalid)")
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1-65535, got {port}")


__all__ = ["Listener", "TcpLayer", "TcpSettings"]
