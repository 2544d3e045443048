"""Header prediction: the receive fast path of one established connection (Van Jacobson's
header prediction; Linux's ``tcp_rcv_established``; RFC 9293 §3.10.7.4 in the two cases that
dominate a bulk transfer, as RFC 7414 §3 points out).

Two kinds of segment are predicted:

- **in-order data** with nothing else to do: flags ACK (PSH allowed), ``SEG.SEQ = RCV.NXT``,
  ``SEG.ACK = SND.UNA`` (nothing of ours acknowledged), the payload within the window, no
  out-of-order data held, no early FIN waiting;
- **a pure ACK that only advances SND.UNA**: flags ACK (PSH allowed), no payload,
  ``SEG.SEQ = RCV.NXT``, ``SND.UNA < SEG.ACK =< SND.NXT`` (RFC 9293's SND.NXT: our
  ``snd_max``), and no loss recovery running.

Both need the connection in ESTABLISHED, and a header of a predicted layout: 20 bytes, or 32
with exactly ``NOP NOP TS`` (RFC 7323 Appendix A's layout, what Linux and we send). Anything
else (SACK blocks, a window probe, a duplicate ACK, RST/SYN/FIN/URG/ECE/CWR, reserved bits) goes
the slow path (:meth:`TcpConnection.segment_received`), unchanged.

What the fast path skips is the general parse (the options loop) and the branches of the
general dispatch that cannot apply; every check of the slow path still happens, in the same
order, through the same functions:

- the checksum (MUST-3), unless the link vouches for it (``pkt.csum_ok``), before any state
  changes; a bad one is the same counted drop;
- every extension's ``check`` (PAWS, RFC 7323 §5.3, and the option-required rule of §3.2, in
  the timestamps plugin; the SACK plugin's D-SACK bookkeeping) and ``accepted`` (TS.Recent,
  §4.3; RTTM, §4.1; ECN) hook, with the same :class:`~layers.tcp.wire.TcpRepr` the slow path
  would have parsed: a plugin that needs the per-segment callback gets it on both paths (the
  built-in timestamps and SACK objects, layers/tcp/builtin_hooks.py, are called natively, and
  SACK's check on a predicted segment is :meth:`~layers.tcp.builtin_hooks.Sack.in_order`);
- the window/acceptability test of §3.10.7.4 (Table 6) holds by the prediction (offset 0,
  the payload within the window);
- ACK processing through :func:`layers.tcp.recovery.ack_advanced` and
  :func:`~layers.tcp.recovery.update_window` (the fifth step), the text through
  :func:`layers.tcp.receiver.receive_text` (receive buffer and the ACK policy: delayed ACKs and
  their decision logs), the keep-alive policy's ``on_receive``, and the probe's ``on_segment``
  (plugins/probe.py) after the segment, as ``segment_received`` calls it.

The fast and slow paths are proven equal by differential tests (tests/layers/tcp/
test_fast_path.py): random segment sequences through a stack with the fast path on and one
with it off give the same frames out, events, counters and connection state.

Plain typed Python: it is meant to be compiled with mypyc as well as run interpreted.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final

from framework.checksum import internet_checksum
from layers.tcp import receiver, recovery
from layers.tcp.builtin_hooks import Sack, Timestamps
from layers.tcp.seq import HALF, MASK
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, PSH, TcpRepr

if TYPE_CHECKING:
    from layers.tcp.connection import TcpConnection

# RFC 9293 §3.1 header, and the same followed by RFC 7323 Appendix A's timestamp layout
# (NOP, NOP, kind 8, length 10, TSval, TSecr) in one unpack.
_PLAIN = struct.Struct("!HHIIBBHHH")
_WITH_TS = struct.Struct("!HHIIBBHHHIII")
_TS_PREFIX: Final = 0x0101080A
_OFF_PLAIN: Final = 5 << 4  # data offset 5 words, reserved bits clear
_OFF_TS: Final = 8 << 4  # data offset 8 words

#: What :func:`receive` did with a segment.
SLOW: Final = 0  # not predicted: nothing was done, the slow path takes it
DATA: Final = 1  # in-order data, processed
PURE_ACK: Final = 2  # a pure ACK advancing SND.UNA, processed
BAD_CHECKSUM: Final = 3  # predicted, but the checksum is wrong: drop it (nothing was done)

_ESTABLISHED = TcpState.ESTABLISHED


def receive(conn: TcpConnection, buf: memoryview, pseudo: int | None, ecn: int, now: float) -> int:
    """Process the segment in *buf* (at least 20 bytes) on *conn* if it is predicted; return
    :data:`SLOW` (untouched) otherwise. *pseudo* is the pseudo-header sum without the length
    (``None``: the checksum is not to be verified); *ecn* the IP ECN field (RFC 3168 §5)."""
    if conn.state is not _ESTABLISHED:
        return SLOW
    n = len(buf)
    off = buf[12]
    if off == _OFF_TS and n >= 32:
        sport, dport, seq, ack, _, flags, window, _c, urgent, prefix, tsval, tsecr = _WITH_TS.unpack_from(buf)
        if prefix != _TS_PREFIX:
            return SLOW
        hlen = 32
    elif off == _OFF_PLAIN:
        sport, dport, seq, ack, _, flags, window, _c, urgent = _PLAIN.unpack_from(buf)
        hlen = 20
        tsval = -1
        tsecr = 0
    else:
        return SLOW
    # The prediction (RFC 9293 §3.10.7.4; Linux's pred_flags): only ACK (and PSH) set, the
    # segment starts at RCV.NXT.
    if flags & ~PSH != ACK or seq != conn.rcv_nxt:
        return SLOW
    plen = n - hlen
    una = conn.snd_una
    wnd = 0
    acked = 0
    if plen:
        if ack != una:
            return SLOW
        # Table 6: offset 0 and the whole text inside RCV.WND, so it is acceptable untrimmed.
        wnd = ((conn.rcv_adv - seq + HALF) & MASK) - HALF  # seq_diff, inline
        if plen > wnd or conn.rcvbuf.has_gaps or conn._peer_fin_offset is not None or conn.user_closed:
            return SLOW
        kind = DATA
    else:
        acked = ((ack - una + HALF) & MASK) - HALF  # seq_diff, inline
        # §3.10.7.4 "Fifth": SND.UNA < SEG.ACK =< SND.NXT, outside loss recovery.
        if acked <= 0 or acked > ((conn.snd_max - una + HALF) & MASK) - HALF or conn.in_recovery:
            return SLOW
        kind = PURE_ACK
    # RFC 9293 §3.1, MUST-3: verify the checksum before anything changes.
    if pseudo is not None and internet_checksum(buf, pseudo + n) != 0:
        return BAD_CHECKSUM
    seg = TcpRepr(sport, dport, seq, ack, flags, window, buf[hlen:], urgent)
    if tsval >= 0:
        seg.ts = (tsval, tsecr)
    seg.ip_ecn = ecn
    try:
        conn.segs_in += 1
        if conn.keepalive is not None:
            conn.keepalive.on_receive(now)  # MUST-29: anything from the peer shows it is alive
        # The built-in extensions (layers/tcp/builtin_hooks.py) are called natively; any other
        # extension through its hook, in the same order.
        for ext in conn._check_ext:
            if isinstance(ext, Timestamps):
                if not ext.check(conn, seg, now):  # RFC 7323 §3.2, §5.3 PAWS
                    return kind
            elif isinstance(ext, Sack):
                if plen:  # predicted: new data at RCV.NXT, nothing held out of order (RFC 2018 §4)
                    nxt = conn.rcvbuf.nxt
                    ext.in_order(nxt, nxt + plen)
            elif not ext.check(conn, seg, now):
                return kind
        for ext in conn._accept_ext:
            if isinstance(ext, Timestamps):
                ext.accepted(conn, seg, now)  # RFC 7323 §4.3 TS.Recent, §4.1 RTTM
            else:
                ext.accepted(conn, seg, now)  # e.g. RFC 3168 ECN
        if kind == PURE_ACK:
            # §3.10.7.4 "Fifth": SND.UNA moves, the send buffer frees, RTT, cwnd, timers.
            recovery.ack_advanced(conn, ack, acked, now)
            ld = conn.loss_detector
            if ld is not None:
                ld.on_progress(conn, now)  # RFC 8985 §7.2
                sb = conn.scoreboard
                if sb is not None:
                    ld.on_ack_received(conn, sb.una, [], now)  # RFC 8985 §6.2
            recovery.update_window(conn, seq, ack, window << conn.snd_wscale)
        else:
            recovery.update_window(conn, seq, ack, window << conn.snd_wscale)
            # §3.10.7.4 "Seventh": the text into the receive buffer; the ACK policy schedules the ACK.
            if not receiver.receive_text(conn, seg, 0, wnd, now):
                conn.drop_reason = conn.rcvbuf.refusal
                return kind
        if conn._peer_fin_offset is not None:
            receiver.check_peer_fin(conn, now)  # "Eighth"
        return kind
    finally:
        if conn.probe is not None:  # the probe feature (plugins/probe.py): after every segment processed
            conn.probe.on_segment(conn, seg, now)
