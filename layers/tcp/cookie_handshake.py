"""SYN cookies on a listener (RFC 4987 §3.6), the TCP layer's side: answering a SYN with a cookie
SYN-ACK that keeps no state, and completing the handshake from the ACK that returns it. The
cookie itself (its MAC, its time counter, the MSS table) and the codecs that carry negotiated
options through it are layers/tcp/syncookies.py; the listener's choice between a SYN queue
entry and a cookie is :meth:`layers.tcp.layer.TcpLayer._listen_segment`, which calls these.

Moved out of layers/tcp/handler.py unchanged (functions taking the layer instead of methods),
to keep that module under the house limit of ~800 lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework.context import Context
from framework.netlayer import NetHeader
from layers.tcp import extensions
from layers.tcp.features import merge
from layers.tcp.seq import MASK, seq_add
from layers.tcp.syncookies import (
    MSS_TABLE,
    OPTION_BITS,
    VALID_FOR,
    ListenerCodecs,
    SynCookieCodec,
    mss_index,
    plan,
)
from layers.tcp.wire import ACK, SYN, TcpRepr

if TYPE_CHECKING:
    from layers.tcp.layer import Listener, TcpLayer

__all__ = ["cookie_ack", "listener_codecs", "material", "send_cookie"]


def listener_codecs(layer: TcpLayer, listener: Listener) -> ListenerCodecs:
    """The cookie codecs of the features on *listener* (worked out once per listener)."""
    if listener.codecs is None:
        features = merge(layer.settings.resolved_features, listener.features)
        found: list[tuple[str, SynCookieCodec, Any]] = []
        if layer.registry is not None:
            for name, settings in features.items():
                feature = extensions.features(layer.registry).get(name)
                if feature is not None and isinstance(feature.syncookie, SynCookieCodec):
                    found.append((name, feature.syncookie, settings))
        listener.codecs = plan(found)
        if listener.codecs.skipped:
            layer._log.warning(
                "tcp.syncookie_no_room", port=listener.port, features=listener.codecs.skipped, bits=OPTION_BITS
            )
    return listener.codecs


def material(ip: NetHeader, seg: TcpRepr) -> bytes:
    """What a cookie is bound to: the connection's addresses and ports (RFC 4987 §3.6)."""
    return ip.dst + seg.dst_port.to_bytes(2, "big") + ip.src + seg.src_port.to_bytes(2, "big")


def send_cookie(layer: TcpLayer, listener: Listener, ip: NetHeader, seg: TcpRepr, ctx: Context) -> None:
    """RFC 4987 §3.6: answer a SYN with a SYN-ACK whose ISN encodes what the SYN said; keep
    nothing. The SYN-ACK is what the connection would have sent (RFC 9293 §3.10.7.2)."""
    now = ctx.now
    if now - listener.cookie_sent_at >= VALID_FOR and listener.options.syncookies == "auto":
        layer._log.warning("tcp.syn_flood", port=listener.port, action="sending SYN cookies", rfc="RFC 4987 §3.6")
    listener.cookie_sent_at = now
    opts = listener.options
    iss = layer._cookies.make(material(ip, seg), seg.seq, mss_index(seg.mss), now)
    # RFC 7323 §2.2: the window field of a SYN-ACK is never scaled.
    synack = TcpRepr(seg.dst_port, seg.src_port, iss, seq_add(seg.seq, 1), SYN | ACK, min(opts.recv_buffer, 0xFFFF))
    synack.mss = min(opts.mss or layer.local_mss, layer.local_mss)  # MUST-14
    codecs = listener_codecs(layer, listener)
    if codecs.carrier is not None and codecs.carrier[0].offered(seg):
        bits = 0
        for codec, settings, shift in codecs.options:
            bits |= (codec.encode(seg, synack, settings, opts) & ((1 << codec.bits) - 1)) << shift
        codecs.carrier[0].carry(seg, synack, bits, iss, now)
    ctx.stats.count("tcp.syncookies_sent")
    layer._transmit(ip.dst, ip.src, synack, ctx)


def cookie_ack(layer: TcpLayer, listener: Listener, ip: NetHeader, seg: TcpRepr, ctx: Context) -> bool:
    """An ACK that may complete a cookie handshake (RFC 4987 §3.6). ``False``: not a valid
    cookie (counted; the caller answers it as any stray ACK)."""
    now = ctx.now
    peer_isn = (seg.seq - 1) & MASK
    iss = (seg.ack - 1) & MASK
    index = layer._cookies.check(material(ip, seg), peer_isn, iss, now)
    if index is None:
        ctx.stats.count("tcp.syncookies_rejected")
        return False
    syn = TcpRepr(seg.src_port, seg.dst_port, peer_isn, 0, SYN, 0, mss=MSS_TABLE[index])
    codecs = listener_codecs(layer, listener)
    if codecs.carrier is not None:
        carrier = codecs.carrier[0]
        bits = carrier.recover(seg)
        if bits is not None:  # the SYN-ACK carried option bits: restore the options
            carrier.restore(seg, syn)
            for codec, settings, shift in codecs.options:
                if not codec.decode((bits >> shift) & ((1 << codec.bits) - 1), syn, settings):
                    ctx.stats.count("tcp.syncookies_rejected")
                    return False
    if listener.accept_queue_full or len(layer.connections) >= layer.settings.max_connections:
        ctx.stats.drop("tcp", "accept_queue_full" if listener.accept_queue_full else "too_many_connections")
        return True  # as Linux: the ACK is dropped, the peer's retransmission may succeed later
    conn = layer._passive_connection(listener, ip.src, seg, ctx.now, ctx.stats, iss)
    if conn is None:
        return True
    ctx.stats.count("tcp.syncookies_accepted")
    # The echoed TSval gives the first RTT sample, at most 2**OPTION_BITS ms too long (as
    # Linux takes it): conservative for the RTO.
    conn.open_passive(syn, now, synack_sent=True)
    conn.segment_received(seg, now)
    layer._settle(conn)
    return True
